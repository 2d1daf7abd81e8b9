"""TLS and mutual TLS with certificates the tests make (see certs.py)."""

from __future__ import annotations

import grpc
import pytest

import workhorse as wh
from tests.grpc.conftest import bounded

pytestmark = pytest.mark.parametrize("app", ["memory"], indirect=True)


def tls(certs, *, mutual: bool = False) -> wh.grpc.ServerTLS:
    return wh.grpc.ServerTLS(certs.server_cert, certs.server_key,
                             certs.ca if mutual else None)


async def refused(client) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await bounded(client.stats())
    return error.value


async def test_tls_serves_clients_that_trust_its_ca(app, serve, connect, certs):
    server = await serve(app, tls=tls(certs))
    client = connect(server, ca=certs.ca)
    job_id = await client.enqueue("add", {"a": 1})
    assert (await client.get_job(job_id)).name == "add"
    from_files = connect(server, ca=certs.folder / "ca.pem")
    assert (await from_files.stats()).counts["ready"] == 1


async def test_plaintext_and_untrusting_clients_fail(app, serve, connect, certs):
    server = await serve(app, tls=tls(certs))
    assert (await refused(connect(server))).code() is grpc.StatusCode.UNAVAILABLE
    assert (await refused(connect(server, ca=certs.other_ca))).code() is \
        grpc.StatusCode.UNAVAILABLE
    assert (await app.admin.stats()).counts["ready"] == 0


async def test_mutual_tls_requires_a_client_certificate(app, serve, connect, certs):
    server = await serve(app, tls=tls(certs, mutual=True))
    without = connect(server, ca=certs.ca)
    assert (await refused(without)).code() is grpc.StatusCode.UNAVAILABLE
    client = connect(server, ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    assert await client.enqueue("add", {"a": 1}) is not None
    # A certificate the server's CA did not sign is refused too.
    impostor = connect(server, ca=certs.ca, cert=certs.stranger_cert, key=certs.stranger_key)
    assert (await refused(impostor)).code() is grpc.StatusCode.UNAVAILABLE


async def test_tls_files_load(app, serve, connect, certs):
    folder = certs.folder
    server_tls = wh.grpc.ServerTLS.from_files(folder / "server_cert.pem",
                                              folder / "server_key.pem", folder / "ca.pem")
    server = await serve(app, tls=server_tls)
    client = connect(server, ca=folder / "ca.pem", cert=folder / "client_cert.pem",
                     key=folder / "client_key.pem")
    assert (await client.stats()).queues == 0
