"""Storage URLs and tracking URIs as they may be shown: with every credential masked.

A URL like postgresql+psycopg://user:PASSWORD@host/db must never reach a command line (ps
shows it to every user of the machine), a log line, an MLflow parameter or tag, or a study's
stored settings. Workers get the real one on their standard input.

SQLAlchemy (Optuna's storage, MLflow's database stores) and MLflow's HTTP client take a
password in two places: the user info (user:PASSWORD@host, percent-encoded or not) and the
query (?password=..., &passwd=..., odbc_connect=...;PWD=...;). Both are masked. The two
parsers disagree on a password with an unencoded @ (urlsplit: up to the last @, SQLAlchemy:
up to the first), so the user info is read both ways and `normalise` encodes it the way the
user meant, before any library sees it."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, unquote

MASK = "***"
MIN_PIECE = 3  # shorter pieces of a password split at @ are masked only where they stand beside an @

# The user info as urlsplit reads it (the password ends at the last @ of the authority), or,
# for a password holding /, ? or #, as SQLAlchemy does (it ends at the first @ followed by a
# host).
_USERINFO = (
    re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://(?P<user>[^:/?#]*):)(?P<pw>[^/?#]*)(?P<tail>@[^@/?#]*(?:[/?#].*)?)$",
               re.DOTALL),
    re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://(?P<user>[^:/?#@]*):)(?P<pw>.*?)(?P<tail>@[^@/?#]*(?:[/?#].*)?)$",
               re.DOTALL),
)
# Query arguments (and ODBC connection-string keys inside odbc_connect) that carry a secret.
_SECRET_KEYS = r"password|passwd|pwd|pass|sslpassword|token|access_token|api_key|apikey|secret|client_secret"
_QUERY_SECRET = re.compile(
    rf"(?P<key>(?:[?&;]|%3B)(?:{_SECRET_KEYS})(?:=|%3D))(?P<value>.*?)(?=[&;#]|%3B|%26|$)", re.IGNORECASE | re.DOTALL)


def _userinfo(url: str) -> re.Match | None:
    for pattern in _USERINFO:
        match = pattern.match(url)
        if match:
            return match
    return None


def secrets(url: str | None) -> list[str]:
    """The credentials in url, as written (an empty list when there are none)."""
    if not url:
        return []
    found = []
    match = _userinfo(url)
    if match and match["pw"]:
        found.append(match["pw"])
    query_from = match.end("pw") if match else 0
    found += [m["value"] for m in _QUERY_SECRET.finditer(url, query_from) if m["value"]]
    return found


def redact(url: str | None) -> str | None:
    """The URL with each credential replaced by ***; anything without one unchanged."""
    if not url:
        return url
    match = _userinfo(url)
    if match and match["pw"]:
        url = f"{match['head']}{MASK}{match['tail']}"
        match = _userinfo(url)
    start = match.end("pw") if match else 0
    return url[:start] + _QUERY_SECRET.sub(lambda m: m["key"] + (MASK if m["value"] else ""), url[start:])


def is_redacted(url: str | None) -> bool:
    """Whether url had its credentials masked (a study keeps its tracking URI that way)."""
    return bool(url) and MASK in secrets(url)


def normalise(url: str | None) -> str | None:
    """url with a password that holds @, /, ? or #, and any @ of its query, percent-encoded,
    so every parser reads what the user wrote. SQLAlchemy takes user:p@ss@host as password p
    on host ss@host, and host:5432/db?password=p@ss as password 5432/db?password=p on host ss,
    and prints that host in its error."""
    if not url:
        return url
    match = _userinfo(url)
    if match and re.search(r"[@/?#]", match["pw"]):
        url = f"{match['head']}{quote(unquote(match['pw']), safe='')}{match['tail']}"
        match = _userinfo(url)
    authority_end = match.end("pw") if match else url.find("://") + 3
    query = url.find("?", authority_end)
    if query < 0 or "@" not in url[query:]:
        return url
    return url[:query] + url[query:].replace("@", "%40")


def scrub(text: str, *urls: str | None) -> str:
    """text with the credentials of urls masked (a driver's error message may quote its URL,
    or the part of a password it took for a host name)."""
    for url in urls:
        for secret in secrets(url):
            if secret == MASK:
                continue
            plain = unquote(secret)
            for form in sorted({secret, plain, quote(plain, safe="")}, key=len, reverse=True):
                text = text.replace(form, MASK)
            # What SQLAlchemy makes of an unencoded @: the password's first piece, and a host
            # that is (or starts with) the rest.
            pieces = plain.split("@")
            for piece in pieces if len(pieces) > 1 else ():
                if len(piece) >= MIN_PIECE:
                    text = text.replace(piece, MASK)
            for i in range(1, len(pieces)):
                text = text.replace("@".join(pieces[i:]) + "@", MASK + "@")
                text = text.replace(":" + "@".join(pieces[:i]) + "@", ":" + MASK + "@")
    return text


def absolute_sqlite(url: str) -> str:
    """sqlite:///relative.db made absolute, so the URL means the same file from any folder."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or url[len(prefix):] in ("", ":memory:"):
        return url
    return prefix + str(Path(url[len(prefix):]).expanduser().resolve())


def sqlite_path(url: str | None) -> Path | None:
    """The file of a sqlite:/// URL; None for any other store (a server keeps its own files)."""
    if not url or not url.startswith("sqlite:///") or url[len("sqlite:///"):] in ("", ":memory:"):
        return None
    return Path(url[len("sqlite:///"):]).expanduser()
