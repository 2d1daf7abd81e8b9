"""Authentication: an ``auth(metadata, method)`` hook run as a server interceptor.

The hook gets the call's metadata (text values only, keys lower-case) and the full method
name (``/workhorse.v1.Jobs/Enqueue``). Only a return of True lets the call through, so a
hook that forgets to return refuses rather than admits; anything else returned, or raising
``Unauthenticated``, ends it with UNAUTHENTICATED; raising ``PermissionDenied`` with
PERMISSION_DENIED. The hook may be a coroutine function. Health
checks are exempt, so load balancers can probe without a token; reflection is not.
Neither metadata values nor tokens are ever logged.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from workhorse.errors import WorkhorseError
from workhorse.tokens import bearer_matches

log = logging.getLogger("workhorse.grpc")

#: ``auth(metadata, method)``: True allows; anything else, or ``Unauthenticated``, refuses.
AuthHook = Callable[[Mapping[str, str], str], "bool | Awaitable[bool]"]

#: Method prefixes the hook is not asked about.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class Unauthenticated(WorkhorseError):
    """Raise from an auth hook: the caller did not prove who it is (UNAUTHENTICATED)."""


class PermissionDenied(WorkhorseError):
    """Raise from an auth hook: the caller may not make this call (PERMISSION_DENIED)."""


def bearer_token(token: str) -> AuthHook:
    """An auth hook accepting only ``authorization: Bearer <token>`` (compared in constant
    time), as the dashboard's token does."""
    if not token:
        raise ValueError("the token must not be empty")

    def check(metadata: Mapping[str, str], method: str) -> bool:
        return bearer_matches(metadata.get("authorization", ""), token)

    return check


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs an ``AuthHook`` before every call but the exempt ones."""

    def __init__(self, auth: AuthHook, *, exempt: tuple[str, ...] = EXEMPT_PREFIXES) -> None:
        self.auth = auth
        self.exempt = exempt

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        method: str = details.method
        handler = await continuation(details)
        if handler is None or method.startswith(self.exempt):
            return handler
        metadata = {key.lower(): value for key, value in (details.invocation_metadata or ())
                    if isinstance(value, str)}
        refusal = await self._refusal(metadata, method)
        if refusal is None:
            return handler
        log.info("refused a call to %s: %s", method, refusal[0].name)
        return _refusing(handler, *refusal)

    async def _refusal(self, metadata: Mapping[str, str], method: str
                       ) -> tuple[Any, str] | None:
        try:
            verdict = self.auth(metadata, method)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Unauthenticated as exc:
            return grpc.StatusCode.UNAUTHENTICATED, str(exc) or "unauthenticated"
        except PermissionDenied as exc:
            return grpc.StatusCode.PERMISSION_DENIED, str(exc) or "permission denied"
        except Exception:
            # Refuse rather than let a broken hook open the door; the hook's own error
            # (which might quote a token) is not logged, only that it failed.
            log.error("the gRPC auth hook raised on %s; the call was refused", method)
            return grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"
        if verdict is not True:
            return grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"
        return None


def _refusing(handler: Any, code: Any, message: str) -> Any:
    """A handler of the same shape as ``handler`` that ends the call with ``code``."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    serializers = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **serializers)
    return grpc.unary_unary_rpc_method_handler(unary, **serializers)
