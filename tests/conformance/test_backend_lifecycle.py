"""Opening and closing a backend, its clock, and its conformance to the protocol."""

from __future__ import annotations

import time

from workhorse.backends import create_backend
from workhorse.backends.base import Backend


async def test_the_backend_implements_the_protocol(backend, backend_url):
    assert isinstance(backend, Backend)
    assert backend.url == backend_url


async def test_open_and_close_are_idempotent(backend_url, make_job):
    store = create_backend(backend_url)
    await store.open()
    await store.open()
    try:
        job = make_job()
        await store.enqueue([job])
        assert (await store.get(job.id)).id == job.id
    finally:
        await store.close()
        await store.close()


async def test_the_clock_is_epoch_seconds(backend):
    # Generous: the store may run on another host whose clock drifts a little.
    assert abs(await backend.now() - time.time()) < 60
