"""Where an export writes (`search export --out`, `search ensemble --export`): a new or empty
folder, or, with --force, a folder an earlier export wrote.

--force once removed whatever --out named: `--out . --force` in the folder of a study took
its optuna.db, mlflow.db, mlruns/ and the user's notes with it. Now an export leaves a marker
file listing what it wrote, and --force replaces exactly that: a folder without the marker, or
with anything the marker does not list, is refused, and so are the working folder, its
parents, and any folder holding (or inside) a store or the data."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from search.errors import SearchError
from search.urls import sqlite_path

MARKER = ".bloodsearch-export.json"
# What no export writes but a study's folder holds: its stores.
STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
STORE_FOLDERS = ("mlruns", "mlartifacts")
SHOWN = 8  # entries named in an error line; the rest are counted


def protected(storage: str | None = None, tracking_uri: str | None = None, data_dir: str | None = None,
              cache_dir: str | None = None) -> tuple[tuple[Path, str], ...]:
    """(path, what it is) of a study's local stores and data: no export goes in or around them."""
    named = ((sqlite_path(storage), "the study's storage"), (sqlite_path(tracking_uri), "the MLflow tracking store"),
             (Path(data_dir).expanduser() if data_dir else None, "the data"),
             (Path(cache_dir).expanduser() if cache_dir else None, "the image cache"))
    return tuple((path.resolve(), what) for path, what in named if path is not None)


def _is_store(name: str) -> bool:
    return name.lower().endswith(STORE_SUFFIXES) or name in STORE_FOLDERS


def _listing(folder: Path, names: Iterable[str]) -> str:
    """Stores first: they are what a user most needs to see is there."""
    ordered = sorted(names, key=lambda n: (not _is_store(n), n))
    shown = [n + ("/" if (folder / n).is_dir() else "") for n in ordered]
    more = f" and {len(shown) - SHOWN} more" if len(shown) > SHOWN else ""
    return ", ".join(shown[:SHOWN]) + more


def _written(folder: Path) -> set[str] | None:
    """The entries the marker says an export wrote; None without a readable marker."""
    try:
        written = json.loads((folder / MARKER).read_text())["written"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {str(n) for n in written} if isinstance(written, list) else None


@dataclass(frozen=True)
class Destination:
    folder: Path
    force: bool = False
    option: str = "--out"  # how the user named it, for the error line
    keep: tuple[tuple[Path, str], ...] = ()  # (path, what): stores and data, from protected()

    @classmethod
    def of(cls, folder: "str | Path | Destination") -> "Destination":
        return folder if isinstance(folder, Destination) else cls(Path(folder))

    def _refuse(self, why: str) -> SearchError:
        return SearchError(f"{self.option} {self.folder}: {why}")

    def check(self) -> list[Path]:
        """The entries an export into the folder replaces (none for a new or empty folder);
        a one-line refusal for anything else."""
        folder = self.folder.expanduser()
        if folder.exists() and not folder.is_dir():
            raise self._refuse("is a file, not a folder; give a folder for the export")
        entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        holds = f" (holds {_listing(folder, entries)})" if entries else ""
        self._refuse_surroundings(folder.resolve(), holds)
        stores = [n for n in entries if _is_store(n)]
        if stores:
            raise self._refuse(f"holds a store ({_listing(folder, stores)}); export to a folder of its own")
        if not entries:
            return []
        written = _written(folder)
        if written is None:
            raise self._refuse(f"exists and was not written by an export{holds}; give a new or empty folder "
                               f"(--force replaces only an earlier export)")
        extra = [n for n in entries if n not in written and n != MARKER]
        if extra:
            raise self._refuse(f"holds files the export did not write ({_listing(folder, extra)}); move them "
                               f"or give a new folder")
        if not self.force:
            raise self._refuse("holds an earlier export; give --force to replace it")
        return [folder / n for n in entries]

    def _refuse_surroundings(self, resolved: Path, holds: str) -> None:
        cwd = Path.cwd().resolve()
        if resolved == cwd or resolved in cwd.parents:
            what = "the working folder" if resolved == cwd else "a parent of the working folder"
            raise self._refuse(f"is {what}{holds}; export to a folder of its own, e.g. {self.option} exported")
        for path, what in self.keep:
            if path == resolved or resolved in path.parents:
                raise self._refuse(f"holds {what} ({path}); export to a folder of its own")
            if path in resolved.parents:
                raise self._refuse(f"is inside {what} ({path}); export to a folder of its own")

    def prepare(self, names: Iterable[str]) -> Path:
        """The folder, emptied of an earlier export (checked again: minutes may have passed
        since the command's first check), with the marker listing `names`, what this export
        is about to write."""
        for entry in self.check():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        folder = self.folder.expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text(json.dumps({"written": sorted(names), "by": "bloodsearch export; "
                                                 "search export --force replaces only these"}, indent=1))
        return folder
