"""Issue 7, scenario 14: random sequences of moves against each backend and a reference model.

A Hypothesis state machine drives enqueue (batches with delay, priority, unique and
idempotency keys, max queue sizes), claim (by a few simulated workers, with a lease, some with
a max concurrency per handler), renew (heartbeats), crash (a worker forgets its jobs), retire
(a clean stop: release and unregister), ack / retry / bury / release / checkin with the right
token (alone or several in one settle), with a stale one and from a crashed worker's
forgotten token, cancel, cancel_all, pause / resume, reap, prune and "time passes" against one
backend and the model of tests/faults/model.py. After every step
the whole store is compared with the model: every job in exactly one state, the one the
model holds (nothing lost, nothing extra); every state change a legal one; attempt numbers
increasing from claim to claim (a release takes its claim back); tokens never reused and a
stale token's move refused without changing anything; the state listings, queue_stats,
paused() and workers() agreeing with the jobs.

Time: the backends read the store's clock (Redis TIME, PostgreSQL clock_timestamp(), the
host's for SQLite and memory), which a test cannot move. So leases and delays are a few
tens or hundreds of milliseconds of store time, and "time passes" waits (bounded) until the
store's own ``now()`` is past a target. Every move that depends on the clock is bracketed by
two ``now()`` readings; where the move's own reading may fall either side of a lease expiry
or a due time, the model allows both outcomes and adopts the one observed.

One rule draws a weighted action per step, rather than one rule per action: Hypothesis's
swarm testing turns rules off per example, and with the few examples a time budget allows
that left most examples with only one or two kinds of move. The steps of a failing example
are printed as notes with short names (j1, j2 for jobs in enqueue order, t1, t2 for tokens).

``WORKHORSE_MODEL_EXAMPLES`` and ``WORKHORSE_MODEL_STEPS`` make a longer run (the defaults
keep the four backends together well under 90 s); ``--hypothesis-seed`` picks the seed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import urllib.parse
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from workhorse.backends import create_backend
from workhorse.backends.base import (
    Backend,
    EnqueueOutcome,
    JobRecord,
    Limits,
    NewJob,
    Settlement,
    State,
    WorkerInfo,
)
from workhorse.errors import QueueFull

from ..conformance.conftest import BACKENDS, cleanup, new_job
from .model import (
    FINISHED_STATES,
    LIVE_STATES,
    QUEUED_STATES,
    WAITING_STATES,
    MJob,
    Model,
    check,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")
S = State

EXAMPLES = int(os.environ.get("WORKHORSE_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("WORKHORSE_MODEL_STEPS", "40"))
#: pytest-timeout per backend: a passing run takes under 30 s, but a failing one needs room to
#: shrink (Hypothesis stops shrinking after 300 s); grown with a longer run.
TIMEOUT = max(450.0, 120.0 * EXAMPLES / 25 * STEPS / 40)

QUEUES = ("q1", "q2")
NAMES = ("a", "b")
WORKERS = 3
#: Leases in seconds of store time: the short ones expire within an example, 30 s never does.
LEASES = (0.05, 0.25, 30.0)
#: Due times relative to the store's clock: None is "now", a negative one is already due.
DELAYS = (None, None, -0.05, 0.03, 0.15, 0.4)
#: Due times of retries, relative to the store's clock.
RETRY_DELAYS = (-0.05, 0.1)
#: How far "time passes" moves the store's clock.
WAITS = (0.02, 0.06, 0.25)
#: Longest any single wait for the store's clock may take.
WAIT_LIMIT = 5.0
#: Float slack for times the store computes (now + lease) rather than copies.
EPSILON = 1e-6
#: Listings read everything.
ALL = 10_000

MOVES = ("ack", "cancelled", "retry", "bury", "bury_delete", "release", "checkin")
FINISHING = {"ack": (S.SUCCEEDED, 200), "cancelled": (S.CANCELLED, 499),
             "bury": (S.DEAD, 400)}

JobSpec = tuple[str, str, int, float | None, str | None, str | None]

picks = st.integers(0, 10_000)
slots = st.integers(0, WORKERS - 1)
moves = st.sampled_from(MOVES)
settled = st.sampled_from([move for move in MOVES if move != "checkin"])
job_specs = st.tuples(
    st.sampled_from(QUEUES), st.sampled_from(NAMES), st.integers(0, 2), st.sampled_from(DELAYS),
    st.sampled_from((None, None, None, "u1", "u2")),
    st.sampled_from((None, None, None, None, "k1", "k2", "k3")))

#: Each action: its weight among the steps, and the strategy of its arguments.
ACTIONS: dict[str, tuple[int, st.SearchStrategy[tuple[Any, ...]]]] = {
    "enqueue": (12, st.tuples(st.lists(job_specs, min_size=1, max_size=4),
                              st.sampled_from((None, None, None, 2, 5)))),
    "claim": (16, st.tuples(
        slots, st.sampled_from([("q1",), ("q2",), ("q1", "q2"), ("q2", "q1")]),
        st.integers(1, 3), st.sampled_from(LEASES),
        st.sampled_from((None, None, ("a", 1), ("a", 2), ("b", 1), ("ab", 1))))),
    "finish": (16, st.tuples(picks, moves, st.sampled_from(RETRY_DELAYS), st.booleans())),
    "settle_many": (4, st.tuples(slots, st.lists(settled, min_size=1, max_size=3),
                                 st.booleans())),
    "renew": (8, st.tuples(slots, st.sampled_from(LEASES), st.none() | picks)),
    "crash": (4, st.tuples(slots)),
    "retire": (2, st.tuples(slots)),
    "zombie": (5, st.tuples(picks, moves, st.sampled_from(RETRY_DELAYS))),
    "stale": (6, st.tuples(picks, moves, st.booleans())),
    "cancel": (5, st.tuples(picks)),
    "admin": (4, st.tuples(
        st.sampled_from(("pause or resume", "prune", "cancel_all")),
        st.sampled_from((None, *QUEUES)), st.sampled_from((None, *NAMES)),
        st.sampled_from((None, 0, 2)), st.sampled_from((None, 0.0, 0.2)))),
    "reap": (10, st.tuples(st.sampled_from((3600.0, 0.1)))),
    "time_passes": (8, st.tuples(st.sampled_from(WAITS))),
}
WEIGHTED = st.sampled_from([name for name, (weight, _) in ACTIONS.items()
                            for _ in range(weight)])


class BackendMachine(RuleBasedStateMachine):
    """One fresh store per example, driven by ``step``, checked against the model after
    every step."""

    #: A fresh store URL per example; set by the test for its backend.
    make_url: ClassVar[Callable[[], str]]
    #: What the examples exercised, summed over the run (printed by the test).
    events: ClassVar[Counter[str]]

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        try:
            self.url = type(self).make_url()
            self.store: Backend = create_backend(self.url)
            self.run(self.store.open())
        except BaseException:
            self.runner.close()
            raise
        self.model = Model(WORKERS)
        #: Jobs a step touched: their get() is compared with the listing after the step.
        self.touched: set[str] = set()
        self._aliases: dict[str, str] = {}
        self._steps = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def now(self) -> float:
        return self.run(self.store.now())

    def get(self, job_id: str) -> JobRecord | None:
        return self.run(self.store.get(job_id))

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
            if self.url.startswith("postgres"):
                self.run(cleanup(self.url))
        finally:
            self.runner.close()

    # -- reporting ------------------------------------------------------------------------------

    def count(self, what: str, n: int = 1) -> None:
        self.events[what] += n

    def alias(self, value: str | None, prefix: str = "j") -> str:
        """A short name for a job id (j1, j2...) or a token (t1, t2...), in order of first
        mention, for the notes of a failing example."""
        if value is None:
            return "-"
        if value not in self._aliases:
            number = sum(a[0] == prefix for a in self._aliases.values()) + 1
            self._aliases[value] = f"{prefix}{number}"
        return self._aliases[value]

    def say(self, message: str) -> None:
        note(message)

    # -- the steps ------------------------------------------------------------------------------

    @initialize(batch=st.lists(job_specs, min_size=2, max_size=6))
    def first_jobs(self, batch: list[JobSpec]) -> None:
        self.enqueue(batch, None)

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        # What is drawn must not depend on the store's state: timing makes that differ from
        # run to run, which Hypothesis rejects as flaky generation. So a finish or settle
        # with nothing held, or a zombie without zombies, makes a stale move instead, with
        # the same draws.
        action = data.draw(WEIGHTED, label="action")
        args = data.draw(ACTIONS[action][1], label=action)
        if action == "finish" and not any(w.held for w in self.model.workers):
            action, args = "stale", (args[0], args[1], args[3])
        elif action == "zombie" and not self.model.zombies:
            action, args = "stale", (args[0], args[1], False)
        elif action == "settle_many" and not self.model.workers[args[0]].held:
            action, args = "stale", (args[0], args[1][0], True)
        getattr(self, action)(*args)

    # -- producing ------------------------------------------------------------------------------

    def enqueue(self, batch: list[JobSpec], max_size: int | None) -> None:
        """Enqueue a batch; with ``max_size``, no queue may hold more live jobs after it."""
        model = self.model
        before = self.now()
        new = [new_job(name, queue=queue, priority=priority,
                       run_at=None if delay is None else before + delay,
                       unique_key=unique, idempotency_key=idem)
               for queue, name, priority, delay, unique, idem in batch]
        if max_size is not None and self._overfills(new, max_size):
            try:
                self.run(self.store.enqueue(new, max_sizes=dict.fromkeys(QUEUES, max_size)))
            except QueueFull:
                pass
            else:
                check(False, f"enqueue {batch} over max size {max_size} did not raise QueueFull")
            self.say(f"enqueue {batch} max size {max_size} -> QueueFull")
            self.count("enqueue: queue full")
            return  # the invariant checks that nothing was written
        sizes = None if max_size is None else dict.fromkeys(QUEUES, max_size)
        results = self.run(self.store.enqueue(new, max_sizes=sizes))
        after = self.now()
        check(len(results) == len(new), f"enqueue returned {len(results)} results for {len(new)}")
        written: dict[str, State] = {}
        by_idem: dict[str, str] = {}
        by_unique: dict[str, str] = {}

        def state_of(job_id: str) -> State:
            return written[job_id] if job_id in written else model.jobs[job_id].state

        for job, result, spec in zip(new, results, batch, strict=True):
            key, unique = job.idempotency_key, job.unique_key
            first = key and (by_idem.get(key) or getattr(model.idempotent(key), "id", None))
            holder = unique and (by_unique.get(unique)
                                 or getattr(model.live_unique(unique), "id", None))
            what = f"enqueue {spec} ->"
            if first:
                self.say(f"{what} existing {self.alias(first)}")
                self.count("enqueue: existing")
                check((result.outcome, result.id, result.state)
                      == (EnqueueOutcome.EXISTING, first, state_of(first)),
                      f"idempotency key {key} of {self.alias(first)}: got {result}")
                continue
            if holder:
                self.say(f"{what} duplicate of {self.alias(holder)}")
                self.count("enqueue: duplicate")
                check((result.outcome, result.id, result.state)
                      == (EnqueueOutcome.DUPLICATE, holder, state_of(holder)),
                      f"unique key {unique} held by {self.alias(holder)}: got {result}")
                continue
            self.say(f"{what} {self.alias(job.id)} {result.state}")
            self.count(f"enqueue: created {result.state}")
            check((result.outcome, result.id) == (EnqueueOutcome.CREATED, job.id),
                  f"{self.alias(job.id)} should be created: got {result}")
            if job.run_at is None or job.run_at <= before:
                allowed = {S.READY}
            elif job.run_at > after:
                allowed = {S.SCHEDULED}
            else:
                allowed = {S.READY, S.SCHEDULED}
            check(result.state in allowed, f"new job due at {job.run_at} is {result.state}, "
                  f"not one of {allowed} (clock {before}..{after})")
            record = self.get(job.id)
            check(record is not None, f"{self.alias(job.id)} created, but get() finds nothing")
            assert record is not None
            check(before <= record.enqueued_at <= after,
                  f"enqueued_at {record.enqueued_at} outside {before}..{after}")
            run_at = record.enqueued_at if job.run_at is None else job.run_at
            check(record.run_at == run_at, f"run_at {record.run_at}, expected {run_at}")
            model.jobs[job.id] = MJob(
                id=job.id, name=job.name, queue=job.queue, priority=job.priority,
                seq=model.next_seq(), unique_key=unique, idempotency_key=key,
                state=result.state, run_at=run_at, enqueued_at=record.enqueued_at)
            written[job.id] = result.state
            if key:
                by_idem[key] = job.id
            if unique:
                by_unique[unique] = job.id
            self.touched.add(job.id)

    def _overfills(self, new: list[NewJob], max_size: int) -> bool:
        """Whether writing the jobs of ``new`` that the store would create (not duplicates,
        not repeats of an idempotency key) puts more than ``max_size`` live jobs in a queue
        that they join."""
        model = self.model
        live = Counter(m.queue for m in model.jobs.values() if m.state in LIVE_STATES)
        idem = {m.idempotency_key for m in model.jobs.values()} - {None}
        unique = {m.unique_key for m in model.jobs.values() if m.state in LIVE_STATES} - {None}
        joined: set[str] = set()
        for job in new:
            if job.idempotency_key in idem or job.unique_key in unique:
                continue
            if job.idempotency_key is not None:
                idem.add(job.idempotency_key)
            if job.unique_key is not None:
                unique.add(job.unique_key)
            live[job.queue] += 1
            joined.add(job.queue)
        return any(live[queue] > max_size for queue in joined)

    # -- consuming ------------------------------------------------------------------------------

    def claim(self, slot: int, queues: tuple[str, ...], limit: int, lease: float,
              cap: tuple[str, int] | None) -> None:
        """Lease jobs, maybe with a max concurrency of ``cap[1]`` for the names in ``cap[0]``
        (store-wide RUNNING jobs of that handler)."""
        model, worker = self.model, self.model.workers[slot]
        caps = {} if cap is None else {name: cap[1] for name in cap[0]}
        limits = {name: Limits(max_concurrency=most) for name, most in caps.items()}
        running = Counter(m.name for m in model.running())
        before = self.now()
        claimed = self.run(self.store.claim(worker.id, list(queues), limit, lease, limits))
        after = self.now()
        seen = {r.id: r for r in self.run(self.store.list_jobs(limit=ALL))}
        taken = Counter(r.name for r in claimed)
        self.say(f"claim by {worker.id} of {queues} limit {limit} lease {lease} caps {caps} -> "
                 + ", ".join(f"{self.alias(r.id)} {self.alias(r.token, 't')} attempt "
                             f"{r.attempt}" for r in claimed))
        self.count(f"claim: {len(claimed)} of {limit}")
        open_queues = [q for q in queues if q not in model.paused]
        order = {q: i for i, q in enumerate(queues)}
        ids = [r.id for r in claimed]
        check(len(ids) <= limit and len(set(ids)) == len(ids),
              f"claim(limit={limit}) returned {ids}")

        for r in claimed:
            m = model.jobs.get(r.id)
            check(m is not None, f"claim returned job {r.id}, which the model does not hold")
            assert m is not None
            name = self.alias(m.id)
            check(m.queue in open_queues,
                  f"claimed {name} of queue {m.queue}, not one of {open_queues}")
            check(m.state is S.READY or (m.state in WAITING_STATES and m.run_at <= after),
                  f"claimed {name}, which was {m.state} due at {m.run_at} (clock ..{after})")
            check(r.attempt == m.attempt + 1,
                  f"{name}: attempt {r.attempt} after {m.attempt} counted claims")
            counted = [a for a, released in m.claims if not released]
            check(r.attempt > max(counted, default=0),
                  f"{name}: attempt {r.attempt} does not exceed earlier attempts {counted}")
            check(r.token is not None and r.token not in model.tokens,
                  f"{name}: claim handed out token {r.token!r} again")
            check(r.lease_owner == worker.id, f"{name} leased to {r.lease_owner}")
            assert r.started_at is not None and r.lease_expires_at is not None
            check(before <= r.started_at <= after,
                  f"started_at {r.started_at} outside {before}..{after}")
            check(abs(r.lease_expires_at - (r.started_at + lease)) < EPSILON,
                  f"lease until {r.lease_expires_at}, not {r.started_at} + {lease}")
            stored = seen.get(m.id)
            check(stored is not None and stored.state is S.RUNNING and stored.token == r.token,
                  f"claimed {name} is stored as {stored}")

        # Promotion: due waiting jobs of the claimed queues became READY (or were claimed).
        promoted: dict[str, list[float]] = {q: [] for q in queues}
        waiting: dict[str, list[float]] = {q: [] for q in queues}
        for m in model.jobs.values():
            if m.state not in WAITING_STATES:
                continue
            if m.id in ids:
                promoted[m.queue].append(m.run_at)
                continue
            state = seen[m.id].state if m.id in seen else None
            if m.queue in queues:
                allowed = model.due_states(m, before, after)
            else:
                # Not asked for: such jobs stay as they are (sqlite, redis, postgresql) or
                # are promoted once due (memory promotes the due jobs of every queue).
                allowed = frozenset({m.state, S.READY}) if m.run_at <= after else \
                    frozenset({m.state})
            check(state in allowed, f"{self.alias(m.id)} due at {m.run_at} is {state} after a "
                  f"claim of {queues}, not one of {set(allowed)} (clock {before}..{after})")
            assert state is not None
            if m.queue in queues:
                (promoted if state is S.READY else waiting)[m.queue].append(m.run_at)
            if state is not m.state:
                self.say(f"  {self.alias(m.id)} promoted to READY")
                self.count("claim: promoted, not taken" if m.queue in queues else
                           "claim: promoted in a queue not asked for")
            m.move(state, "promotion by claim")
            self.touched.add(m.id)
        for q in queues:
            if promoted[q] and waiting[q]:
                # One reading of the clock promotes: never a later due time before an
                # earlier one (slack for PostgreSQL, whose clock ticks within a statement).
                check(max(promoted[q]) <= min(waiting[q]) + 0.005,
                      f"queue {q}: promoted due times {promoted[q]} but not {waiting[q]}")

        for name, most in caps.items():
            check(taken[name] == 0 if running[name] >= most else
                  running[name] + taken[name] <= most,
                  f"claim took {taken[name]} jobs of {name} with {running[name]} running, "
                  f"max concurrency {most}")
            if taken[name] and running[name] + taken[name] == most:
                self.count("claim: up to max concurrency")

        # Completeness and order: what is READY now in an open queue was passed over (but
        # for a handler at its max concurrency).
        blocked = {name for name, most in caps.items() if running[name] + taken[name] >= most}
        passed = [m for m in model.jobs.values() if m.id not in ids and m.name not in blocked
                  and m.queue in open_queues and m.id in seen and seen[m.id].state is S.READY]
        if any(m.name in blocked and m.queue in open_queues and seen[m.id].state is S.READY
               for m in model.jobs.values() if m.id in seen):
            self.count("claim: stepped over a handler at its limit")
        if passed:
            check(len(claimed) == limit, f"claim(limit={limit}) took {len(claimed)} but left "
                  f"READY jobs {[self.alias(m.id) for m in passed]} in {open_queues}")
        for m in passed:
            for r in claimed:
                c = model.jobs[r.id]
                ahead = order[c.queue] < order[m.queue] or \
                    (c.queue == m.queue and c.rank < m.rank)
                check(ahead, f"claim took {self.alias(c.id)} ({c.queue}, rank {c.rank}) before "
                      f"{self.alias(m.id)} ({m.queue}, rank {m.rank}); queues {queues}")

        for r in claimed:
            m = model.jobs[r.id]
            self.count(f"claim: from {m.state}")
            if m.claims:
                self.count("claim: again" + (" after release" if m.claims[-1][1] else ""))
            m.move(S.RUNNING, "claim")
            assert r.token is not None
            m.attempt, m.token, m.owner = r.attempt, r.token, worker.id
            m.lease_expires_at = r.lease_expires_at
            m.cancel_requested, m.checkin = False, None
            m.tokens.append(r.token)
            m.claims.append((r.attempt, False))
            model.tokens.add(r.token)
            worker.held[m.id] = r.token
            self.touched.add(m.id)

    def renew(self, slot: int, lease: float, extra: int | None) -> None:
        """A heartbeat for the jobs the worker believes it holds (and maybe one it does not)."""
        model, worker = self.model, self.model.workers[slot]
        ids = sorted(worker.held)
        others = sorted(set(model.jobs) - set(ids)) + sorted(model.gone)
        if extra is not None and others:
            ids.append(others[extra % len(others)])
        info = WorkerInfo(id=worker.id, host="model", pid=0, concurrency=3,
                          queues=list(QUEUES), started_at=1.0)
        before = self.now()
        reply = self.run(self.store.heartbeat(info, ids, lease))
        after = self.now()
        beat = info.last_beat
        self.say(f"renew by {worker.id} of {[self.alias(j) for j in ids]} lease {lease} -> "
                 f"lost {sorted(map(self.alias, reply.lost))}, "
                 f"cancel {sorted(map(self.alias, reply.cancel))}")
        check(before <= beat <= after, f"beat at {beat}, outside {before}..{after}")
        held = {j for j in ids if j in model.jobs
                and model.jobs[j].state is S.RUNNING and model.jobs[j].owner == worker.id}
        check(reply.lost == set(ids) - held, f"heartbeat: lost "
              f"{sorted(map(self.alias, reply.lost))}, expected "
              f"{sorted(map(self.alias, set(ids) - held))}")
        cancel = {j for j in held if model.jobs[j].cancel_requested}
        check(reply.cancel == cancel, f"heartbeat: cancel {sorted(map(self.alias, reply.cancel))}"
              f", expected {sorted(map(self.alias, cancel))}")
        for job_id in held:
            record = self.get(job_id)
            assert record is not None and record.lease_expires_at is not None
            check(abs(record.lease_expires_at - (beat + lease)) < EPSILON,
                  f"{self.alias(job_id)}: lease until {record.lease_expires_at}, not "
                  f"{beat} + {lease}")
            model.jobs[job_id].lease_expires_at = record.lease_expires_at
            self.touched.add(job_id)
        for job_id in reply.lost:
            worker.held.pop(job_id, None)  # the worker learns that it lost the lease
        model.beats[worker.id] = beat
        self.count(f"renew: {len(held)} held, {len(reply.lost)} lost, {len(cancel)} cancel")

    def crash(self, slot: int) -> None:
        """The worker dies: its jobs come back only by lease expiry (or silence) and reap.

        What it held is kept as zombie tokens: a paused process may yet try to finish them."""
        worker = self.model.workers[slot]
        self.say(f"crash of {worker.id}, holding {sorted(map(self.alias, worker.held))}")
        self.model.zombies.extend(sorted(worker.held.items()))
        worker.held.clear()
        worker.generation += 1
        self.count("crash")

    def retire(self, slot: int) -> None:
        """The worker stops cleanly: it gives back what it holds and unregisters."""
        worker, model = self.model.workers[slot], self.model
        ends = sorted(worker.held.items())
        before = self.now()
        done = self.run(self.store.settle([_settlement(job_id, token, "release", before)
                                           for job_id, token in ends]))
        after = self.now()
        self.run(self.store.unregister(worker.id))
        self.say(f"{worker.id} retires: release of "
                 f"{[self.alias(job_id) for job_id, _ in ends]} -> {done}")
        for (job_id, token), ok in zip(ends, done, strict=True):
            m = model.jobs.get(job_id)
            expected = m is not None and m.held(token)
            check(ok == expected, f"release of {self.alias(job_id)} on retiring: {ok}, "
                  f"expected {expected}")
            self._apply(job_id, token, "release", ok, before, after, before)
        model.beats.pop(worker.id, None)
        worker.held.clear()
        worker.generation += 1
        self.count("retire")

    def finish(self, pick: int, move: str, delay: float, settle: bool) -> None:
        """A worker ends (or checks in on) a job it believes it holds, with its token."""
        pairs = sorted((w.slot, job_id, token) for w in self.model.workers
                       for job_id, token in w.held.items())
        slot, job_id, token = pairs[pick % len(pairs)]
        worker = self.model.workers[slot]
        ok = self._fenced_move(f"{worker.id}:", job_id, token, move, delay, settle)
        if not (ok and move == "checkin"):
            worker.held.pop(job_id)

    def zombie(self, pick: int, move: str, delay: float) -> None:
        """A crashed worker's process comes back and tries to end a job it held."""
        job_id, token = self.model.zombies.pop(pick % len(self.model.zombies))
        job = self.model.jobs.get(job_id)
        self.count("zombie: still holds" if job and job.held(token) else "zombie: fenced off")
        self._fenced_move("zombie:", job_id, token, move, delay, False)

    def stale(self, pick: int, move: str, settle: bool) -> None:
        """A move with a token the store must refuse: from an earlier attempt, of a job that
        is gone, a made-up one, or for no such job. Nothing may change."""
        pairs = [*sorted(self.model.stale_tokens()), ("no-such-job", "no-such-token")]
        pairs += [(job_id, "no-such-token") for job_id in sorted(self.model.jobs)]
        job_id, token = pairs[pick % len(pairs)]
        before = self.get(job_id)
        ok = self._fenced_move("stale:", job_id, token, move, 0.1, settle)
        check(not ok, f"{move} of {self.alias(job_id)} with stale token was accepted")
        check(self.get(job_id) == before, f"refused {move} changed {self.alias(job_id)}")
        self.count("stale: refused")

    def _fenced_move(self, who: str, job_id: str, token: str, move: str, delay: float,
                     settle: bool) -> bool:
        """Make ``move`` on the job with ``token``; check it against the model and apply it."""
        m = self.model.jobs.get(job_id)
        expected = m is not None and m.held(token)
        before = self.now()
        ok = self.run(self._move(job_id, token, move, before + delay, settle))
        after = self.now()
        self.say(f"{who} {move}{' (settle)' if settle else ''} of {self.alias(job_id)} with "
                 f"{self.alias(token, 't')} -> {ok}")
        check(ok == expected, f"{move} of {self.alias(job_id)} with token "
              f"{self.alias(token, 't')}: returned {ok}, expected {expected} (model: {m})")
        self._apply(job_id, token, move, ok, before, after, before + delay)
        return ok

    def _apply(self, job_id: str, token: str, move: str, ok: bool, before: float,
               after: float, run_at: float) -> None:
        """Apply an accepted ``move`` to the model, checking the stored job as it goes."""
        model = self.model
        self.count(f"{move}: {'accepted' if ok else 'refused'}")
        self.touched.add(job_id)
        m = model.jobs.get(job_id)
        if not ok or m is None:
            return
        if move == "checkin":
            m.checkin = f"progress {token}"
            return
        record = self.get(job_id)
        if move == "bury_delete":
            check(record is None, f"{self.alias(job_id)} buried without keep is still stored")
            m.move(S.DEAD, "bury without keep")
            model.forget(job_id, "buried without keep")
            return
        check(record is not None, f"{self.alias(job_id)} vanished after {move}")
        assert record is not None
        m.let_go()
        if move in ("release", "retry") and model.unacked_state(m) is S.CANCELLED:
            # A cancel was asked for: the job ends CANCELLED as if acked so, attempt counted.
            m.move(S.CANCELLED, f"{move} of a job whose cancel was asked for")
            m.status = 499
            self.count(f"{move}: cancelled")
            self._finished_within(m, record, before, after)
        elif move == "release":
            m.move(S.READY, "release")
            m.attempt -= 1
            m.claims[-1] = (m.claims[-1][0], True)
        elif move == "retry":
            m.move(S.RETRYING, "retry")
            m.run_at, m.status = run_at, 500
        else:
            state, status = FINISHING[move]
            m.move(state, move)
            m.status = status
            self._finished_within(m, record, before, after)

    def _finished_within(self, m: MJob, record: JobRecord | None, before: float,
                         after: float) -> None:
        """Check that the stored job finished, in the model's state, within
        ``[before, after]``; adopt its finish time."""
        check(record is not None and record.state is m.state,
              f"{self.alias(m.id)} is {getattr(record, 'state', None)}, expected {m.state}")
        check(record is not None and record.finished_at is not None
              and before <= record.finished_at <= after,
              f"{self.alias(m.id)} finished at {getattr(record, 'finished_at', None)}, "
              f"outside {before}..{after}")
        assert record is not None
        m.finished_at = record.finished_at

    def settle_many(self, slot: int, chosen: list[str], repeat: bool) -> None:
        """A worker ends up to three of its runs in one ``settle`` call, maybe naming the
        first twice (the second must be refused: the first has moved the job on)."""
        worker, model = self.model.workers[slot], self.model
        ends = [(job_id, worker.held[job_id], move)
                for job_id, move in zip(sorted(worker.held), chosen, strict=False)]
        if repeat and ends:
            ends.append(ends[0])
        before = self.now()
        settlements = [_settlement(job_id, token, move, before + 0.1)
                       for job_id, token, move in ends]
        done = self.run(self.store.settle(settlements))
        after = self.now()
        self.say(f"{worker.id}: settle " + ", ".join(
            f"{move} of {self.alias(job_id)} with {self.alias(token, 't')}"
            for job_id, token, move in ends) + f" -> {done}")
        check(len(done) == len(ends), f"settle returned {len(done)} results for {len(ends)}")
        for (job_id, token, move), ok in zip(ends, done, strict=True):
            m = model.jobs.get(job_id)
            expected = m is not None and m.held(token)
            check(ok == expected, f"settle: {move} of {self.alias(job_id)} with "
                  f"{self.alias(token, 't')}: {ok}, expected {expected} (model: {m})")
            self._apply(job_id, token, move, ok, before, after, before + 0.1)
            worker.held.pop(job_id, None)
        self.count(f"settle: {len(ends)} in one call")

    async def _move(self, job_id: str, token: str, move: str, run_at: float,
                    settle: bool) -> bool:
        store = self.store
        if move == "checkin":
            return await store.checkin(job_id, token, f"progress {token}")
        if settle:
            [done] = await store.settle([_settlement(job_id, token, move, run_at)])
            return done
        if move in ("ack", "cancelled"):
            state, status = FINISHING[move]
            return await store.ack(job_id, token, state=state, status=status,
                                   result=b'"ok"' if move == "ack" else None)
        if move == "retry":
            return await store.retry(job_id, token, run_at=run_at, status=500, error="model",
                                     traceback=None)
        if move in ("bury", "bury_delete"):
            return await store.bury(job_id, token, status=400, error="model", traceback=None,
                                    keep=move == "bury")
        return await store.release(job_id, token)

    # -- control --------------------------------------------------------------------------------

    def cancel(self, pick: int) -> None:
        model = self.model
        candidates = [*sorted(model.jobs), *sorted(model.gone), "no-such-job"]
        job_id = candidates[pick % len(candidates)]
        before = self.now()
        state = self.run(self.store.cancel(job_id))
        after = self.now()
        self.say(f"cancel of {self.alias(job_id)} -> {state}")
        m = model.jobs.get(job_id)
        if m is None:
            check(state is None, f"cancel of a missing job returned {state}")
            return
        self.count(f"cancel: {m.state}")
        self.touched.add(job_id)
        if m.state is S.RUNNING:
            check(state is S.RUNNING, f"cancel of a running job returned {state}")
            m.cancel_requested = True
        elif m.state in QUEUED_STATES:
            check(state is S.CANCELLED, f"cancel of a {m.state} job returned {state}")
            self._cancelled(m, before, after)
        else:
            check(state is m.state, f"cancel of a {m.state} job returned {state}")

    def admin(self, what: str, queue: str | None, name: str | None, keep: int | None,
              age: float | None) -> None:
        """The rarer, sweeping moves."""
        if what == "pause or resume":
            self.pause_or_resume(queue or QUEUES[0])
        elif what == "prune":
            self.prune(keep, age)
        else:
            self.cancel_all(queue, name)

    def cancel_all(self, queue: str | None, name: str | None) -> None:
        matching = [m for m in self.model.jobs.values() if m.state in LIVE_STATES
                    and queue in (None, m.queue) and name in (None, m.name)]
        before = self.now()
        count = self.run(self.store.cancel_all(queue=queue, name=name))
        after = self.now()
        self.say(f"cancel_all(queue={queue}, name={name}) -> {count}")
        self.count("cancel_all")
        check(count == len(matching), f"cancel_all = {count}, expected {len(matching)}")
        for m in matching:
            self.touched.add(m.id)
            if m.state is S.RUNNING:
                m.cancel_requested = True
            else:
                self._cancelled(m, before, after)

    def _cancelled(self, m: MJob, before: float, after: float) -> None:
        record = self.get(m.id)
        check(record is not None and record.finished_at is not None
              and before <= record.finished_at <= after,
              f"cancelled {self.alias(m.id)}: {record}, expected finished in {before}..{after}")
        assert record is not None
        m.move(S.CANCELLED, "cancel")
        m.status, m.finished_at = 499, record.finished_at

    def pause_or_resume(self, queue: str) -> None:
        if queue in self.model.paused:
            self.run(self.store.resume(queue))
            self.model.paused.discard(queue)
            self.say(f"resume {queue}")
        else:
            self.run(self.store.pause(queue))
            self.model.paused.add(queue)
            self.say(f"pause {queue}")
        self.count("pause or resume")

    def prune(self, keep: int | None, age: float | None) -> None:
        before = self.now()
        finished_before = None if age is None else before - age
        doomed = self.model.prune_doomed(finished_before, keep)
        deleted = self.run(self.store.prune(finished_before=finished_before, keep=keep))
        self.say(f"prune(keep={keep}, age={age}) -> {deleted}: "
                 f"{sorted(map(self.alias, doomed))}")
        check(deleted == len(doomed), f"prune deleted {deleted}, expected {len(doomed)}")
        self.count("prune: deleted", len(doomed))
        for job_id in sorted(doomed):
            self.model.forget(job_id, "pruned")
            self.touched.add(job_id)

    def reap(self, worker_ttl: float) -> None:
        model = self.model
        before = self.now()
        requeued = self.run(self.store.reap(worker_ttl))
        after = self.now()
        present = {w.id for w in self.run(self.store.workers())}
        gone = set(model.beats) - present
        self.say(f"reap(worker_ttl={worker_ttl}) -> {requeued}; workers gone {sorted(gone)}")
        check(present <= set(model.beats),
              f"reap: workers {present - set(model.beats)} appeared from nowhere")
        for worker_id, beat in model.beats.items():
            if beat < before - worker_ttl:
                check(worker_id in gone, f"reap kept worker {worker_id}, silent since {beat} "
                      f"(clock {before}..{after})")
            elif beat >= after - worker_ttl:
                check(worker_id not in gone, f"reap forgot worker {worker_id}, which beat at "
                      f"{beat} (clock {before}..{after})")
        running = {r.id for r in self.run(self.store.list_jobs(state=S.RUNNING, limit=ALL))}
        moved = 0
        for m in model.running():
            allowed = model.reap_states(m, gone, before, after)
            state = S.RUNNING if m.id in running else self._state(m.id)
            check(state in allowed, f"after reap {self.alias(m.id)} (lease until "
                  f"{m.lease_expires_at}, owner {m.owner}) is {state}, not one of "
                  f"{set(allowed)} (clock {before}..{after})")
            self.count(f"reap: {m.state} -> {state}" + (" (window)" if len(allowed) > 1 else ""))
            if state is S.READY:
                self.say(f"  {self.alias(m.id)} requeued")
                m.move(S.READY, "reap")
                m.let_go()
                moved += 1
                self.touched.add(m.id)
            elif state is S.CANCELLED:
                # Its cancel was asked for: it ends as if acked so, and is not counted.
                self.say(f"  {self.alias(m.id)} cancelled")
                m.move(S.CANCELLED, "reap of a job whose cancel was asked for")
                m.let_go()
                m.status = 499
                self._finished_within(m, self.get(m.id), before, after)
                self.touched.add(m.id)
        check(requeued == moved, f"reap returned {requeued}, but {moved} jobs were requeued")
        for worker_id in gone:
            del model.beats[worker_id]
        self.count("reap: workers forgotten", len(gone))

    def _state(self, job_id: str) -> State | None:
        record = self.get(job_id)
        return None if record is None else record.state

    def time_passes(self, wait: float) -> None:
        """Wait (bounded) until the store's own clock is ``wait`` seconds further on."""

        async def past() -> float:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_LIMIT + wait
            target = await self.store.now() + wait
            while (seen := await self.store.now()) <= target:
                check(loop.time() < deadline,
                      f"the store's clock stayed at {seen}, short of {target}")
                # Sleep about as long as the clock still has to go, then look again.
                await asyncio.sleep(min(target - seen, 0.05) + 0.001)
            return seen

        self.say(f"time passes: {wait} s, store clock now {self.run(past())}")
        self.count("time passes")

    # -- the invariant ------------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        self.count("steps")
        self._steps += 1
        self.run(self._compare())

    async def _compare(self) -> None:
        store, model = self.store, self.model
        records = await store.list_jobs(limit=ALL)
        ids = [r.id for r in records]
        check(len(set(ids)) == len(ids), f"list_jobs repeats jobs: {ids}")
        missing, extra = set(model.jobs) - set(ids), set(ids) - set(model.jobs)
        check(not missing, f"jobs lost: {sorted(map(self.alias, missing))}")
        check(not extra, f"jobs the model does not know: {sorted(map(self.alias, extra))} "
              f"(gone: {[model.gone.get(j) for j in extra]})")
        for a, b in itertools.pairwise(records):
            check(a.enqueued_at <= b.enqueued_at,
                  f"list_jobs not oldest first: {self.alias(a.id)}, {self.alias(b.id)}")
        by_id = {r.id: r for r in records}
        for r in records:
            self._compare_job(model.jobs[r.id], r)
        # Listings by state (their own code path in redis): one state per step in turn, to
        # keep a step cheap.
        for state in [list(State)[self._steps % len(State)]]:
            listed = [r.id for r in await store.list_jobs(state=state, limit=ALL)]
            check(listed == [r.id for r in records if r.state is state],
                  f"list_jobs(state={state}) = {list(map(self.alias, listed))}, but the full "
                  "listing disagrees")
        expected = model.counts()
        stats = {s.name: s for s in await store.queue_stats()}
        check(set(stats) == set(expected),
              f"queue_stats has queues {sorted(stats)}, expected {sorted(expected)}")
        for name, counts in expected.items():
            got = {state: stats[name].counts.get(state, 0) for state in State}
            check(got == counts, f"queue_stats[{name}] = {got}, expected {counts}")
            check(stats[name].paused == (name in model.paused), f"queue {name} paused flag")
        check(await store.paused() == model.paused, "paused() disagrees with the model")
        workers = {w.id: w.last_beat for w in await store.workers()}
        check(set(workers) == set(model.beats),
              f"workers() = {sorted(workers)}, expected {sorted(model.beats)}")
        for worker_id, beat in workers.items():
            check(abs(beat - model.beats[worker_id]) < EPSILON, f"worker {worker_id} beat")
        for job_id in sorted(self.touched):
            got = await store.get(job_id)
            check(got == by_id.get(job_id),
                  f"get({self.alias(job_id)}) = {got}, listed as {by_id.get(job_id)}")
        self.touched.clear()

    def _compare_job(self, m: MJob, r: JobRecord) -> None:
        def same(what: str, got: Any, want: Any) -> None:
            check(got == want, f"{self.alias(m.id)} ({m.state}): {what} is {got!r}, "
                  f"expected {want!r}")

        same("state", r.state, m.state)
        same("queue", (r.queue, r.name, r.priority), (m.queue, m.name, m.priority))
        same("keys", (r.unique_key, r.idempotency_key), (m.unique_key, m.idempotency_key))
        same("attempt", r.attempt, m.attempt)
        same("status", r.status, m.status)
        if r.state is S.RUNNING:
            same("lease", (r.token, r.lease_owner, r.cancel_requested, r.checkin),
                 (m.token, m.owner, m.cancel_requested, m.checkin))
            assert r.lease_expires_at is not None and m.lease_expires_at is not None
            check(abs(r.lease_expires_at - m.lease_expires_at) < EPSILON,
                  f"{self.alias(m.id)}: lease until {r.lease_expires_at}, expected "
                  f"{m.lease_expires_at}")
        else:
            same("lease", (r.token, r.lease_owner, r.lease_expires_at), (None, None, None))
        if r.state in WAITING_STATES:
            same("run_at", r.run_at, m.run_at)
        if r.state in FINISHED_STATES:
            same("finished_at", r.finished_at, m.finished_at)


def _settlement(job_id: str, token: str, move: str, run_at: float) -> Settlement:
    """The Settlement that makes ``move`` (not checkin)."""
    state, status = FINISHING.get(move, (S.RETRYING, 500))
    if move == "release":
        state = S.READY
    elif move == "bury_delete":
        state, status = S.DEAD, 400
    return Settlement(job_id, token, state, status, result=b'"ok"' if move == "ack" else None,
                      run_at=run_at if move == "retry" else None, error="model",
                      keep=move != "bury_delete")


def _url_factory(backend: str, tmp_path: Path, used: list[str]) -> Callable[[], str]:
    make = BACKENDS[backend]
    counter = itertools.count()

    def factory() -> str:
        directory = tmp_path / f"example-{next(counter)}"
        directory.mkdir()
        url = make(directory)
        used.append(url)
        return url

    return factory


async def _drop_redis_namespaces(urls: list[str]) -> None:
    """Delete every key of the examples' namespaces: one scan of the server, not one each."""
    if not urls:
        return
    import redis.asyncio as aioredis

    namespaces = {dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(u).query))["namespace"]
                  for u in urls}
    client = aioredis.Redis.from_url(urls[0].split("?")[0])
    try:
        doomed = [key async for key in client.scan_iter(match="{whtest_*", count=10_000)
                  if key.decode()[1:].split("}", 1)[0] in namespaces]
        for start in range(0, len(doomed), 1000):
            await client.delete(*doomed[start:start + 1000])
    finally:
        await client.aclose()


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_backend_agrees_with_the_reference_model(backend: str, tmp_path: Path) -> None:
    used: list[str] = []
    factory = _url_factory(backend, tmp_path, used)

    async def reachable() -> None:
        # Fails (never skips) on an unreachable server, before Hypothesis starts.
        url = factory()
        store = create_backend(url)
        await store.open()
        await store.close()
        if url.startswith("postgres"):
            await cleanup(url)

    asyncio.run(reachable())
    events: Counter[str] = Counter()
    machine = type(f"{backend.capitalize()}Machine", (BackendMachine,),
                   {"make_url": staticmethod(factory), "events": events})
    try:
        run_state_machine_as_test(machine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
            print_blob=True, suppress_health_check=list(HealthCheck)))
    finally:
        if backend == "redis":
            asyncio.run(_drop_redis_namespaces(used))
    print(f"\n{backend}: {len(used) - 1} stores, exercised:")
    for what, n in sorted(events.items()):
        print(f"  {what}: {n}")
    # Not vacuous (given examples enough): jobs were claimed and ended, stale tokens refused.
    ended = sum(events[f"{move}: accepted"] for move in MOVES if move != "checkin")
    if EXAMPLES >= 10:
        assert events["claim: from ready"] and ended and events["stale: refused"], events
