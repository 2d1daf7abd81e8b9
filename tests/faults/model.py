"""A reference model of the ``Backend`` contract, for test_model_stateful.py.

The model holds what every job of a store must look like after each move: its state, attempt,
token, lease, due time and status. It is exact between moves. During a move whose effect
depends on the store's clock (claim promotes jobs due by its "now", reap requeues leases that
expired before its "now", or cancels their jobs if a cancel was asked for), the model only
knows that clock to within the window ``[before, after]`` of store times read around the
call; ``due_states`` and ``reap_states`` give the set of states a job may then be in, and the
test adopts what it observes only if it is in that set and the move from the old state is a
legal one (``MJob.move``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from workhorse.backends.base import FINISHED_STATES, LIVE_STATES, WAITING_STATES, State

S = State

#: Every move a job may make between two observations (staying put is always allowed).
#: SCHEDULED/RETRYING -> RUNNING is a claim that promotes and leases in one step.
LEGAL: dict[State, frozenset[State]] = {
    S.SCHEDULED: frozenset({S.READY, S.RUNNING, S.CANCELLED}),
    S.READY: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.RETRYING, S.DEAD, S.CANCELLED, S.READY}),
    S.RETRYING: frozenset({S.READY, S.RUNNING, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.DEAD: frozenset(),
    S.CANCELLED: frozenset(),
}

QUEUED_STATES = frozenset({S.SCHEDULED, S.READY, S.RETRYING})


class ModelError(AssertionError):
    """The store did something the model does not allow."""


def check(condition: bool, message: str) -> None:
    """Like ``assert``, but never stripped by ``python -O``."""
    if not condition:
        raise ModelError(message)


@dataclasses.dataclass
class MJob:
    """What the model knows of one job in the store."""

    id: str
    name: str
    queue: str
    priority: int
    #: Enqueue order: FIFO within a priority, kept across release, reap and retry.
    seq: int
    unique_key: str | None
    idempotency_key: str | None
    state: State
    run_at: float
    enqueued_at: float
    #: Claims that counted (a release takes its claim back).
    attempt: int = 0
    token: str | None = None
    owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    checkin: str | None = None
    status: int | None = None
    finished_at: float | None = None
    #: Every token any claim of this job handed out, oldest first.
    tokens: list[str] = dataclasses.field(default_factory=list)
    #: The attempt number each claim handed out, and whether that claim was released.
    claims: list[tuple[int, bool]] = dataclasses.field(default_factory=list)

    @property
    def rank(self) -> tuple[int, int]:
        """Claim order within a queue: higher priority first, then older first."""
        return (-self.priority, self.seq)

    def held(self, token: str) -> bool:
        """Whether a move fenced by ``token`` must be accepted now."""
        return self.state is S.RUNNING and self.token == token

    def move(self, new: State, why: str) -> None:
        """Take the job to ``new``: a legal transition, or a ModelError."""
        check(new is self.state or new in LEGAL[self.state],
              f"job {self.id}: illegal transition {self.state} -> {new} ({why})")
        self.state = new

    def let_go(self) -> None:
        """The job left RUNNING: no owner, token or lease any more."""
        self.token = self.owner = self.lease_expires_at = None


@dataclasses.dataclass
class SimWorker:
    """A simulated worker: what it believes it holds. A crash makes a new incarnation."""

    slot: int
    generation: int = 0
    #: job id -> the token it was claimed with.
    held: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"w{self.slot}.{self.generation}"


class Model:
    """The whole store as the model sees it."""

    def __init__(self, workers: int) -> None:
        self.jobs: dict[str, MJob] = {}
        #: Jobs that left the store, and how (pruned, or buried without keep).
        self.gone: dict[str, str] = {}
        #: Their tokens, kept for stale-token moves.
        self.gone_tokens: dict[str, list[str]] = {}
        self.workers = [SimWorker(slot) for slot in range(workers)]
        #: Registered worker id -> its last beat (store time).
        self.beats: dict[str, float] = {}
        #: (job id, token) pairs a crashed worker forgot; its process may still come back.
        self.zombies: list[tuple[str, str]] = []
        self.paused: set[str] = set()
        #: Every token ever handed out, to check that each claim gets a fresh one.
        self.tokens: set[str] = set()
        self._seq = 0

    # -- reading the model ----------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def live_unique(self, key: str) -> MJob | None:
        """The live job holding unique ``key``, if any."""
        return next((m for m in self.jobs.values()
                     if m.unique_key == key and m.state in LIVE_STATES), None)

    def idempotent(self, key: str) -> MJob | None:
        """The job (any state, still stored) enqueued with idempotency ``key``, if any."""
        return next((m for m in self.jobs.values() if m.idempotency_key == key), None)

    def stale_tokens(self) -> list[tuple[str, str]]:
        """(job id, token) pairs whose moves the store must refuse."""
        pairs = [(m.id, t) for m in self.jobs.values() for t in m.tokens if not m.held(t)]
        pairs += [(job_id, t) for job_id, tokens in self.gone_tokens.items() for t in tokens]
        return pairs

    def running(self) -> list[MJob]:
        return [m for m in self.jobs.values() if m.state is S.RUNNING]

    def counts(self) -> dict[str, dict[State, int]]:
        """Jobs per queue and state, for every queue that has jobs or is paused."""
        out: dict[str, dict[State, int]] = {q: dict.fromkeys(State, 0) for q in self.paused}
        for m in self.jobs.values():
            out.setdefault(m.queue, dict.fromkeys(State, 0))[m.state] += 1
        return out

    # -- expectations -----------------------------------------------------------------------

    @staticmethod
    def due_states(m: MJob, before: float, after: float) -> frozenset[State]:
        """The states a waiting job may be in after a claim on its queue that read the store
        clock somewhere in ``[before, after]``: promoted once ``run_at <= now``."""
        if m.run_at <= before:
            return frozenset({S.READY})
        if m.run_at <= after:
            return frozenset({m.state, S.READY})
        return frozenset({m.state})

    @staticmethod
    def unacked_state(m: MJob) -> State:
        """The state a RUNNING job takes when it leaves RUNNING without its worker's ack
        (reaped, released, or retried: READY or RETRYING), or CANCELLED if a user asked to
        cancel it, so that the cancel is not lost with its worker."""
        return S.CANCELLED if m.cancel_requested else S.READY

    def reap_states(self, m: MJob, gone: Iterable[str], before: float,
                    after: float) -> frozenset[State]:
        """The states a RUNNING job may be in after a reap that read the store clock somewhere
        in ``[before, after]`` and forgot the workers ``gone``."""
        assert m.lease_expires_at is not None
        reaped = self.unacked_state(m)
        if m.lease_expires_at < before or m.owner in set(gone):
            return frozenset({reaped})
        if m.lease_expires_at < after:
            return frozenset({S.RUNNING, reaped})
        return frozenset({S.RUNNING})

    def prune_doomed(self, finished_before: float | None, keep: int | None) -> set[str]:
        """The jobs ``prune`` must delete: finished before the time, or beyond the ``keep``
        most recent (newest first by finish time, then by id)."""
        finished = sorted((m for m in self.jobs.values() if m.state in FINISHED_STATES),
                          key=lambda m: (m.finished_at or 0.0, m.id), reverse=True)
        return {m.id for i, m in enumerate(finished)
                if (keep is not None and i >= keep)
                or (finished_before is not None and (m.finished_at or 0.0) < finished_before)}

    def forget(self, job_id: str, why: str) -> None:
        """The job left the store (legally: pruned, or buried without keep)."""
        m = self.jobs.pop(job_id)
        self.gone[job_id] = why
        self.gone_tokens[job_id] = list(m.tokens)


__all__ = ["FINISHED_STATES", "LEGAL", "LIVE_STATES", "QUEUED_STATES", "WAITING_STATES",
           "MJob", "Model", "ModelError", "SimWorker", "check"]
