"""search proxy: Optuna's gRPC storage proxy in front of the study's database, so that many
workers share its bounded pool (workers then take --storage grpc://HOST:PORT)."""
from __future__ import annotations

import sys

import click

from search.cli import options as o
from search.errors import SearchError


@click.command()
@o.storage
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, as in a container).")
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Requests served at once; also the most database connections the proxy opens.")
def proxy(storage, host, port, threads) -> None:
    """Serve the storage to many workers through one process (Optuna's gRPC storage proxy),
    until Ctrl-C or SIGTERM. Give the database URL by SEARCH_STORAGE rather than --storage, so
    its password is on no command line."""
    from search.stores.proxy import serve
    from search.stores.storage import check_storage, is_proxy, is_sqlite
    from search.urls import redact

    if is_proxy(storage):
        raise SearchError(f"--storage {storage}: the proxy serves a database (postgresql+psycopg://...), not "
                          f"another proxy")
    if is_sqlite(storage):
        # Optuna's own warning: its client caches study lists that SQLite changes under it.
        click.echo(f"note: --storage {redact(storage)} is SQLite; the proxy is meant for PostgreSQL "
                   f"(many machines)", err=True)
    check_storage(storage)
    sys.exit(serve(storage, host, port, threads, ready=lambda line: click.echo(line, err=True)))


COMMANDS = [proxy]
