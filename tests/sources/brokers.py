"""Helpers of the NATS and RabbitMQ source tests: names private to one test, clients on the
local servers, cleanup, and a private nats-server for the reconnect test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import nats
from nats.js.client import JetStreamContext

from tests.faults.servers import spare_port
from workhorse.sources.rabbitmq import DELAY_STEPS

NATS_URL = os.environ.get("WORKHORSE_TEST_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("WORKHORSE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_SERVER = os.environ.get("NATS_SERVER", "/usr/sbin/nats-server")


@dataclasses.dataclass
class NatsNames:
    """A stream, subject, consumer and dead subject private to one test."""

    stream: str
    subject: str
    durable: str
    dead_subject: str
    dead_stream: str

    @classmethod
    def fresh(cls) -> NatsNames:
        tag = uuid.uuid4().hex[:12]
        return cls(f"WHTEST_{tag}", f"whtest.{tag}", "workers", f"whtest.{tag}.dead",
                   f"WHTEST_{tag}_dead")


@contextlib.asynccontextmanager
async def jetstream(url: str = NATS_URL) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on a connection to ``url``, closed after the block."""
    nc = await nats.connect(url, max_reconnect_attempts=1)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def drop_streams(js: JetStreamContext, names: NatsNames) -> None:
    for stream in (names.stream, names.dead_stream):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)


async def publish_json(js: JetStreamContext, subject: str, body: Any,
                       headers: dict[str, str] | None = None) -> None:
    await js.publish(subject, json.dumps(body).encode(), headers=headers)


async def stream_messages(js: JetStreamContext, stream: str) -> list[Any]:
    """Every message of ``stream`` (read without consuming)."""
    info = await js.stream_info(stream)
    return [await js.get_msg(stream, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
            if info.state.messages]


async def dead_messages(js: JetStreamContext, names: NatsNames) -> list[Any]:
    """Every message of the test's dead stream."""
    return await stream_messages(js, names.dead_stream)


@dataclasses.dataclass
class RabbitNames:
    """A queue (and its dead-letter exchange, dead queue, delay queue) private to one test."""

    queue: str
    dlx: str

    @property
    def dead_queue(self) -> str:
        return f"{self.queue}.dead"

    @property
    def delay_queue(self) -> str:
        return f"{self.queue}.delay"

    @classmethod
    def fresh(cls) -> RabbitNames:
        tag = uuid.uuid4().hex[:12]
        return cls(f"whtest.{tag}", f"whtest.{tag}.dlx")


@contextlib.asynccontextmanager
async def amqp_channel(url: str = AMQP_URL) -> AsyncIterator[Any]:
    """A channel (publisher confirms on) on a connection to ``url``, closed after the block."""
    connection = await aio_pika.connect(url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def drop_queues(channel: Any, names: RabbitNames) -> None:
    steps = [f"{names.delay_queue}.{step}" for step in DELAY_STEPS]
    for queue in (names.queue, names.dead_queue, names.delay_queue, *steps):
        await channel.queue_delete(queue)
    await channel.exchange_delete(names.dlx)


async def publish_amqp(channel: Any, queue: str, body: Any,
                       headers: dict[str, str] | None = None) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(json.dumps(body).encode(), headers=headers), routing_key=queue)


async def queue_depth(channel: Any, queue: str) -> int:
    """Messages ready in ``queue`` (not counting unacked ones)."""
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count)


class NatsServer:
    """A nats-server of our own with JetStream in ``directory``, on a spare port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = spare_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.directory / "nats.log", "ab") as out:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js",
                 "-sd", str(self.directory / "js")], stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    if conn.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    stop = kill


class TcpProxy:
    """A TCP forwarder to ``host:port`` on a spare local port, whose connections a test can
    cut: the server "goes away" for its clients while the shared server keeps running."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = spare_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        #: Connections accepted so far.
        self.accepted = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Close every connection made through the proxy (new ones are still accepted)."""
        for writer in list(self._writers):
            writer.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.cut()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
