"""The Backend protocol: a store that keeps jobs and moves them between states atomically.

A backend holds no policy. The runtime decides *what* should happen (which queues to try
first, when to retry, whether a job is dead, the limits of each handler) and calls these
verbs; the backend makes each move atomic and durable, and fences stale owners with the
attempt token handed out by ``claim``.

States: SCHEDULED -> READY -> RUNNING -> SUCCEEDED | RETRYING (scheduled again) | DEAD |
CANCELLED. A job leaves RUNNING only by ``ack``, ``retry``, ``bury``, ``release`` or
``reap`` (lease expired), never by a crash between two calls. A RUNNING job that a user
asked to cancel and that leaves RUNNING without its worker's ack (``reap``, ``release``)
ends CANCELLED, never READY: the cancel is not lost with its worker.

Times are epoch seconds from the store's clock where it has one (``now()``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable


class State(enum.StrEnum):
    """Where a job is in its life."""

    #: Waiting for its ``run_at`` time (delayed or scheduled).
    SCHEDULED = "scheduled"
    #: Due; waiting for a worker.
    READY = "ready"
    #: Leased to a worker and running.
    RUNNING = "running"
    #: Failed with a retryable status; waiting for its next attempt's ``run_at``.
    RETRYING = "retrying"
    #: Finished with a 2xx or 444 status.
    SUCCEEDED = "succeeded"
    #: Failed for good: a 4xx status, or retries exhausted.
    DEAD = "dead"
    #: Cancelled by a user (status 499).
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        """True while the job may still run."""
        return self in LIVE_STATES

    @property
    def finished(self) -> bool:
        """True once the job will not run again (unless a user retries it)."""
        return not self.live


LIVE_STATES = frozenset({State.SCHEDULED, State.READY, State.RUNNING, State.RETRYING})
FINISHED_STATES = frozenset({State.SUCCEEDED, State.DEAD, State.CANCELLED})
#: States waiting on ``run_at``; ``claim`` moves them to READY once due.
WAITING_STATES = frozenset({State.SCHEDULED, State.RETRYING})

#: The ``error`` of a job that ``reap`` made READY again: its last attempt ended without a
#: word from its worker (killed, crashed, or cut off past its lease). A fact for the runtime,
#: which counts such an attempt as failed when it decides whether the job may run again.
WORKER_LOST = "worker_lost"


@dataclasses.dataclass
class NewJob:
    """A job to enqueue, with its args already encoded."""

    id: str
    name: str
    queue: str
    #: Args encoded as JSON (``codec.encode``).
    payload: bytes
    headers: dict[str, str]
    priority: int
    timeout: float | None
    #: Due time; None means now. A due time in the future makes the job SCHEDULED.
    run_at: float | None = None
    #: At most one live job per unique key; a duplicate is not written.
    unique_key: str | None = None
    #: A repeat with the same key returns the first job, live or finished.
    idempotency_key: str | None = None


class EnqueueOutcome(enum.Enum):
    """What ``enqueue`` did with one NewJob."""

    CREATED = "created"
    #: Not written: a live job holds the same unique key (its id is returned).
    DUPLICATE = "duplicate"
    #: Not written: the idempotency key was used before (the first job's id is returned).
    EXISTING = "existing"


@dataclasses.dataclass(frozen=True)
class Enqueued:
    """The result of enqueueing one job."""

    id: str
    outcome: EnqueueOutcome
    state: State


@dataclasses.dataclass(frozen=True)
class Limits:
    """Store-wide limits of one handler, enforced atomically by ``claim``."""

    #: At most this many RUNNING jobs of the handler across every process.
    max_concurrency: int | None = None
    #: Token bucket shared by every process: ``rate`` tokens per second, at most ``burst``.
    rate: float | None = None
    burst: int = 1


@dataclasses.dataclass(frozen=True)
class Handoff:
    """An idle worker's standing claim, given to ``wait_for_work``: a store that can may
    lease one job to the waiting worker as it is enqueued, as ``claim`` would with these
    arguments, and return it, saving the worker the claim's round trip."""

    worker_id: str
    lease: float
    limits: Mapping[str, Limits] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class JobRecord:
    """A job as stored."""

    id: str
    name: str
    queue: str
    payload: bytes
    headers: dict[str, str]
    priority: int
    timeout: float | None
    state: State
    #: Number of claims so far (the attempt now running, when RUNNING).
    attempt: int
    run_at: float
    enqueued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    #: Worker id holding the lease, its expiry, and the token fencing this attempt.
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    token: str | None = None
    #: Status code of the latest finished attempt.
    status: int | None = None
    #: The handler's result encoded as JSON, once SUCCEEDED.
    result: bytes | None = None
    error: str | None = None
    traceback: str | None = None
    checkin: str | None = None
    checkin_at: float | None = None
    unique_key: str | None = None
    idempotency_key: str | None = None
    #: A user asked to cancel this RUNNING job; its worker learns it at its next heartbeat.
    cancel_requested: bool = False


@dataclasses.dataclass(frozen=True)
class Settlement:
    """How one run of a RUNNING job ended, for ``settle``: the move and what to store.

    ``state`` picks the move: SUCCEEDED or CANCELLED (as ``ack``), RETRYING (as ``retry``,
    due at ``run_at``), DEAD (as ``bury``, deleted unless ``keep``) or READY (as
    ``release``).
    """

    job_id: str
    token: str
    state: State
    status: int = 200
    result: bytes | None = None
    run_at: float | None = None
    error: str | None = None
    traceback: str | None = None
    keep: bool = True


@dataclasses.dataclass
class WorkerInfo:
    """A worker process as its heartbeats describe it."""

    id: str
    host: str
    pid: int
    concurrency: int
    queues: list[str]
    started_at: float
    last_beat: float = 0.0


@dataclasses.dataclass(frozen=True)
class HeartbeatReply:
    """What a worker learns from a heartbeat about the jobs it runs."""

    #: Jobs a user asked to cancel.
    cancel: frozenset[str]
    #: Jobs whose lease this worker no longer holds (reaped or finished elsewhere).
    lost: frozenset[str]


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """Counts of one queue by state, and the age of its oldest READY job."""

    name: str
    counts: Mapping[State, int]
    paused: bool
    #: Seconds the oldest READY job has waited; 0 when none is ready.
    latency: float


#: How many failed attempts a job's history keeps: the latest ones.
HISTORY_LIMIT = 10


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """One failed attempt of a job, as its history keeps it.

    An attempt is recorded when a run ends as RETRYING or DEAD, and when ``reap`` finds its
    worker lost (``status`` None, ``error`` WORKER_LOST), in the same atomic move.
    """

    attempt: int
    status: int | None
    error: str | None
    traceback: str | None
    started_at: float | None
    finished_at: float | None


@dataclasses.dataclass(frozen=True)
class ScanPage:
    """One batch of ``scan``: jobs in enqueue order, with their attempt histories."""

    records: list[JobRecord]
    #: Per job id, its recorded failed attempts, oldest first (jobs without any omitted).
    histories: dict[str, list[AttemptRecord]]
    #: The cursor to pass as ``after`` for the next batch; None once the scan is done.
    after: int | None


@dataclasses.dataclass(frozen=True)
class FinishedJob:
    """A job that has just finished (SUCCEEDED, DEAD or CANCELLED), as a result feed tells it.

    Enough to report the outcome without reading the job: its payload, headers and history
    are left out.
    """

    id: str
    name: str
    queue: str
    state: State
    status: int | None
    #: The handler's result encoded as JSON (SUCCEEDED, and CANCELLED by its handler).
    result: bytes | None
    error: str | None
    attempt: int
    finished_at: float | None


class ResultFeed(Protocol):
    """Jobs finishing anywhere on a store, told to one listener in this process."""

    @property
    def active(self) -> bool:
        """True until closed: the feed's listener (task, connection, subscription) runs."""

    @property
    def told(self) -> int:
        """How many jobs the feed has been told so far; ``next`` returns them in order."""

    async def next(self) -> list[FinishedJob]:
        """The jobs finished since the last call, in the order told, waiting for at least
        one; an empty list once the feed is closed."""

    async def close(self) -> None:
        """Stop listening and free the listener's task and connection; idempotent."""


@runtime_checkable
class Backend(Protocol):
    """A durable (or in-process) job store. Every method is one atomic move."""

    url: str

    async def open(self) -> None:
        """Connect and create or migrate the schema; idempotent."""

    async def close(self) -> None:
        """Release connections and threads; idempotent."""

    async def now(self) -> float:
        """The store's clock, epoch seconds."""

    async def enqueue(
        self, jobs: Sequence[NewJob], *, max_sizes: Mapping[str, int] | None = None,
        connection: object | None = None,
    ) -> list[Enqueued]:
        """Write ``jobs`` in one atomic step; one Enqueued per job, in order.

        Unique and idempotency keys are checked against the store and against earlier
        jobs of the same batch. If a queue in ``max_sizes`` would hold more live jobs than
        its limit, raises QueueFull and writes nothing.

        ``connection`` is the caller's own connection to the store (the outbox pattern):
        the jobs are written in the caller's transaction and not committed, so they exist
        and run once the caller commits, and never existed if it rolls back. A failed
        enqueue leaves the caller's transaction usable. Stores without such connections
        raise ConfigurationError when one is given.
        """

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease: float,
        limits: Mapping[str, Limits] | None = None,
    ) -> list[JobRecord]:
        """Lease up to ``limit`` due jobs to ``worker_id`` and return them RUNNING.

        Atomically: due SCHEDULED/RETRYING jobs of ``queues`` become READY; then queues are
        tried in the order given (paused ones skipped), and within a queue higher priority
        first, then oldest first. A job is skipped while its handler is at its
        ``max_concurrency`` or out of rate tokens. Each claimed job gets ``attempt += 1``,
        a new token, ``started_at`` and a lease until now + ``lease``.
        """

    async def ack(
        self, job_id: str, token: str, *, state: State, status: int, result: bytes | None = None
    ) -> bool:
        """Finish a RUNNING job as SUCCEEDED or CANCELLED with its status and result.

        False (and nothing changes) if the job is not RUNNING under ``token``.
        """

    async def retry(
        self, job_id: str, token: str, *, run_at: float, status: int,
        error: str | None, traceback: str | None,
    ) -> bool:
        """Move a RUNNING job to RETRYING, due at ``run_at``; False if ``token`` is stale."""

    async def bury(
        self, job_id: str, token: str, *, status: int, error: str | None,
        traceback: str | None, keep: bool = True,
    ) -> bool:
        """Move a RUNNING job to DEAD (or delete it if not ``keep``); False if stale."""

    async def release(self, job_id: str, token: str) -> bool:
        """Give a RUNNING job back as READY, its attempt not counted; False if stale.

        A job with ``cancel_requested`` is not given back: it ends CANCELLED instead, in the
        same atomic move, finished as by ``ack`` with state CANCELLED and status 499
        (error "cancelled", no result, its attempt counted, its unique key freed, its
        waiters told). A cancel must not be lost because its worker stopped before it
        learnt of it. ``settle`` with state READY does the same."""

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Apply many ack/retry/bury/release moves in one round trip; one bool per
        settlement, False where its job is not RUNNING under its token. Each settlement is
        atomic; a busy worker batches the ends of many runs into one call. A release
        (state READY) of a job with ``cancel_requested`` ends it CANCELLED (see
        ``release``)."""

    async def cancel(self, job_id: str) -> State | None:
        """Cancel a job: SCHEDULED/READY/RETRYING become CANCELLED (status 499) at once;
        RUNNING is flagged ``cancel_requested`` and stays RUNNING until its worker acks;
        should it leave RUNNING without its worker's ack (``reap``, ``release``), it ends
        CANCELLED rather than READY. Returns the job's state afterwards, or None if there
        is no such job."""

    async def cancel_all(self, *, queue: str | None = None, name: str | None = None) -> int:
        """``cancel`` every live job matching ``queue`` and ``name``; returns how many."""

    async def heartbeat(
        self, worker: WorkerInfo, job_ids: Sequence[str], lease: float
    ) -> HeartbeatReply:
        """Record the worker's beat and extend the leases it holds on ``job_ids``."""

    async def checkin(self, job_id: str, token: str, message: str) -> bool:
        """Store a progress message on a RUNNING job; False if ``token`` is stale."""

    async def unregister(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""

    async def reap(self, worker_ttl: float) -> int:
        """Make RUNNING jobs READY again whose lease expired or whose worker has not beaten
        for ``worker_ttl`` seconds, and forget such workers. Returns the jobs requeued.

        Each requeued job keeps its attempt count; its ``error`` becomes WORKER_LOST and its
        traceback is cleared, in the same atomic move.

        Such a job with ``cancel_requested`` is not requeued: a user asked to cancel it,
        and its worker can no longer say it did. It ends CANCELLED in the same atomic move,
        finished as by ``ack`` with state CANCELLED and status 499 (error "cancelled", no
        result, its attempt counted, no attempt recorded in its history, its unique key
        freed, its waiters told). It is not counted in the return value."""

    async def get(self, job_id: str) -> JobRecord | None:
        """The job with ``job_id``, or None."""

    async def list_jobs(
        self, *, state: State | None = None, queue: str | None = None,
        name: str | None = None, limit: int = 100, offset: int = 0,
    ) -> list[JobRecord]:
        """Jobs matching the filters, oldest first."""

    async def queue_stats(self) -> list[QueueStats]:
        """Counts per queue and state, for every queue that has jobs or is paused."""

    async def workers(self) -> list[WorkerInfo]:
        """Workers that have beaten and not been forgotten."""

    async def pause(self, queue: str) -> None:
        """Stop ``claim`` from taking jobs of ``queue``."""

    async def resume(self, queue: str) -> None:
        """Let ``claim`` take jobs of ``queue`` again."""

    async def paused(self) -> set[str]:
        """The paused queues."""

    async def prune(self, *, finished_before: float | None = None,
                    keep: int | None = None) -> int:
        """Delete finished jobs that ended before ``finished_before``, and beyond the
        ``keep`` most recent; live jobs are never touched. Returns how many."""

    # -- admin: moves a user asks for, each atomic ---------------------------------------

    async def count_jobs(self, *, state: State | None = None, queue: str | None = None,
                         name: str | None = None) -> int:
        """How many jobs match the filters: all that ``list_jobs`` could list with them."""

    async def make_ready(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        """Move the jobs in one of ``states`` matching ``job_id``, ``queue`` and ``name``
        (up to ``limit``, oldest first where the store keeps that order) to READY, due now.

        Each job keeps its attempt count and history; its status, error, traceback,
        result, check-in, finish time and cancel flag are cleared. A job whose unique key a
        live job holds is left as it is. RUNNING is refused (ValueError). Returns how many
        moved. Each job moves atomically; a bulk move is one step on the SQL stores and
        batches of up to 1000 jobs on Redis.
        """

    async def delete_jobs(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        """Delete the jobs in one of ``states`` matching the filters (as ``make_ready``),
        with their keys; a live job frees its unique key. RUNNING is refused (ValueError):
        a job leaves RUNNING only through its worker or ``reap``. Returns how many."""

    async def attempt_history(self, job_ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
        """The recorded failed attempts of each job, oldest first (jobs without any, or
        unknown, are omitted); at most HISTORY_LIMIT per job."""

    async def scan(self, *, after: int = 0, limit: int = 500) -> ScanPage:
        """Up to ``limit`` jobs in enqueue order, after the cursor ``after`` (0: from the
        first), with their histories. Jobs enqueued during a scan may be included."""

    async def restore(
        self, records: Sequence[JobRecord],
        histories: Mapping[str, Sequence[AttemptRecord]] | None = None,
    ) -> list[bool]:
        """Insert jobs exactly as given (state, attempt, times, keys, status, result,
        history), after the store's existing ones in enqueue order, in one atomic step.

        A record is skipped (False) if its id exists, its idempotency key names another
        job, or it is live and a live job holds its unique key. RUNNING records are
        refused (ValueError): a lease cannot move between stores. One bool per record.
        """

    async def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        """The job once finished, or None if it is still live after ``timeout`` seconds."""

    async def wait_for_work(self, queues: Sequence[str], timeout: float, *,
                            handoff: Handoff | None = None) -> list[JobRecord]:
        """Return when work may have become ready in ``queues``, or after ``timeout``.

        With ``handoff``, a store may lease a job enqueued meanwhile to the waiting worker
        and return it RUNNING, as ``claim`` would have; otherwise it returns ``[]``. A job
        leased so but not returned (the wait was cancelled as it arrived) goes back to READY;
        if the store cannot be reached then, it runs again once its lease runs out."""

    async def open_result_feed(self) -> ResultFeed:
        """Start telling the jobs that finish from now on, in any process on the store;
        returns once listening, so a job finished after that is told.

        Told: every move to SUCCEEDED, CANCELLED or (kept) DEAD. Not told: a job deleted as
        it dies (``bury`` without ``keep``), or restored or moved by an admin. Best effort
        across a lost connection: what finishes while a durable feed reconnects is missed.
        The feed holds a listener until closed; each backend says what it costs per job."""
