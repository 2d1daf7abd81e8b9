"""``workhorse grpc MODULE:APP``: serve the job service.

Imports nothing of the ``[grpc]`` extra until the command runs, so ``workhorse --help``
works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import click


@click.command("grpc")
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=50051, show_default=True, type=int, help="0: a free port.")
@click.option("--token", envvar="WORKHORSE_GRPC_TOKEN", default=None,
              help="Require 'authorization: Bearer TOKEN'. [env: WORKHORSE_GRPC_TOKEN]")
@click.option("--auth", "auth_spec", default=None, metavar="MODULE:FUNCTION",
              help="An auth hook, auth(metadata, method), instead of --token.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Server certificate chain (PEM); with --tls-key, serve TLS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="Server private key (PEM).")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False),
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--log-level", default="INFO", show_default=True)
def grpc_command(app_spec: str, host: str, port: int, token: str | None,
                 auth_spec: str | None, tls_cert: str | None, tls_key: str | None,
                 tls_client_ca: str | None, log_level: str) -> None:
    """Serve the gRPC job service (with health checking and reflection) for MODULE:APP."""
    from workhorse.cli import load_app, load_object  # here: workhorse.cli imports this

    if token and auth_spec:
        raise click.UsageError("give --token or --auth, not both")
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_client_ca and not tls_cert:
        raise click.UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    try:
        from workhorse.grpc.auth import AuthHook, bearer_token
        from workhorse.grpc.server import Server, ServerTLS
    except ImportError as exc:
        raise click.ClickException(f"the gRPC service needs {exc.name}: "
                                   "pip install 'workhorse[grpc]'") from exc
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    auth: AuthHook | None = None
    if token:
        auth = bearer_token(token)
    elif auth_spec:
        auth = load_object(auth_spec, "auth hook")
        if not callable(auth):
            raise click.BadParameter(f"the auth hook {auth_spec!r} is not callable")
    tls = ServerTLS.from_files(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key \
        else None
    app = load_app(app_spec)

    async def serve() -> None:
        server = Server(app, host=host, port=port, auth=auth, tls=tls)
        await server.start()
        click.echo(f"workhorse gRPC service on {host}:{server.port}", err=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(signum, stopping.set)
        try:
            await stopping.wait()
        finally:
            await server.stop()
            await app.close()

    try:
        asyncio.run(serve())
    except OSError as exc:  # a busy or forbidden port: say so, without a traceback
        raise click.ClickException(str(exc)) from exc

