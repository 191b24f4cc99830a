"""Which images belong together (one patient, slide or microscope field) and so must stay on
one side of every split: given as a CSV, read from file names by a pattern, or, when nothing
is given, one group per file.

File names are never read as groups on their own: the public set's `_<k>_<n>.jpeg` looks like
"augmentation n of cell k" but k is a position in a shuffled Keras batch (docs/groups.md).
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .errors import DataError


@dataclass(frozen=True)
class Grouping:
    """How a data set's images are grouped. `file`: a CSV of `path,group` rows (path relative to
    the data dir); `pattern`: a regular expression searched in each file name, whose first
    capture group (or whole match) is the group id. Neither: each file is its own group."""

    file: str | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.file and self.pattern:
            raise DataError("give --groups or --group-pattern, not both")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise DataError(f"--group-pattern '{self.pattern}' is not a regular expression ({exc})") from None

    @property
    def key(self) -> str:
        """What a flat data set's recorded TEST split was chosen by (a file's rows may grow)."""
        return "csv" if self.file else f"pattern:{self.pattern}" if self.pattern else "per-file"

    def describe(self) -> str:
        if self.file:
            return f"groups from {self.file}"
        if self.pattern:
            return f"groups from file names by --group-pattern '{self.pattern}'"
        return "one group per file (no --groups or --group-pattern given)"

    def assign(self, files_by_split: dict[str, Sequence[str]]) -> dict[str, list[str]]:
        """The group of every file, per split. Raises DataError (one line) on a file the groups
        do not cover, a row naming a file that does not exist, or an image given two groups."""
        if self.file:
            table = read_groups_file(Path(self.file))
            _check_rows_exist(self.file, table, files_by_split)
            return {name: [_lookup(self.file, table, f) for f in files] for name, files in files_by_split.items()}
        if self.pattern:
            rx = re.compile(self.pattern)
            return {name: [_match(rx, self.pattern, f) for f in files] for name, files in files_by_split.items()}
        return {name: list(files) for name, files in files_by_split.items()}


DEFAULT_FILE = "groups.csv"  # in the data dir: used when no option names the groups


def resolve_grouping(data_dir: str | Path, file: str | None = None, pattern: str | None = None) -> Grouping:
    """The grouping a command was given: --groups FILE, --group-pattern REGEX, or else the data
    dir's own groups.csv if it has one (absolute paths, so a stored study means the same file)."""
    if file:
        return Grouping(file=str(Path(file).expanduser().resolve()), pattern=pattern)
    default = Path(data_dir).expanduser() / DEFAULT_FILE
    if pattern is None and default.is_file():
        return Grouping(file=str(default.resolve()))
    return Grouping(pattern=pattern)


@dataclass(frozen=True)
class _Row:
    group: str
    line: int


def read_groups_file(path: Path) -> dict[str, _Row]:
    """path -> (group, line number). A header row `path,group` is optional; extra columns are
    ignored (the discovery's CSV carries its match's source and confidence)."""
    try:
        text = path.expanduser().read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"--groups {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--groups {path}: cannot be read ({exc})") from None
    table: dict[str, _Row] = {}
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if line == 1 and [c.strip().lower() for c in row[:2]] == ["path", "group"]:
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"--groups {path}: row {line} is not 'path,group': {','.join(row)[:120]!r}")
        rel, group = _normal(row[0]), row[1].strip()
        if rel in table and table[rel].group != group:
            raise DataError(f"--groups {path}: row {line} gives {rel} group {group!r}, row {table[rel].line} "
                            f"gave it {table[rel].group!r}")
        table.setdefault(rel, _Row(group, line))
    if not table:
        raise DataError(f"--groups {path}: no rows")
    return table


def _normal(rel: str) -> str:
    rel = rel.strip().replace("\\", "/")
    return rel[2:] if rel.startswith("./") else rel


def _check_rows_exist(source: str, table: dict[str, _Row], files_by_split: dict[str, Sequence[str]]) -> None:
    present = {f for files in files_by_split.values() for f in files}
    missing = [(row.line, rel) for rel, row in table.items() if rel not in present]
    if missing:
        line, rel = min(missing)
        raise DataError(f"--groups {source}: row {line} names {rel}, which is not an image of the data dir "
                        f"({len(missing)} such row{'s' if len(missing) != 1 else ''})")


def _lookup(source: str, table: dict[str, _Row], rel: str) -> str:
    row = table.get(rel)
    if row is None:
        raise DataError(f"--groups {source} has no row for {rel} (every image needs a group; "
                        f"`search data groups` finds them)")
    return row.group


def _match(rx: re.Pattern, pattern: str, rel: str) -> str:
    m = rx.search(Path(rel).name)
    if not m:
        raise DataError(f"--group-pattern '{pattern}' does not match {rel}")
    return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)


def groups_digest(files: Iterable[str], groups: Iterable[str]) -> str:
    """What the grouping does to a listing: same digest for the same assignment, whichever
    way (file or pattern) it was given and wherever the file lies."""
    h = hashlib.sha256()
    for rel, group in sorted(zip(files, groups)):
        h.update(f"{rel}\0{group}\n".encode())
    return h.hexdigest()[:16]
