"""``Server``: the job service with health checking, reflection, auth and TLS, on grpc.aio.

    async with wh.grpc.Server(app, port=50051, auth=wh.grpc.bearer_token("s3cret")) as server:
        await server.wait()
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from workhorse.app import App
from workhorse.grpc.auth import AuthHook, AuthInterceptor
from workhorse.grpc.servicer import SERVICE_NAME, JobsServicer, add_jobs_service

log = logging.getLogger("workhorse.grpc")


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """The server's certificate chain and key (PEM); with ``client_ca``, mutual TLS: only
    clients with a certificate signed by it may connect."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path,
                   client_ca: str | Path | None = None) -> ServerTLS:
        """Read the PEM files."""
        return cls(Path(cert).read_bytes(), Path(key).read_bytes(),
                   Path(client_ca).read_bytes() if client_ca is not None else None)

    def credentials(self) -> Any:
        """The grpc server credentials."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None)


class Server:
    """A ``grpc.aio`` server of the job service over ``app``, with the standard health
    checking (``grpc.health.v1``) and reflection services.

    ``port=0`` picks a free port (read ``server.port`` after ``start``). ``auth`` is an
    ``AuthHook`` (see ``wh.grpc.bearer_token``); ``tls`` a ``ServerTLS``. ``types`` adds
    protobuf message types by job name (see ``JobsServicer``).
    """

    def __init__(self, app: App, *, port: int = 50051, host: str = "127.0.0.1",
                 auth: AuthHook | None = None, tls: ServerTLS | None = None,
                 types: Mapping[str, type[Message]] | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.auth = auth
        self.tls = tls
        self.types = types
        self.servicer: JobsServicer | None = None
        self._server: Any = None
        self._health: Any = None

    async def start(self) -> None:
        """Bind and start serving; returns at once."""
        interceptors = [AuthInterceptor(self.auth)] if self.auth is not None else []
        # grpc sets SO_REUSEPORT by default: a second server on a busy port would bind it
        # too, and the kernel would share the calls between the two (and their stores).
        server = grpc.aio.server(interceptors=interceptors,
                                 options=[("grpc.so_reuseport", 0)])
        self.servicer = add_jobs_service(server, self.app, types=self.types)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"{self.host}:{self.port}"
        try:
            if self.tls is not None:
                bound = server.add_secure_port(address, self.tls.credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises this on a failed bind, not OSError
            raise OSError(f"cannot listen on {address}") from exc
        if not bound:
            raise OSError(f"cannot listen on {address}")
        self.port = bound
        await server.start()
        self._server = server
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", SERVICE_NAME):
            await self._health.set(name, serving)
        mode = "mutual TLS" if self.tls and self.tls.client_ca else "TLS" if self.tls else \
            "plaintext"
        log.info("gRPC job service on %s:%d (%s%s)", self.host, self.port, mode,
                 ", auth required" if self.auth else "")

    async def wait(self) -> None:
        """Serve until ``stop`` (or the task is cancelled)."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop serving: new calls are refused, open result streams end at once with
        UNAVAILABLE, other calls in flight get ``grace`` seconds. Jobs are not touched."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.servicer is not None:
            await self.servicer.end_streams()
        await server.stop(grace)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
