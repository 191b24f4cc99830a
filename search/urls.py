"""Storage URLs and tracking URIs as they may be shown: with any password masked.

A URL like postgresql+psycopg://user:PASSWORD@host/db must never reach a command line (ps
shows it to every user of the machine), a log line, an MLflow parameter or tag, or a study's
stored settings. Workers get the real one on their standard input."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact(url: str | None) -> str | None:
    """The URL with its password replaced by ***; anything without one unchanged."""
    if not url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def is_redacted(url: str | None) -> bool:
    return bool(url) and f":{MASK}@" in url


def scrub(text: str, *urls: str | None) -> str:
    """text with the passwords of urls masked (a driver's error message may quote its URL)."""
    from urllib.parse import unquote

    for url in urls:
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            continue
        if password:
            for form in {password, unquote(password)}:
                text = text.replace(form, MASK)
    return text


def absolute_sqlite(url: str) -> str:
    """sqlite:///relative.db made absolute, so the URL means the same file from any folder."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or url[len(prefix):] in ("", ":memory:"):
        return url
    from pathlib import Path

    return prefix + str(Path(url[len(prefix):]).expanduser().resolve())
