"""workhorse: background jobs with handlers, middleware and HTTP-style statuses.

    import workhorse as wh

    app = wh.App()

    @app.handler("send_email", retries=5)
    async def send_email(job: wh.Job) -> dict:
        ...
"""

from types import ModuleType as _ModuleType

from workhorse import middleware as middleware
from workhorse.admin import Admin as Admin
from workhorse.admin import Attempt as Attempt
from workhorse.admin import JobView as JobView
from workhorse.admin import Page as Page
from workhorse.admin import QueueInfo as QueueInfo
from workhorse.admin import Stats as Stats
from workhorse.app import App as App
from workhorse.backends.base import State as State
from workhorse.backoff import constant as constant
from workhorse.backoff import exponential as exponential
from workhorse.concurrent import ConcurrentJob as ConcurrentJob
from workhorse.context import Context as Context
from workhorse.errors import ArgumentError as ArgumentError
from workhorse.errors import ConfigurationError as ConfigurationError
from workhorse.errors import JobError as JobError
from workhorse.errors import JobFailed as JobFailed
from workhorse.errors import JobNotFound as JobNotFound
from workhorse.errors import QueueFull as QueueFull
from workhorse.errors import SerializationError as SerializationError
from workhorse.errors import StoreError as StoreError
from workhorse.errors import StoreFull as StoreFull
from workhorse.errors import UnknownHandlerError as UnknownHandlerError
from workhorse.errors import WorkhorseError as WorkhorseError
from workhorse.hooks import JobEvent as JobEvent
from workhorse.job import Job as Job
from workhorse.local import LocalWorker as LocalWorker
from workhorse.producer import EnqueueRequest as EnqueueRequest
from workhorse.ref import JobRef as JobRef
from workhorse.results import Drop as Drop
from workhorse.results import Result as Result
from workhorse.results import ResultSubscription as ResultSubscription
from workhorse.schedule import Schedule as Schedule
from workhorse.status import Outcome as Outcome
from workhorse.status import Status as Status
from workhorse.types import Adapter as Adapter
from workhorse.types import Handler as Handler
from workhorse.worker import Worker as Worker

__version__ = "0.1.0"


def __getattr__(name: str) -> _ModuleType:
    # ``wh.grpc`` imports the gRPC surface on first use: grpcio is an optional extra.
    if name == "grpc":
        import importlib

        return importlib.import_module("workhorse.grpc")
    raise AttributeError(f"module 'workhorse' has no attribute {name!r}")


__all__ = [
    "Adapter",
    "Admin",
    "App",
    "ArgumentError",
    "Attempt",
    "ConcurrentJob",
    "ConfigurationError",
    "Context",
    "Drop",
    "EnqueueRequest",
    "Handler",
    "Job",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobNotFound",
    "JobRef",
    "JobView",
    "LocalWorker",
    "Outcome",
    "Page",
    "QueueFull",
    "QueueInfo",
    "Result",
    "ResultSubscription",
    "Schedule",
    "SerializationError",
    "State",
    "Stats",
    "Status",
    "StoreError",
    "StoreFull",
    "UnknownHandlerError",
    "Worker",
    "WorkhorseError",
    "constant",
    "exponential",
    "middleware",
]
