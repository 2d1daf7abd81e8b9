"""Where the benchmarks keep their state: databases, store URLs and environment variables."""

from __future__ import annotations

import os

#: The Redis server every Redis-based system uses.
REDIS_HOST = os.environ.get("BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))
#: The Redis database the peers use; flushed between runs.
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

#: Environment variables the driver sets for workers and producers.
ENV_COUNTER = "BENCH_COUNTER"  # "local": count in process (memory://); else the tally
#: The path of the driver's Unix socket, to which every job reports (``bench.counter``).
ENV_TALLY = "BENCH_TALLY"
ENV_WORKHORSE_URL = "WORKHORSE_URL"
