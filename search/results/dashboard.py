"""optuna-dashboard on 127.0.0.1 for `search ui`, reading its storage URL from standard input.

`optuna-dashboard URL` would put the URL, password included, on a command line that ps shows
to every user of the machine. Run as `python -m search.results.dashboard --port N < url`."""
from __future__ import annotations

import argparse
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

HOST = "127.0.0.1"


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection never holds up the stop


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002  (the base class's name)
        pass  # a line per request would fill the log `search ui` throws away anyway


def serve(storage: str, port: int) -> None:
    from optuna_dashboard import wsgi

    from search.stores.storage import is_proxy, open_storage

    # optuna-dashboard opens a URL as an RDB; a grpc:// one is handed over opened.
    make_server(HOST, port, wsgi(open_storage(storage) if is_proxy(storage) else storage), server_class=_ThreadedServer, handler_class=_QuietHandler).serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    storage = sys.stdin.readline().strip()
    if not storage:
        sys.exit("no storage URL on standard input")
    serve(storage, args.port)


if __name__ == "__main__":
    main()
