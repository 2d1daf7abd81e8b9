"""Workhorse values as the service's protobuf messages: jobs, results, queues, stats."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from workhorse import codec
from workhorse.admin import JobView, QueueInfo, Stats
from workhorse.backends.base import State
from workhorse.grpc._proto.workhorse.v1 import jobs_pb2
from workhorse.grpc.payloads import CORRELATION_HEADER, PROTO_TYPE_HEADER
from workhorse.results import Result

#: Each workhorse state's protobuf enum value.
_STATES: dict[State, jobs_pb2.State] = {
    State.SCHEDULED: jobs_pb2.STATE_SCHEDULED, State.READY: jobs_pb2.STATE_READY,
    State.RUNNING: jobs_pb2.STATE_RUNNING, State.RETRYING: jobs_pb2.STATE_RETRYING,
    State.SUCCEEDED: jobs_pb2.STATE_SUCCEEDED, State.DEAD: jobs_pb2.STATE_DEAD,
    State.CANCELLED: jobs_pb2.STATE_CANCELLED,
}
_STATE_OF = {value: state for state, value in _STATES.items()}


def state_message(state: State | str) -> jobs_pb2.State:
    """The protobuf enum value of a workhorse state."""
    return _STATES[State(state)]


def state_of(value: jobs_pb2.State) -> State:
    """The workhorse state of a protobuf enum value (ValueError for STATE_UNSPECIFIED)."""
    try:
        return _STATE_OF[value]
    except KeyError:
        raise ValueError(f"no job state has the value {value}") from None


def timestamp(epoch: float | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp of epoch seconds, None for None."""
    if epoch is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(epoch * 1e9))
    return stamp


def json_text(value: Any) -> str:
    """``value`` as JSON text (it came from the store's JSON, so it encodes)."""
    return codec.encode(value).decode()


def job_message(view: JobView) -> jobs_pb2.Job:
    """How the service shows one job."""
    headers = dict(view.headers)
    proto_type = headers.pop(PROTO_TYPE_HEADER, "")
    correlation_id = headers.pop(CORRELATION_HEADER, "")
    return jobs_pb2.Job(
        id=view.id, name=view.name, queue=view.queue, state=state_message(view.state),
        status=view.status or 0, json_args="" if view.args_error else json_text(view.args),
        proto_type=proto_type, correlation_id=correlation_id, metadata=headers,
        priority=view.priority, attempt=view.attempt,
        enqueued_at=timestamp(view.enqueued_at), run_at=timestamp(view.run_at),
        started_at=timestamp(view.started_at), finished_at=timestamp(view.finished_at),
        json_result=json_text(view.result) if view.state == State.SUCCEEDED else "",
        error=view.error or "", checkin=view.checkin or "",
    )


def result_message(result: Result) -> jobs_pb2.Result:
    """How the service streams one finished job."""
    return jobs_pb2.Result(
        job_id=result.job_id, name=result.name, queue=result.queue,
        state=state_message(result.state), status=int(result.status or 0),
        json_result=json_text(result.result) if result.ok else "", error=result.error or "",
        attempt=result.attempt, finished_at=timestamp(result.finished_at),
    )


def queue_message(info: QueueInfo) -> jobs_pb2.Queue:
    """How the service shows one queue."""
    return jobs_pb2.Queue(name=info.name, counts=info.counts, paused=info.paused,
                          latency=info.latency)


def stats_message(stats: Stats) -> jobs_pb2.StatsResponse:
    """How the service shows the store's totals."""
    return jobs_pb2.StatsResponse(counts=stats.counts, queues=stats.queues,
                                  workers=stats.workers, busy=stats.busy, paused=stats.paused)
