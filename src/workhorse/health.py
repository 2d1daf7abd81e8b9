"""The worker's HTTP port: ``/healthz`` (its event loop answers), ``/readyz`` (its store
answers), and any route registered with ``HealthServer.route`` (``/metrics`` goes here).

The server is the stdlib's ``http.server`` in a daemon thread. A worker needs a handful of
plain GET endpoints, not a web framework; and a thread of its own is the point: a handler
that blocks the worker's event loop must not also block the probe that reports it.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from workhorse.loop_calls import call_in_loop
from workhorse.middleware.health import HealthCheck, Response, text

if TYPE_CHECKING:
    from workhorse.worker import Worker

log = logging.getLogger("workhorse.health")

#: A route: called in the server's thread for each GET of its path.
Route = Callable[[], Response]

#: Defaults: how long the loop and the store get to answer a probe, in seconds.
LOOP_TIMEOUT = 1.0
STORE_TIMEOUT = 2.0


class HealthServer:
    """A small HTTP server in a daemon thread, serving GET routes.

        server = HealthServer(port=9100)
        server.route("/metrics", lambda: (200, "text/plain", render()))
        server.start()           # server.port is the bound port (useful with port=0)
        ...
        server.stop()
    """

    def __init__(self, port: int = 0, host: str = "0.0.0.0") -> None:
        self.host = host
        self._requested_port = port
        self._routes: dict[str, Route] = {}
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, path: str, handler: Route) -> None:
        """Serve ``handler()`` for GET ``path`` (replacing a route of that path).

        The handler runs in the server's threads, never on the worker's event loop.
        """
        if not path.startswith("/"):
            raise ValueError(f"a route's path starts with '/', not {path!r}")
        self._routes[path] = handler

    @property
    def paths(self) -> list[str]:
        """The routed paths."""
        return sorted(self._routes)

    @property
    def port(self) -> int:
        """The port the server listens on (the requested one until started)."""
        if self._httpd is None:
            return self._requested_port
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Bind the port and serve from a daemon thread; returns at once."""
        routes = self._routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, kind, body = text(404, "not found\n")
                else:
                    try:
                        status, kind, body = route()
                    except Exception:
                        log.exception("health route %s failed", self.path)
                        status, kind, body = text(500, "route failed\n")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # Probes come every few seconds: access lines would drown the job lines.
                pass

        httpd = http.server.ThreadingHTTPServer((self.host, self._requested_port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="workhorse-health",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def liveness(loop: asyncio.AbstractEventLoop, timeout: float = LOOP_TIMEOUT) -> Route:
    """A route answering 200 while ``loop`` runs a callback within ``timeout`` seconds,
    503 when it does not (blocked by a handler, or stopped)."""

    def check() -> Response:
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop is closed
            return text(503, "event loop closed\n")
        if answered.wait(timeout):
            return text(200, "ok\n")
        return text(503, f"event loop did not answer within {timeout:g}s\n")

    return check


def readiness(loop: asyncio.AbstractEventLoop, probe: Callable[[], Awaitable[object]],
              timeout: float = STORE_TIMEOUT) -> Route:
    """A route answering 200 when ``probe()``, run on ``loop``, returns within
    ``timeout`` seconds, 503 when it raises or takes longer."""

    def check() -> Response:
        try:
            call_in_loop(loop, probe, timeout, LOOP_TIMEOUT)
        except TimeoutError:
            return text(503, f"store did not answer within {timeout:g}s\n")
        except RuntimeError as exc:
            if loop.is_closed():
                return text(503, "event loop closed\n")
            return text(503, f"store unavailable: RuntimeError: {exc}\n")
        except Exception as exc:
            return text(503, f"store unavailable: {type(exc).__name__}: {exc}\n")
        return text(200, "ok\n")

    return check


def serve_worker(worker: Worker, port: int, host: str = "0.0.0.0", *,
                 loop: asyncio.AbstractEventLoop | None = None,
                 metrics: bool = False) -> HealthServer:
    """Start a HealthServer for ``worker`` (call it from the worker's event loop):
    ``/healthz``, ``/readyz`` (``backend.now()`` answers), the path of each
    ``middleware.health`` check among the app's adapters, and with ``metrics`` ``/metrics``
    (the app's Prometheus metrics) when prometheus-client is installed.
    """
    loop = loop or asyncio.get_running_loop()
    app = worker.app

    async def store_answers() -> object:
        return await (await app.backend()).now()

    server = HealthServer(port=port, host=host)
    server.route("/healthz", liveness(loop))
    server.route("/readyz", readiness(loop, store_answers))
    for check in health_checks(worker):
        server.route(check.path, check.route)
    if metrics:
        try:
            from workhorse.telemetry.prometheus import prometheus_metrics

            server.route("/metrics", prometheus_metrics(app, loop=loop).route)
        except ImportError as exc:
            log.warning("no /metrics: %s", exc)
    server.start()
    return server


def health_checks(worker: Worker) -> list[HealthCheck]:
    """The checks of the ``middleware.health`` adapters on the app and its handlers."""
    found: dict[int, HealthCheck] = {}
    adapters = [*worker.app.adapters]
    for registration in worker.app.registry:
        adapters.extend(registration.options.adapters)
    for adapter in adapters:
        check = getattr(adapter, "health_check", None)
        if isinstance(check, HealthCheck):
            found[id(check)] = check
    return list(found.values())
