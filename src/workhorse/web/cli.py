"""``workhorse ui MODULE:APP``: serve the dashboard with uvicorn.

Imports nothing of the ``[web]`` extra until the command runs, so ``workhorse --help`` works
without it.
"""

from __future__ import annotations

import click


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5040, show_default=True, type=int)
@click.option("--token", envvar="WORKHORSE_UI_TOKEN", default=None,
              help="Require this bearer token (or log in with it). [env: WORKHORSE_UI_TOKEN]")
@click.option("--basic", envvar="WORKHORSE_UI_BASIC", default=None, metavar="USER:PASSWORD",
              help="Require HTTP basic auth. [env: WORKHORSE_UI_BASIC]")
@click.option("--root-path", default="", help="URL prefix when served behind a proxy.")
@click.option("--sample-interval", default=5.0, show_default=True, type=float,
              help="Seconds between the samples the charts are drawn from.")
@click.option("--refresh", default=3.0, show_default=True, type=float,
              help="Seconds between the updates of an open page.")
@click.option("--log-level", default="info", show_default=True)
def ui(app_spec: str, host: str, port: int, token: str | None, basic: str | None,
       root_path: str, sample_interval: float, refresh: float, log_level: str) -> None:
    """Serve the web dashboard of MODULE:APP (pages at /, JSON API at /api)."""
    from workhorse.cli import load_app  # here: workhorse.cli imports this module

    if token and basic:
        raise click.UsageError("give --token or --basic, not both")
    try:
        import uvicorn

        from workhorse.web import BearerToken, dashboard
        from workhorse.web.auth import Auth, parse_basic
    except ImportError as exc:
        raise click.ClickException(f"the dashboard needs {exc.name}: "
                                   "pip install 'workhorse[web]'") from exc
    auth: Auth | None = None
    try:
        if token:
            auth = BearerToken(token)
        elif basic:
            auth = parse_basic(basic)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if sample_interval <= 0 or refresh <= 0:
        raise click.BadParameter("--sample-interval and --refresh must be positive")
    app = load_app(app_spec)
    asgi = dashboard(app, auth=auth, sample_interval=sample_interval, refresh=refresh)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    guarded = " (token required)" if token else " (basic auth)" if basic else ""
    click.echo(f"workhorse dashboard: http://{shown}:{port}{root_path}/{guarded}", err=True)
    uvicorn.run(asgi, host=host, port=port, root_path=root_path, log_level=log_level.lower(),
                proxy_headers=bool(root_path))
