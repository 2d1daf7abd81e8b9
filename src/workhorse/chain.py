"""The handler chain: turn a user's function into a Handler and wrap it in adapters."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import traceback
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

from workhorse.errors import JobError
from workhorse.job import Job
from workhorse.status import Status
from workhorse.typed_args import convert_args
from workhorse.types import Adapter, Handler, HandlerFunc


def is_async_callable(fn: Any) -> bool:
    """True if calling ``fn`` returns an awaitable coroutine."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


def endpoint(fn: HandlerFunc, *, executor: Executor | None = None,
             args_type: type[Any] | None = None) -> Handler:
    """The innermost Handler: converts typed args, calls ``fn``, records its result.

    Sync functions run in ``executor`` (the worker's thread pool), so they never block
    the event loop; contextvars are carried into the thread.
    """
    run_async = is_async_callable(fn)

    async def call(job: Job[Any]) -> Any:
        if args_type is not None:
            job.args = convert_args(job.args, args_type)
        if run_async:
            result = await fn(job)
        else:
            loop = asyncio.get_running_loop()
            ctx = contextvars.copy_context()
            result = await loop.run_in_executor(executor, ctx.run, fn, job)
        if job.ctx.status is Status.UNKNOWN:
            job.ctx.status = Status.SUCCESS
        job.result = result
        return result

    return call


def compose(adapters: Iterable[Adapter], handler: Handler) -> Handler:
    """Wrap ``handler`` so the first adapter given is the outermost one."""
    for adapter in reversed(list(adapters)):
        handler = adapter(handler)
    return handler


def status_for_exception(exc: BaseException) -> Status:
    """The status a run ends with when ``exc`` escapes the handler."""
    if isinstance(exc, JobError):
        return exc.status
    if isinstance(exc, TimeoutError):
        return Status.TIMEOUT
    if isinstance(exc, asyncio.CancelledError):
        return Status.CANCELLED
    return Status.INTERNAL_ERROR


def describe_exception(exc: BaseException) -> str:
    """``"Type: message"`` for ``exc`` (``"Type"`` if the message is empty), never raising.

    A handler's exception may be unprintable (its ``__str__`` raises): the run must still be
    recorded, with a stand-in that says so, rather than fail the worker's bookkeeping.
    """
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception as failure:
        return f"{name} (its message could not be read: str() raised {_failure(failure)})"
    return f"{name}: {message}" if message else name


def _failure(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


def record_failure(job: Job[Any], exc: BaseException) -> None:
    """Put the status, message and traceback of ``exc`` on the job and its context."""
    status = status_for_exception(exc)
    job.ctx.status = status
    job.error = exc.message if isinstance(exc, JobError) else describe_exception(exc)
    if not isinstance(exc, JobError) or exc.__cause__ is not None:
        try:
            job.traceback = "".join(traceback.format_exception(exc))
        except Exception as failure:  # the traceback module copes with most, not all
            job.traceback = f"(no traceback: formatting it raised {_failure(failure)})"
