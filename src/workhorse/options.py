"""Handler options: what can be set at registration, validated with clear errors."""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, TypedDict

from croniter import croniter

from workhorse.backoff import BackoffFn, exponential
from workhorse.errors import ConfigurationError
from workhorse.job import DEFAULT_QUEUE
from workhorse.types import Adapter


class HandlerOptionsDict(TypedDict, total=False):
    """Keyword options of ``@app.handler(name, **options)``."""

    queue: str
    retries: int
    timeout: float | None
    priority: int
    max_concurrency: int | None
    rate_limit: str | None
    backoff: BackoffFn
    cron: str | None
    every: float | None
    unique: bool
    skip_dead: bool
    args_type: type[Any] | None
    adapters: list[Adapter] | tuple[Adapter, ...]


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` runs per ``per`` seconds, with bursts up to ``burst``."""

    rate: float
    per: float
    burst: int

    @property
    def per_second(self) -> float:
        """Sustained runs per second."""
        return self.rate / self.per


@dataclasses.dataclass(frozen=True)
class HandlerOptions:
    """The validated options of one handler."""

    queue: str = DEFAULT_QUEUE
    #: Attempts after the first before the job is dead.
    retries: int = 3
    timeout: float | None = None
    priority: int = 0
    max_concurrency: int | None = None
    rate_limit: RateLimit | None = None
    backoff: BackoffFn = dataclasses.field(default_factory=exponential)
    cron: str | None = None
    every: float | None = None
    unique: bool = False
    #: Drop the job instead of keeping it as dead after its last failure (gocraft's SkipDead).
    skip_dead: bool = False
    args_type: type[Any] | None = None
    adapters: tuple[Adapter, ...] = ()


_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


def parse_rate_limit(text: str, burst: int | None = None) -> RateLimit:
    """Parse ``"20/s"``, ``"100/m"``, ``"5/10s"`` or ``"1000/hour"``."""
    match = _RATE.match(text.lower())
    if not match or match.group(3) not in _UNITS:
        raise ConfigurationError(
            f"rate_limit {text!r} is not of the form 'N/unit' (e.g. '20/s', '100/m', '5/10s')"
        )
    rate = float(match.group(1))
    per = float(match.group(2) or 1) * _UNITS[match.group(3)]
    if rate <= 0 or per <= 0:
        raise ConfigurationError(f"rate_limit {text!r} must allow a positive rate")
    return RateLimit(rate=rate, per=per, burst=burst or max(1, int(rate)))


def validate_cron(expression: str) -> str:
    """Return ``expression`` if it is a valid 6-field cron (seconds first), else raise."""
    fields = expression.split()
    if len(fields) != 6 or not croniter.is_valid(expression, second_at_beginning=True):
        raise ConfigurationError(
            f"cron {expression!r} is not a valid 6-field cron expression "
            "(sec min hour day-of-month month day-of-week, e.g. '0 */5 * * * *')"
        )
    return expression


def build_options(handler_name: str, options: dict[str, Any]) -> HandlerOptions:
    """Validate raw keyword options into HandlerOptions; raise ConfigurationError if wrong."""
    known = {f.name for f in dataclasses.fields(HandlerOptions)}
    for key in options:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigurationError(
                f"unknown option {key!r} for handler {handler_name!r}{suggestion}; "
                f"valid options: {', '.join(sorted(known))}"
            )
    values = dict(options)

    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigurationError(f"handler {handler_name!r}: {message}")

    queue = values.get("queue", DEFAULT_QUEUE)
    check(isinstance(queue, str) and bool(queue), "queue must be a non-empty string")
    retries = values.get("retries", 3)
    check(_is_int(retries) and retries >= 0, f"retries must be an int >= 0, not {retries!r}")
    timeout = values.get("timeout")
    check(timeout is None or (_is_number(timeout) and timeout > 0),
          f"timeout must be a positive number of seconds, not {timeout!r}")
    check(_is_int(values.get("priority", 0)), "priority must be an int")
    limit = values.get("max_concurrency")
    check(limit is None or (_is_int(limit) and limit >= 1),
          f"max_concurrency must be an int >= 1, not {limit!r}")
    backoff = values.get("backoff")
    check(backoff is None or callable(backoff), "backoff must be callable(attempt) -> seconds")
    every = values.get("every")
    check(every is None or (_is_number(every) and every > 0),
          f"every must be a positive number of seconds, not {every!r}")
    adapters = tuple(values.get("adapters", ()))
    check(all(callable(a) for a in adapters), "adapters must be callables")

    if values.get("rate_limit") is not None:
        rate_text = values["rate_limit"]
        check(isinstance(rate_text, str), "rate_limit must be a string like '20/s'")
        values["rate_limit"] = parse_rate_limit(rate_text)
    if values.get("cron") is not None:
        check(isinstance(values["cron"], str), "cron must be a string")
        values["cron"] = validate_cron(values["cron"])
    if backoff is None:
        values.pop("backoff", None)
    values["adapters"] = adapters
    return HandlerOptions(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
