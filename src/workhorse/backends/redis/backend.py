"""The redis backend: jobs in Redis, every state move one Lua script.

Layout of a namespace (every key starts with the hash tag ``{ns}:``, so a script touches one
slot of a Redis Cluster; see common.lua for the index moves):

- ``job:<id>`` hash: the job's fields (absent when None); finished ones expire (result TTL).
- ``queue:<queue>:<name>`` zset: READY jobs of one handler in one queue, score -priority,
  member "<16-digit enqueue seq><id>"; ``names:<queue>`` set: the names with READY jobs.
- ``scheduled:<queue>``, ``retrying:<queue>`` zsets by run_at; ``running`` zset by lease
  expiry with ``running_by_queue`` / ``running_by_name`` count hashes; ``succeeded|dead|
  cancelled:<queue>`` and ``finished`` zsets by finish time; ``jobs`` zset of every job by
  enqueue seq (``seq`` counter).
- ``queues``, ``paused`` sets; ``unique:<key>`` / ``idem:<key>`` strings naming a job;
  ``workers`` hash and ``beats`` zset; ``buckets`` (rate limits) and ``blocked`` (handlers a
  claim found at max concurrency) hashes; ``watch`` hash and ``events`` channel (finishes);
  ``wake:<queue>`` lists (idle workers); ``results`` channel and ``results:listening`` key
  (result feeds, see results.py); ``version``.

Retries: redis-py itself retries nothing. Reads and the moves that are idempotent when run
twice (enqueue, which finds its job ids already written; heartbeat; checkin; cancel; pause and
resume) are retried on connection errors with redis-py's ``Retry``. Claim, settle (ack,
retry, bury, release), cancel_all, reap and prune are not: run twice they could lease twice
or report a fresh move as stale, so a failure raises StoreError and the caller decides (the
worker retries with backoff; a settle repeated after it was applied reports False and
changes nothing, a repeated claim leaves its first jobs to lease expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workhorse import codec
from workhorse.backends.base import (
    WORKER_LOST,
    AttemptRecord,
    Enqueued,
    EnqueueOutcome,
    Handoff,
    HeartbeatReply,
    JobRecord,
    Limits,
    NewJob,
    QueueStats,
    ResultFeed,
    ScanPage,
    Settlement,
    State,
    WorkerInfo,
)
from workhorse.backends.common import new_token
from workhorse.backends.redis import admin, records, results
from workhorse.backends.redis.loops import LoopClient
from workhorse.backends.redis.records import number, opt
from workhorse.backends.redis.settings import DEFAULT_RESULT_TTL, parse_url
from workhorse.errors import ConfigurationError, QueueFull, StoreError, StoreFull
from workhorse.tasks import cancellable

T = TypeVar("T")
log = logging.getLogger("workhorse.redis")

#: The data layout this code writes; open() refuses a namespace written by a newer one.
LAYOUT_VERSION = 1
#: How many queued jobs one cancel_all or prune script call handles.
_CHUNK = 1000
#: Waits shorter than this are slept here: a blocking pop's timeout fires on Redis's clock
#: tick (up to 1/hz late, 100 ms by default), which would be too coarse for them.
_SHORT_WAIT = 0.25
#: A standing claim outlives the wait it was left for by this much (seconds), so that it
#: cannot lapse while the waiter still blocks; unwait.lua ends it as the wait ends.
_HOLD_MARGIN = 1.0
_OUTCOMES = {b"created": EnqueueOutcome.CREATED, b"duplicate": EnqueueOutcome.DUPLICATE,
             b"existing": EnqueueOutcome.EXISTING}


class RedisBackend:
    """A job store in Redis; see ``Backend`` for what each verb guarantees.

    ``redis://[:password@]host:port/db?namespace=workhorse&result_ttl=604800`` (``rediss://``
    for TLS; other query parameters, e.g. ``ssl_cert_reqs``, go to redis-py). Finished jobs
    expire after ``result_ttl`` seconds (None: kept until pruned); the URL's value wins.
    """

    def __init__(self, url: str, *, result_ttl: float | None = DEFAULT_RESULT_TTL) -> None:
        self.url = url
        self._settings = parse_url(url, result_ttl=result_ttl)
        self._keys = [self._settings.prefix]
        ttl = self._settings.result_ttl
        self._ttl_ms = "0" if ttl is None else str(max(1, round(ttl * 1000)))
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, LoopClient] = {}
        self._retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2)
        #: time.monotonic() when a rate-limited handler that blocked a claim has a token again.
        self._token_at: float | None = None
        timeout = self._settings.socket_timeout
        #: Longest single blocking pop: it must end before the socket timeout does.
        self._longest_block = None if timeout is None else max(_SHORT_WAIT, timeout / 2)

    # -- connections ----------------------------------------------------------------------

    def _client(self) -> LoopClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._loops.get(loop)
            if client is None:
                client = self._loops[loop] = LoopClient(self._settings, self._forget)
        return client

    def _forget(self, client: LoopClient) -> None:
        with self._lock:
            if self._loops.get(client.loop) is client:
                del self._loops[client.loop]

    async def _call(self, call: Callable[[], Awaitable[T]], *, idempotent: bool,
                    hold_cancel: bool = False) -> T:
        """``call()``, retried on connection errors if ``idempotent``; errors -> StoreError.

        A cancel that redis-py swallowed during the call is raised after it (``cancellable``),
        unless ``hold_cancel``: then the caller, which must not lose the reply, raises it."""
        try:
            attempt = self._retry.call_with_retry(call, _ignore) if idempotent else call()
            return await (attempt if hold_cancel else cancellable(attempt))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreError(f"cannot reach Redis at {self._settings.location}: {exc}") from exc
        except RedisOutOfMemoryError as exc:
            # Out of memory, Redis refuses a script's first write, never a later one: a script
            # refused so has written nothing.
            raise StoreFull(f"Redis at {self._settings.location} is out of memory: {exc}") \
                from exc
        except RedisError as exc:
            raise StoreError(f"Redis at {self._settings.location} failed: {exc}") from exc

    async def _run(self, name: str, args: Sequence[Any], *, idempotent: bool = False,
                   hold_cancel: bool = False) -> Any:
        scripts = self._client().scripts
        argv = [self._ttl_ms, *args]
        return await self._call(lambda: scripts.run(name, self._keys, argv),
                                idempotent=idempotent, hold_cancel=hold_cancel)

    def _key(self, suffix: str) -> str:
        return self._settings.prefix + suffix

    async def open(self) -> None:
        version = int(await self._run("open", [LAYOUT_VERSION], idempotent=True))
        if version > LAYOUT_VERSION:
            raise StoreError(
                f"the Redis namespace {self._settings.namespace!r} has data layout {version}, "
                f"newer than this workhorse knows ({LAYOUT_VERSION}); upgrade workhorse")

    async def close(self) -> None:
        with self._lock:
            clients = list(self._loops.values())
        for client in clients:
            await client.close()

    async def now(self) -> float:
        client = self._client().client
        seconds, micros = await self._call(client.time, idempotent=True)
        return float(f"{seconds}.{micros:06d}")  # as the scripts write times

    # -- producing and consuming --------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[NewJob], *, max_sizes: Mapping[str, int] | None = None,
        connection: object | None = None,
    ) -> list[Enqueued]:
        if connection is not None:
            raise ConfigurationError(
                "transactional enqueue (connection=) is not supported by the redis backend")
        if not jobs:
            return []
        args: list[Any] = [codec.encode(dict(max_sizes or {}), what="max_sizes")]
        for job in jobs:
            args.extend(records.job_args(job))
        reply = await self._run("enqueue", args, idempotent=True)
        if reply and reply[0] == b"!full":
            _, queue, live, limit = reply
            raise QueueFull(f"queue {records.text(queue)!r} is full ({live} of {limit} live jobs)")
        return [Enqueued(records.text(job_id), _OUTCOMES[outcome], State(records.text(state)))
                for job_id, outcome, state in reply]

    async def claim(
        self, worker_id: str, queues: Sequence[str], limit: int, lease: float,
        limits: Mapping[str, Limits] | None = None,
    ) -> list[JobRecord]:
        wanted = list(dict.fromkeys(queues))
        if limit <= 0 or not wanted:
            return []
        token_wait, rows = await self._run("claim", [
            worker_id, limit, number(lease), new_token(), records.limits_arg(limits), *wanted])
        if token_wait:
            self._token_at = time.monotonic() + float(token_wait)
        return records.claimed_records(rows)

    async def ack(self, job_id: str, token: str, *, state: State, status: int,
                  result: bytes | None = None) -> bool:
        if state not in (State.SUCCEEDED, State.CANCELLED):
            raise ValueError(f"ack finishes a job as succeeded or cancelled, not {state}")
        return await self._settle_one(Settlement(job_id, token, state, status, result=result))

    async def retry(self, job_id: str, token: str, *, run_at: float, status: int,
                    error: str | None, traceback: str | None) -> bool:
        return await self._settle_one(Settlement(job_id, token, State.RETRYING, status,
                                                 run_at=run_at, error=error,
                                                 traceback=traceback))

    async def bury(self, job_id: str, token: str, *, status: int, error: str | None,
                   traceback: str | None, keep: bool = True) -> bool:
        return await self._settle_one(Settlement(job_id, token, State.DEAD, status,
                                                 error=error, traceback=traceback, keep=keep))

    async def release(self, job_id: str, token: str) -> bool:
        return await self._settle_one(Settlement(job_id, token, State.READY))

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        args: list[Any] = []
        for settlement in settlements:
            args.extend(records.settlement_args(settlement))
        return [bool(done) for done in await self._run("settle", args)]

    async def _settle_one(self, settlement: Settlement) -> bool:
        [done] = await self.settle([settlement])
        return done

    async def checkin(self, job_id: str, token: str, message: str) -> bool:
        return bool(await self._run("checkin", [job_id, token, message], idempotent=True))

    # -- control ----------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> State | None:
        state = await self._run("cancel", [job_id], idempotent=True)
        return None if state is None else State(records.text(state))

    async def cancel_all(self, *, queue: str | None = None, name: str | None = None) -> int:
        total, first = 0, True
        while True:
            flagged, cancelled, more = await self._run(
                "cancel_all", [opt(queue), opt(name), "1" if first else "0", _CHUNK])
            total += int(flagged) + int(cancelled)
            first = False
            if not more:
                return total

    async def heartbeat(self, worker: WorkerInfo, job_ids: Sequence[str],
                        lease: float) -> HeartbeatReply:
        beat, cancel, lost = await self._run(
            "heartbeat", [worker.id, records.worker_info(worker), number(lease), *job_ids],
            idempotent=True)
        worker.last_beat = float(beat)
        return HeartbeatReply(cancel=frozenset(map(records.text, cancel)),
                              lost=frozenset(map(records.text, lost)))

    async def unregister(self, worker_id: str) -> None:
        await self._run("unregister", [worker_id], idempotent=True)

    async def reap(self, worker_ttl: float) -> int:
        return int(await self._run("reap", [number(worker_ttl), WORKER_LOST]))

    async def pause(self, queue: str) -> None:
        await self._run("pause", [queue], idempotent=True)

    async def resume(self, queue: str) -> None:
        await self._run("resume", [queue], idempotent=True)

    async def prune(self, *, finished_before: float | None = None,
                    keep: int | None = None) -> int:
        if finished_before is None and keep is None:
            return 0
        before = None if finished_before is None else number(finished_before)
        kept = None if keep is None else str(max(0, keep))
        deleted = 0
        while True:
            count, more = await self._run("prune", [opt(before), opt(kept), _CHUNK])
            deleted += int(count)
            if not more:
                return deleted

    # -- reading ------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        client = self._client().client
        raw = cast("dict[bytes, bytes]", await self._call(
            lambda: client.hgetall(self._key("job:" + job_id)), idempotent=True))
        return records.job_record({records.text(k): v for k, v in raw.items()})

    async def list_jobs(self, *, state: State | None = None, queue: str | None = None,
                        name: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[JobRecord]:
        rows = await self._run("list", [opt(None if state is None else state.value), opt(queue),
                                        opt(name), max(0, limit), max(0, offset)],
                               idempotent=True)
        return records.job_records(rows)

    async def queue_stats(self) -> list[QueueStats]:
        return records.queue_stats(await self._run("stats", [], idempotent=True))

    async def workers(self) -> list[WorkerInfo]:
        return records.worker_infos(await self._run("workers", [], idempotent=True))

    async def paused(self) -> set[str]:
        client = self._client().client
        members = cast("set[bytes]", await self._call(
            lambda: client.smembers(self._key("paused")), idempotent=True))
        return {records.text(member) for member in members}

    # -- admin ----------------------------------------------------------------------------

    async def count_jobs(self, *, state: State | None = None, queue: str | None = None,
                         name: str | None = None) -> int:
        return int(await self._run("count", [opt(None if state is None else state.value),
                                             opt(queue), opt(name)], idempotent=True))

    async def make_ready(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        return await self._in_chunks("make_ready", states, job_id, queue, name, limit)

    async def delete_jobs(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        return await self._in_chunks("delete", states, job_id, queue, name, limit)

    async def _in_chunks(self, script: str, states: Collection[State], job_id: str | None,
                         queue: str | None, name: str | None, limit: int | None) -> int:
        wanted = admin.states_arg(states)
        total = 0
        while limit is None or total < limit:
            chunk = _CHUNK if limit is None else min(_CHUNK, limit - total)
            count, more = await self._run(script, [wanted, opt(job_id), opt(queue), opt(name),
                                                   chunk])
            total += int(count)
            if not more:
                break
        return total

    async def attempt_history(self, job_ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        return admin.histories(ids, await self._run("history", ids, idempotent=True))

    async def scan(self, *, after: int = 0, limit: int = 500) -> ScanPage:
        return admin.scan_page(await self._run("scan", [after, max(0, limit)],
                                               idempotent=True))

    async def restore(
        self, records: Sequence[JobRecord],
        histories: Mapping[str, Sequence[AttemptRecord]] | None = None,
    ) -> list[bool]:
        args: list[Any] = []
        for record in records:
            args.extend(admin.restore_args(record, (histories or {}).get(record.id)))
        if not args:
            return []
        return [bool(done) for done in await self._run("restore", args)]

    # -- waiting --------------------------------------------------------------------------

    async def wait_for_work(self, queues: Sequence[str], timeout: float, *,
                            handoff: Handoff | None = None) -> list[JobRecord]:
        # Idle waiters block in BLMPOP on the ``wake:<queue>`` lists. A move that makes work
        # ready pushes one token (if none is pending), which wakes exactly one waiter rather
        # than every idle worker of the cluster as a broadcast would; a claim that fills up
        # while work remains passes the token on. Due times are read from the store (its
        # clock) and bound the block. A rate-limited handler that refused a claim here
        # bounds it too, by when its next token comes.
        #
        # With ``handoff``, the waiter also leaves a standing claim while it blocks, and
        # blocks on its inbox too: an enqueue of a lone job then leases the job to it and
        # pushes it there (enqueue.lua), so the job starts one round trip sooner than after
        # a wake-up and a claim. Leaving ends the standing claim and takes what it got.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        wanted = list(dict.fromkeys(queues))
        client = self._client()
        if not wanted:
            await asyncio.sleep(max(0.0, timeout))
            return []
        # redis-py can swallow a cancel in a blocking pop: the cancel is counted here and
        # raised once the wait is over, and nothing the wait was handed is lost with it.
        task = asyncio.current_task()
        before = 0 if task is None else task.cancelling()

        def cancelled() -> bool:
            return task is not None and task.cancelling() > before

        if handoff is None:
            due = await self._run("next_due", ["", "", "", "", "", *wanted], idempotent=True)
            await self._block(client, [], wanted, deadline, due, cancelled)
            if cancelled():
                raise asyncio.CancelledError
            return []
        hold = math.ceil((max(0.0, timeout) + _HOLD_MARGIN) * 1000)
        standing = [handoff.worker_id, number(handoff.lease), new_token(),
                    records.limits_arg(handoff.limits), str(hold)]
        inbox = self._key("inbox:" + handoff.worker_id)
        popped: list[bytes] = []
        try:
            due = await self._run("next_due", [*standing, *wanted], idempotent=True)
            popped = await self._block(client, [inbox], wanted, deadline, due, cancelled)
            if not popped:
                popped = await self._run("unwait", [handoff.worker_id], idempotent=True,
                                         hold_cancel=True)
            if cancelled():
                raise asyncio.CancelledError
        except BaseException:
            await self._abandon(handoff.worker_id, records.handed_records(popped))
            raise
        return records.handed_records(popped)

    async def _block(self, client: LoopClient, first: list[str], queues: list[str],
                     deadline: float, due: Any, cancelled: Callable[[], bool]) -> list[bytes]:
        """Block until a token on a wake list, the deadline (bounded by ``due`` and the
        rate-limit wait) or ``cancelled()``; what was popped from a list of ``first``, if it
        was one of those."""
        loop = asyncio.get_running_loop()
        if due is not None:
            deadline = min(deadline, loop.time() + max(0.0, float(due)))
        token_at, self._token_at = self._token_at, None
        if token_at is not None:
            deadline = min(deadline, loop.time() + max(0.0, token_at - time.monotonic()))
        keys = [*first, *(self._key("wake:" + queue) for queue in queues)]
        while not client.closed and not cancelled():
            remaining = deadline - loop.time()
            if remaining < _SHORT_WAIT:
                await asyncio.sleep(max(0.0, remaining))
                return []
            block = remaining if self._longest_block is None else \
                min(remaining, self._longest_block)
            try:
                popped = await client.client.blmpop(
                    block, len(keys), *keys, direction="LEFT", count=records.CLAIMED_COUNT)
            except (RedisError, OSError) as exc:
                if client.closed:
                    return []  # the backend was closed meanwhile
                raise StoreError(f"cannot reach Redis at {self._settings.location}: {exc}") \
                    from exc
            if popped is not None:
                key, values = cast("tuple[bytes, list[bytes]]", popped)
                return values if records.text(key) in first else []
        return []

    async def _abandon(self, worker_id: str, popped: list[JobRecord]) -> None:
        """End a standing claim of a wait that was cancelled or failed, handing back the
        jobs it was given (``popped``: those it had already taken from its inbox). Best
        effort: a job it cannot hand back (Redis went away) runs again once its lease runs
        out, as a lost worker's would."""
        try:
            # hold_cancel: the caller's task is being cancelled, and the replies must not be
            # dropped for it.
            handed = popped + records.handed_records(await self._run(
                "unwait", [worker_id], idempotent=True, hold_cancel=True))
            if handed:
                await self._run("settle", [
                    arg for job in handed for arg in records.settlement_args(
                        Settlement(job.id, job.token or "", State.READY))], hold_cancel=True)
        except Exception as exc:
            log.warning("could not end worker %s's standing claim: %s", worker_id, exc)

    async def open_result_feed(self) -> ResultFeed:
        # Pub/sub from the scripts' finish(), gated by a key (see results.py): one EXISTS
        # per finish while nobody listens.
        client = self._client()
        try:
            return await results.open_feed(client.client, self._settings.prefix, self.get)
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot reach Redis at {self._settings.location}: {exc}") \
                from exc

    async def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        # Subscribe first, then register interest and look at the job in one script, then
        # wait for its finish event: a finish between the look and the wait is not missed.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        client = self._client()
        listener = client.listener()
        woken = listener.watch(job_id)
        watching = False
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for may lose a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await listener.ready.wait()
            reply = await self._run("watch", [job_id])
            if reply is None or isinstance(reply, list):
                return None if reply is None else records.job_record(records.fields(reply))
            watching = True
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await woken.wait()
                woken.clear()
                if client.closed:
                    raise StoreError(f"the Redis store {self._settings.location} was closed")
                record = await self.get(job_id)
                if record is None or record.state.finished:
                    return record
                if deadline - loop.time() <= 0:
                    return None
        finally:
            listener.unwatch(job_id, woken)
            if watching and not client.closed:
                with contextlib.suppress(StoreError):
                    await self._run("unwatch", [job_id])


async def _ignore(_: Exception) -> None:
    """Retry's failure callback: redis-py has already dropped the failed connection."""
