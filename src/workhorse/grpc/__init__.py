"""The gRPC surface: the ``workhorse.v1.Jobs`` service, its server, client and typed payloads.

Needs the ``[grpc]`` extra (``pip install 'workhorse[grpc]'``). ``import workhorse`` does
not import this package, and this package imports grpcio only when one of its names is
first used (so ``workhorse --help`` works without the extra). See docs/grpc.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workhorse.grpc.auth import AuthHook as AuthHook
    from workhorse.grpc.auth import AuthInterceptor as AuthInterceptor
    from workhorse.grpc.auth import PermissionDenied as PermissionDenied
    from workhorse.grpc.auth import Unauthenticated as Unauthenticated
    from workhorse.grpc.auth import bearer_token as bearer_token
    from workhorse.grpc.client import Client as Client
    from workhorse.grpc.client import job_spec as job_spec
    from workhorse.grpc.payloads import PROTO_TYPE_HEADER as PROTO_TYPE_HEADER
    from workhorse.grpc.payloads import ProtoArgs as ProtoArgs
    from workhorse.grpc.payloads import message_types as message_types
    from workhorse.grpc.payloads import proto_args as proto_args
    from workhorse.grpc.payloads import proto_handler as proto_handler
    from workhorse.grpc.server import Server as Server
    from workhorse.grpc.server import ServerTLS as ServerTLS
    from workhorse.grpc.servicer import JobsServicer as JobsServicer
    from workhorse.grpc.servicer import add_jobs_service as add_jobs_service

#: Where each public name lives.
_EXPORTS = {
    "AuthHook": "auth", "AuthInterceptor": "auth", "PermissionDenied": "auth",
    "Unauthenticated": "auth", "bearer_token": "auth", "Client": "client", "job_spec": "client",
    "PROTO_TYPE_HEADER": "payloads", "ProtoArgs": "payloads", "message_types": "payloads",
    "proto_args": "payloads", "proto_handler": "payloads", "Server": "server",
    "ServerTLS": "server", "JobsServicer": "servicer", "add_jobs_service": "servicer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workhorse.grpc' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f"workhorse.grpc.{module}"), name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in ("grpc", "grpc_health", "grpc_reflection",
                                                   "google"):
            raise ImportError(f"workhorse.grpc needs {exc.name}: "
                              "pip install 'workhorse[grpc]'") from exc
        raise
    globals()[name] = value
    return value
