"""Sources: outside streams and tables whose messages run through workhorse handlers.

A source yields messages; the runtime (``Worker.consume``, ``LocalWorker.perform_receive``)
runs one job per message through the handler's full chain and lets the run's status decide
the acknowledgement. One module per source; the protocol is in ``workhorse.sources.base``.
Each source imports its client library (an optional dependency) only when first used.
"""

from workhorse.sources.base import Message as Message
from workhorse.sources.base import Source as Source
from workhorse.sources.base import SourceClosed as SourceClosed
from workhorse.sources.nats_jetstream import NatsJetStreamSource as NatsJetStreamSource
from workhorse.sources.postgres_table import PostgresTableSource as PostgresTableSource
from workhorse.sources.rabbitmq import RabbitMQSource as RabbitMQSource
from workhorse.sources.redis_streams import RedisStreamSource as RedisStreamSource

__all__ = ["Message", "NatsJetStreamSource", "PostgresTableSource", "RabbitMQSource",
           "RedisStreamSource", "Source", "SourceClosed"]
