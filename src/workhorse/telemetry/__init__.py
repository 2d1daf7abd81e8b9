"""Telemetry: metrics (OpenTelemetry meters, Prometheus) and tracing (OpenTelemetry spans).

``app.instrument(meter_provider=..., tracer_provider=...)`` calls ``install``. The modules
here use only the OpenTelemetry *API* (and prometheus-client for ``/metrics``); exporters
and SDK set-up stay the application's choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workhorse.app import App


def install(app: App, *, meter_provider: Any = None, tracer_provider: Any = None) -> None:
    """Instrument ``app``: metrics through ``meter_provider``, traces through
    ``tracer_provider`` (each None: that half is left as it was)."""
    if meter_provider is not None:
        from workhorse.telemetry.metrics import install_metrics

        install_metrics(app, meter_provider)
    if tracer_provider is not None:
        from workhorse.telemetry.tracing import install_tracing

        install_tracing(app, tracer_provider)
