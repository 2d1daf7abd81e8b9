"""Where the benchmarks keep their state: Redis keys, databases and store URLs."""

from __future__ import annotations

import os

#: The Redis server every Redis-based system uses, and the bench's own counters.
REDIS_HOST = os.environ.get("BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))
#: The Redis database the peers and the completion counters use; flushed between runs.
#: Nothing else on the server is flushed: workhorse's Redis keys are in their own namespace.
BENCH_DB = int(os.environ.get("BENCH_REDIS_DB", "15"))
BENCH_REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{BENCH_DB}"

#: workhorse's own Redis store: database 0, every key under this namespace.
WORKHORSE_REDIS_NAMESPACE = "whbench"
WORKHORSE_REDIS_URL = (f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
                       f"?namespace={WORKHORSE_REDIS_NAMESPACE}")
#: workhorse's PostgreSQL store: its tables live in this schema, dropped between runs.
POSTGRES_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
WORKHORSE_POSTGRES_SCHEMA = "whbench"
WORKHORSE_POSTGRES_URL = f"{POSTGRES_DSN}?schema={WORKHORSE_POSTGRES_SCHEMA}"
#: The PostgreSQL peers each get a database of their own on the same server, created on
#: first use; its public schema is dropped and created again between runs.
PROCRASTINATE_DATABASE = "whbench_procrastinate"
SAQ_POSTGRES_DATABASE = "whbench_saq"

#: The queue (or list, stream...) name every system is told to use.
QUEUE = "bench"

# Completion keys, in BENCH_DB. Jobs count themselves: each INCRs COUNT_KEY; the one that
# reads 1 stores its start time in FIRST_KEY, the one that reaches the target RPUSHes its
# end time to DONE_KEY, on which the driver waits with BLPOP. Latency jobs RPUSH their
# pickup latency to LATENCY_KEY.
COUNT_KEY = "bench:count"
FIRST_KEY = "bench:first"
DONE_KEY = "bench:done"
LATENCY_KEY = "bench:latency"
BENCH_KEYS = (COUNT_KEY, FIRST_KEY, DONE_KEY, LATENCY_KEY)

#: Environment variables the driver sets for workers and producers.
ENV_COUNTER = "BENCH_COUNTER"  # "redis" (default) or "local" (in-process, memory://)
ENV_WORKHORSE_URL = "WORKHORSE_URL"
