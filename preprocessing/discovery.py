"""Which original field each image was made from: the true groups of a data set.

The public set's images are whole microscope fields, each augmented many times (rotated,
zoomed, shifted, mirrored, downscaled 2x); file names do not say which field. A grouped
validation split needs the field, and fields that overlap (neighbouring stage positions
showing the same cells) must count as one.

- With the original fields (`group_by_sources`): each image is matched to its field by SIFT
  keypoints and a RANSAC similarity transform; fields whose keypoints match each other under
  a pure shift are merged into one group.
- Without them (`near_duplicates.group_by_similarity`): images are clustered among themselves.

A plain library: OpenCV, NumPy and SciPy only.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .dataset import IMAGE_SUFFIXES
from .errors import DataError
from .features import Alignment, Features, align, aligned_correlation, field_features, mirror, mirrored, read_gray
from .images import UnreadableImage
from .parallel import Progress, Stopwatch, no_progress, parallel_map, worker_state

# The images are the fields downscaled 2x: features of a field are found at that scale.
SOURCE_SCALE = 0.5
MIN_INLIERS = 15
# A blurred copy can keep fewer keypoints (on the public set 30 true matches had 11-14
# inliers, with 30 votes against 3 for the runner-up): fewer inliers are enough when the
# pixels agree too. True matches correlate at 0.54 or more, wrong fields under 0.3.
MIN_CONFIRMED_INLIERS = 8
MIN_CORRELATION = 0.5
# Zoom was 0.92-1.06; wider bounds only keep out degenerate fits (scale near 0 or huge).
SCALE_RANGE = (0.8, 1.25)
# Candidate fields verified per image, most votes first: the true field is nearly always first,
# but an overlapping neighbour can take votes from it.
CANDIDATES = 3
MIN_VOTES = 3  # fewer keypoints than this never make a match: not worth verifying
# Neighbouring stage positions: the same cells, shifted, never turned or zoomed. Keypoints
# only propose such a pair (a small overlap leaves few of them); the pixels decide: on the
# public set the 41 overlaps found correlate at 0.86-0.98; the best other candidates (chance
# alignments, dust on the optics at the same pixels of two fields) were under 0.31.
OVERLAP_MIN_INLIERS = 8
OVERLAP_MAX_ANGLE = 2.0
OVERLAP_MAX_SCALE_ERROR = 0.03
OVERLAP_MIN_CORRELATION = 0.7
OVERLAP_MIN_AREA = 0.03
OVERLAP_CANDIDATES = 8
NEAR_MISSES = 24
NEAR_MISS_MIN_INLIERS = 4

# --- finding files ---------------------------------------------------------------------


def list_images(folder: str | os.PathLike) -> list[str]:
    """Every image file under folder, as sorted forward-slash paths relative to it (hidden
    files and folders skipped). DataError when the folder is unusable or holds none."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"data dir {root} is not a readable folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise_unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    if not found:
        raise DataError(f"data dir {root} holds no images (.jpg/.jpeg/.png/.bmp/.tif)")
    return sorted(found)


def _raise_unreadable(exc: OSError) -> None:
    raise DataError(f"{exc.filename} is not a readable folder ({exc.strerror})")


# --- clusters -----------------------------------------------------------------------------


def connected(n: int, edges: Iterable[tuple[int, int]]) -> np.ndarray:
    """Component label of each of n nodes joined by edges (union-find by SciPy)."""
    pairs = np.array(list(edges), dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# --- the result ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRow:
    """One image's line in the groups CSV."""

    path: str  # relative to the data dir, forward slashes
    group: str
    source: str = ""  # the field it matched (with sources)
    inliers: int = 0  # of the match that put it in its group
    inlier_ratio: float = 0.0
    correlation: float | None = None  # of its pixels with its match's, once aligned
    mirrored: bool | None = None
    scale: float = 0.0
    angle: float = 0.0
    # inliers / (inliers + the most inliers any other group reached): 1.0 when nothing else
    # came close, 0.5 when another group matched as well.
    confidence: float = 0.0


CSV_COLUMNS = ("path", "group", "source", "inliers", "inlier_ratio", "correlation", "mirrored", "scale", "angle",
               "confidence")


@dataclass(frozen=True)
class Overlap:
    """Two fields (or groups of images) that show the same cells."""

    a: str
    b: str
    inliers: int
    shift: tuple[float, float]  # b's position relative to a's, in a's pixels
    correlation: float = 0.0  # of the pixels they share


@dataclass(frozen=True)
class NearMiss:
    """A pair in different groups that matched best of all such pairs: what a person checks."""

    a: str  # paths: images relative to the data dir, sources absolute
    b: str
    inliers: int
    group_a: str
    group_b: str


@dataclass
class Grouping:
    mode: str  # "sources" or "images"
    rows: list[GroupRow]
    merged: list[list[str]] = field(default_factory=list)  # clusters of several sources (or image groups)
    overlaps: list[Overlap] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    near_misses: list[NearMiss] = field(default_factory=list)
    unreadable_sources: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage

    def groups(self) -> dict[str, str]:
        return {r.path: r.group for r in self.rows}


# --- with sources -------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A field an image was verified against: its index, whether mirrored, how it aligned."""

    source: int
    mirrored: bool
    alignment: Alignment
    correlation: float | None = None  # of the pixels, once aligned (measured when it can decide)

    def is_plausible(self) -> bool:
        return self.alignment.is_plausible(MIN_CONFIRMED_INLIERS, SCALE_RANGE)

    def is_match(self) -> bool:
        if not self.is_plausible():
            return False
        return self.alignment.inliers >= MIN_INLIERS or (self.correlation or 0.0) >= MIN_CORRELATION


@dataclass(frozen=True)
class ImageMatch:
    path: str
    candidates: tuple[Candidate, ...] = ()  # verified, most inliers first
    error: str | None = None

    @property
    def best(self) -> Candidate | None:
        return next((c for c in self.candidates if c.is_match()), None)


class SourceIndex:
    """Every field's keypoints, as it is and mirrored, in one FLANN KD-tree: a new picture's
    keypoints vote for the fields they resemble, and the few with most votes are verified."""

    def __init__(self, features: Sequence[tuple[Features, Features]]) -> None:
        self.features = list(features)  # [(as is, mirrored)] per source
        flat = [f for pair in self.features for f in pair]
        # Owner 2*i + m: source i, mirrored m.
        self.owner = np.concatenate([np.full(len(f), k, np.int64) for k, f in enumerate(flat)])
        self._data = np.vstack([f.descriptors for f in flat]).astype(np.float32)  # FLANN keeps a pointer
        self._index = cv2.flann_Index(self._data, dict(algorithm=1, trees=4))

    def votes(self, query: Features, skip: int | None = None) -> np.ndarray:
        """Keypoints of query whose nearest neighbour belongs to each owner; skip: a source
        whose own keypoints (and mirror's) do not count, for a source asked about the others."""
        votes = np.zeros(2 * len(self.features), np.int64)
        if len(query) == 0:
            return votes
        k = 1 if skip is None else 3
        nearest, _ = self._index.knnSearch(query.descriptors.astype(np.float32), k, params=dict(checks=32))
        owners = self.owner[nearest]
        if skip is not None:
            # The first neighbour that is not the source itself; rows with none do not vote.
            other = owners // 2 != skip
            first = other.argmax(axis=1)
            owners = owners[np.arange(len(owners)), first][other.any(axis=1)]
        else:
            owners = owners[:, 0]
        return votes + np.bincount(owners, minlength=len(votes))

    def verify(self, query: Features, owner: int) -> Candidate | None:
        alignment = align(query, self.features[owner // 2][owner % 2])
        return None if alignment is None else Candidate(owner // 2, bool(owner % 2), alignment)

    def match(self, query: Features, candidates: int = CANDIDATES) -> tuple[Candidate, ...]:
        votes = self.votes(query)
        owners = [int(o) for o in np.argsort(-votes, kind="stable")[:candidates] if votes[o] >= MIN_VOTES]
        verified = [c for c in (self.verify(query, o) for o in owners) if c is not None]
        return tuple(sorted(verified, key=lambda c: -c.alignment.inliers))

    def shifted(self, i: int) -> list[Candidate]:
        """Other fields whose keypoints match field i's under a shift (neither turned, zoomed
        nor mirrored): candidates for an overlap, for the pixels to confirm."""
        query = self.features[i][0]
        votes = self.votes(query, skip=i)
        votes[1::2] = 0
        found = []
        for owner in np.argsort(-votes, kind="stable")[:OVERLAP_CANDIDATES]:
            if votes[owner] == 0:
                break
            candidate = self.verify(query, int(owner))
            if candidate is not None and candidate.alignment.inliers >= NEAR_MISS_MIN_INLIERS:
                found.append(candidate)
        return found


def is_shift(a: Alignment) -> bool:
    return abs(a.angle) <= OVERLAP_MAX_ANGLE and abs(a.scale - 1.0) <= OVERLAP_MAX_SCALE_ERROR


@dataclass(frozen=True)
class SourcePair:
    """Field i's keypoints matched field j's: an overlap when the transform is a shift and
    the pixels they then share agree."""

    i: int
    j: int
    alignment: Alignment
    correlation: float
    area: float  # the share of j that i covers

    @property
    def overlaps(self) -> bool:
        return (self.alignment.inliers >= OVERLAP_MIN_INLIERS and is_shift(self.alignment)
                and self.correlation >= OVERLAP_MIN_CORRELATION
                and self.area >= OVERLAP_MIN_AREA)


def list_sources(folder: str | os.PathLike) -> list[Path]:
    """The original fields: image files directly in folder, sorted by name."""
    root = Path(folder)
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_file() and not e.name.startswith(".")
                       and Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise DataError(f"--sources {root} is not a readable folder ({exc.strerror})") from None
    if not names:
        raise DataError(f"--sources {root} holds no images (.jpg/.jpeg/.png/.bmp/.tif)")
    return [root / n for n in names]


def source_features(path: Path) -> tuple[Features, Features] | str:
    """A field's features at the images' scale, as it is and mirrored; why not, if unreadable."""
    try:
        gray = read_gray(path, SOURCE_SCALE)
    except UnreadableImage as exc:
        return str(exc)
    features = field_features(gray)
    return features, mirrored(features)


def _index_setup(features: list[tuple[Features, Features]], root: str, sources: list[str]) -> dict:
    return {"index": SourceIndex(features), "root": Path(root), "sources": sources}


@functools.lru_cache(maxsize=512)
def _source_gray(path: str, mirrored: bool) -> np.ndarray:
    gray = read_gray(path, SOURCE_SCALE)
    return mirror(gray) if mirrored else gray


def with_correlation(gray: np.ndarray, candidate: Candidate, source: str) -> Candidate:
    """The candidate with the correlation of its pixels, where that can decide a match."""
    if not candidate.is_plausible():
        return candidate
    correlation, _ = aligned_correlation(gray, _source_gray(source, candidate.mirrored), candidate.alignment.matrix)
    return dataclasses.replace(candidate, correlation=round(correlation, 4))


def _match_task(rel: str) -> ImageMatch:
    try:
        gray = read_gray(worker_state["root"] / rel)
    except UnreadableImage as exc:
        return ImageMatch(rel, error=str(exc))
    sources = worker_state["sources"]
    candidates = worker_state["index"].match(field_features(gray))
    return ImageMatch(rel, tuple(with_correlation(gray, c, sources[c.source]) for c in candidates))


def _overlap_task(i: int) -> list[SourcePair]:
    candidates = worker_state["index"].shifted(i)
    if not candidates:
        return []
    sources = worker_state["sources"]
    gray = _source_gray(sources[i], False)
    pairs = []
    for c in candidates:
        correlation, area = (aligned_correlation(gray, _source_gray(sources[c.source], False), c.alignment.matrix)
                             if is_shift(c.alignment) else (0.0, 0.0))
        pairs.append(SourcePair(i, c.source, c.alignment, round(correlation, 4), round(area, 4)))
    return pairs


def group_by_sources(data_dir: str | os.PathLike, sources_dir: str | os.PathLike, workers: int = 1,
                     progress: Progress = no_progress, warn: Callable[[str], None] = lambda message: None,
                     images: Sequence[str] | None = None) -> Grouping:
    """Match every image under data_dir to its field in sources_dir and group them by field,
    overlapping fields merged. images: paths relative to data_dir (default: all of them)."""
    root = Path(data_dir)
    paths = list(images) if images is not None else list_images(root)
    sources = list_sources(sources_dir)
    clock = Stopwatch()
    with progress("source features", len(sources)) as bar, clock("source features"):
        found = list(parallel_map(source_features, sources, workers, bar))
    bad_sources = [(str(p), f) for p, f in zip(sources, found) if isinstance(f, str)]
    for path, why in bad_sources:
        warn(f"skipped unreadable source {why}")
    kept = [i for i, f in enumerate(found) if not isinstance(f, str)]
    if not kept:
        raise DataError(f"--sources {sources_dir}: none of its {len(sources)} images can be read")
    sources = [sources[i] for i in kept]
    features = [found[i] for i in kept]
    setup_args = (features, str(root), [str(s) for s in sources])
    with progress("source overlaps", len(sources)) as bar, clock("source overlaps"):
        pairs = [p for found in parallel_map(_overlap_task, range(len(sources)), workers, bar, _index_setup, setup_args)
                 for p in found]
    with progress("images", len(paths)) as bar, clock("images"):
        matches = list(parallel_map(_match_task, paths, workers, bar, _index_setup, setup_args, chunksize=16))
    for m in matches:
        if m.error:
            warn(f"skipped unreadable image {m.error}")
    grouping = assemble_source_groups(matches, [s.stem for s in sources], pairs, [str(s) for s in sources])
    grouping.unreadable_sources = bad_sources
    grouping.seconds = clock.seconds
    return grouping


def source_clusters(names: Sequence[str], pairs: Sequence[SourcePair]) -> list[str]:
    """Each source's group: the lowest name among the sources it overlaps, directly or not."""
    labels = connected(len(names), ((p.i, p.j) for p in pairs if p.overlaps))
    lowest: dict[int, str] = {}
    for name, label in zip(names, labels):
        lowest[label] = min(lowest.get(label, name), name)
    return [lowest[label] for label in labels]


def overlap_list(names: Sequence[str], pairs: Sequence[SourcePair]) -> list[Overlap]:
    """One Overlap per pair of overlapping sources, found from either side (the side with
    more inliers), with the second source's position in the first's full-size pixels."""
    best: dict[tuple[int, int], Overlap] = {}
    for p in pairs:
        if not p.overlaps:
            continue
        # The alignment maps i's pixels onto j's: j's origin sits at -shift in i.
        dx, dy = (-v / SOURCE_SCALE for v in p.alignment.shift)
        key = (min(p.i, p.j), max(p.i, p.j))
        if p.i > p.j:
            dx, dy = -dx, -dy
        if key not in best or p.alignment.inliers > best[key].inliers:
            best[key] = Overlap(names[key[0]], names[key[1]], p.alignment.inliers, (round(dx), round(dy)),
                                p.correlation)
    return sorted(best.values(), key=lambda o: (o.a, o.b))


def _image_row(m: ImageMatch, cluster: Sequence[str], names: Sequence[str]) -> tuple[GroupRow, Candidate | None]:
    """An image's row and the closest field of another group (None when none came close)."""
    best = m.best
    group = cluster[best.source] if best else m.path
    others = [c for c in m.candidates if cluster[c.source] != group and c.alignment.inliers >= NEAR_MISS_MIN_INLIERS
              and SCALE_RANGE[0] <= c.alignment.scale <= SCALE_RANGE[1]]
    closest = max(others, key=lambda c: c.alignment.inliers, default=None)
    if best is None:
        return GroupRow(m.path, m.path), closest
    rival = max((c.alignment.inliers for c in others if c.is_plausible()), default=0)
    a = best.alignment
    return GroupRow(m.path, group, names[best.source], a.inliers, round(a.inlier_ratio, 3), best.correlation,
                    best.mirrored, round(a.scale, 4), round(a.angle, 2), round(a.inliers / (a.inliers + rival), 3)), closest


def assemble_source_groups(matches: Sequence[ImageMatch], names: Sequence[str], pairs: Sequence[SourcePair],
                           source_paths: Sequence[str] | None = None) -> Grouping:
    """Rows, merged clusters, overlaps, unmatched images and near misses from the matches."""
    cluster = source_clusters(names, pairs)
    paths = list(source_paths) if source_paths is not None else list(names)
    rows, misses = [], []
    for m in matches:
        row, rival = _image_row(m, cluster, names)
        rows.append(row)
        if rival is not None:
            misses.append(NearMiss(m.path, paths[rival.source], rival.alignment.inliers, row.group,
                                   cluster[rival.source]))
    misses += [NearMiss(paths[p.i], paths[p.j], p.alignment.inliers, cluster[p.i], cluster[p.j])
               for p in pairs if cluster[p.i] != cluster[p.j] and SCALE_RANGE[0] <= p.alignment.scale <= SCALE_RANGE[1]]
    members: dict[str, list[str]] = {}
    for name, group in zip(names, cluster):
        members.setdefault(group, []).append(name)
    return Grouping(
        mode="sources", rows=rows,
        merged=sorted(sorted(v) for v in members.values() if len(v) > 1),
        overlaps=overlap_list(names, pairs),
        unmatched=[m.path for m in matches if m.best is None and not m.error],
        unreadable=[(m.path, m.error) for m in matches if m.error],
        near_misses=closest_pairs(misses),
    )


def closest_pairs(misses: list[NearMiss]) -> list[NearMiss]:
    """The strongest near misses, one per pair of groups: many images of one field can all
    have the same rival field, and a person needs to see that pair once."""
    seen, kept = set(), []
    for n in sorted(misses, key=lambda n: (-n.inliers, n.a, n.b)):
        key = tuple(sorted((n.group_a, n.group_b)))
        if key not in seen:
            seen.add(key)
            kept.append(n)
    return kept[:NEAR_MISSES]


def write_csv(grouping: Grouping, path: str | os.PathLike) -> None:
    """The groups CSV: header path,group,... and one row per image, sorted by path."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in sorted(grouping.rows, key=lambda r: r.path):
            writer.writerow([r.path, r.group, r.source, r.inliers, r.inlier_ratio,
                             "" if r.correlation is None else r.correlation,
                             "" if r.mirrored is None else int(r.mirrored), r.scale, r.angle, r.confidence])
