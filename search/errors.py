"""The one error type a user sees: one line on stderr, exit code 2, never a traceback."""
from __future__ import annotations

import click


class SearchError(click.ClickException):
    """A problem the user must fix. Raised anywhere in the search package; click prints it
    (`error: <message>`) and exits 2, so no command needs a wrapper of its own."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)
