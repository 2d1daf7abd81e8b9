"""saq on its PostgreSQL queue (``saq.queue.postgres.PostgresQueue``, psycopg 3).

The same tasks and worker command as ``saq_bench``, on a queue in a database of its own
(``bench.config.SAQ_POSTGRES_DATABASE``), emptied between runs; saq creates its tables
when a queue first connects.
"""

from __future__ import annotations

import redis
from saq.queue.postgres import PostgresQueue

from bench import pg
from bench.config import QUEUE, SAQ_POSTGRES_DATABASE

# The same tasks as saq on Redis: only the queue differs.
from bench.systems.saq_bench import SaqSystem, latency, noop

queue = PostgresQueue.from_url(pg.dsn(SAQ_POSTGRES_DATABASE), name=QUEUE)


#: What ``saq bench.systems.saq_postgres_bench.settings`` runs: library defaults otherwise.
settings = {"queue": queue, "functions": [noop, latency]}


class SaqPostgresSystem(SaqSystem):
    name = "saq-postgres"
    redis_based = False
    one_api = "PostgresQueue.enqueue"
    notes = ("saq-postgres is saq's `PostgresQueue` (a database of its own on the same "
             "server); like saq on Redis it has no bulk enqueue.",)
    queue = queue
    settings_module = __name__

    def flush(self, bench_redis: redis.Redis) -> None:
        pg.reset_database(SAQ_POSTGRES_DATABASE)


SYSTEM = SaqPostgresSystem()
