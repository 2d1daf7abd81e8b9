"""``workhorse grpc``: its options are checked before anything is served."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from workhorse.cli import main


@pytest.mark.parametrize(("args", "message"), [
    (["--token", "t", "--auth", "m:f"], "--token or --auth"),
    (["--tls-key", "{certs}/server_key.pem"], "go together"),
    (["--tls-client-ca", "{certs}/ca.pem"], "needs --tls-cert"),
    (["--auth", "tests.grpc.grpcapp:nothing"], "cannot load the auth hook"),
    (["--auth", "tests.grpc.grpcapp:build"], "cannot load the app 'tests.grpc.grpcapp:missing'"),
])
def test_bad_options_are_refused(certs, args, message):
    args = [a.format(certs=certs.folder) for a in args]
    result = CliRunner().invoke(main, ["grpc", "tests.grpc.grpcapp:missing", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_busy_port_is_an_error_not_a_traceback():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["grpc", "tests.grpc.grpcapp:app", "--port",
                                           str(port)])
    assert result.exit_code == 1, result.output
    assert f"Error: cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
