"""Groups without the original fields: augmented copies of one field, found among the images.

1. SIFT keypoints of every image (kept on disk, not in memory).
2. A bag of visual words (k-means vocabulary, TF-IDF) over them and their mirrors, so that
   an image and its mirrored copy describe alike; each image's most similar images are its
   shortlist.
3. Each shortlisted pair is verified like an image against a field (RANSAC similarity
   transform; few inliers need agreeing pixels too); verified pairs join groups.
4. Overlapping fields: the images most similar to each group from outside it are verified
   the same way, and groups whose images show the same cells are merged.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import sparse
from sklearn.cluster import MiniBatchKMeans
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.preprocessing import normalize

from .discovery import (
    MIN_CORRELATION,
    GroupRow,
    Grouping,
    NearMiss,
    Overlap,
    closest_pairs,
    connected,
    list_images,
)
from .features import (
    MIRRORED_BINS,
    Alignment,
    Features,
    align,
    aligned_correlation,
    field_features,
    mirror,
    mirrored,
    read_gray,
)
from .images import UnreadableImage
from .parallel import Progress, Stopwatch, no_progress, parallel_map, worker_state

VOCABULARY = 1024
VOCABULARY_SAMPLE = 100_000  # descriptors the words are learnt from
NEIGHBOURS = 10  # shortlisted per image: a field has ~35 copies in TRAIN, so most are found twice
OUTSIDE = 3  # per image, the most similar images in other groups: where overlaps are looked for
PAIRS_PER_GROUPS = 3  # of those, verified per pair of groups
MIN_INLIERS = 15
MIN_CONFIRMED_INLIERS = 8
# Two copies were zoomed 0.92-1.06 each: their scale ratio stays within 0.87-1.15.
SCALE_RANGE = (0.75, 1.33)


# --- features on disk ----------------------------------------------------------------------


class FeatureStore:
    """Every image's keypoints in two flat files that worker processes map read-only: the
    public set's 12,515 images hold ~3 million keypoints (400 MB)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.offsets = np.load(self.folder / "offsets.npy")  # image i: keypoints offsets[i]:offsets[i + 1]
        self.sizes = np.load(self.folder / "sizes.npy")
        total = int(self.offsets[-1])
        if total:
            self.points = np.memmap(self.folder / "points.bin", np.float32, "r", shape=(total, 2))
            self.descriptors = np.memmap(self.folder / "descriptors.bin", np.uint8, "r", shape=(total, 128))
        else:
            self.points, self.descriptors = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)

    def __len__(self) -> int:
        return len(self.sizes)

    def get(self, i: int, mirror: bool = False) -> Features:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        found = Features(np.asarray(self.points[a:b]), np.asarray(self.descriptors[a:b]),
                         (int(self.sizes[i][0]), int(self.sizes[i][1])))
        return mirrored(found) if mirror else found


class FeatureWriter:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._points = open(folder / "points.bin", "wb")
        self._descriptors = open(folder / "descriptors.bin", "wb")
        self.offsets: list[int] = [0]
        self.sizes: list[tuple[int, int]] = []

    def add(self, features: Features | None) -> None:
        """An image's features; None for an unreadable one (no keypoints)."""
        if features is not None:
            self._points.write(np.ascontiguousarray(features.points, np.float32).tobytes())
            self._descriptors.write(np.ascontiguousarray(features.descriptors, np.uint8).tobytes())
        self.offsets.append(self.offsets[-1] + (len(features) if features is not None else 0))
        self.sizes.append(features.size if features is not None else (0, 0))

    def close(self) -> FeatureStore:
        self._points.close()
        self._descriptors.close()
        np.save(self.folder / "offsets.npy", np.asarray(self.offsets, np.int64))
        np.save(self.folder / "sizes.npy", np.asarray(self.sizes, np.int64).reshape(-1, 2))
        return FeatureStore(self.folder)


def _image_features_task(rel: str) -> Features | str:
    try:
        return field_features(read_gray(worker_state["root"] / rel))
    except UnreadableImage as exc:
        return str(exc)


def _root_setup(root: str) -> dict:
    return {"root": Path(root)}


# --- bag of visual words -------------------------------------------------------------------


def learn_vocabulary(store: FeatureStore, words: int = VOCABULARY, sample: int = VOCABULARY_SAMPLE,
                     seed: int = 0) -> np.ndarray:
    """(words, 128) float32 centres: k-means centres of a random sample of all keypoints
    (and their mirrors), then the same centres mirrored. Word w + words/2 is word w seen in
    a mirror, so a mirrored image's words are its original's, shifted by half."""
    total = len(store.descriptors)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(total, size=min(sample, total), replace=False))
    data = np.asarray(store.descriptors[rows])
    data = np.vstack([data, data[:, MIRRORED_BINS]]).astype(np.float32)
    half = max(1, min(words // 2, len(data) // 8))
    # Random initial centres: k-means++ takes minutes for 512 centres, and a shortlist needs
    # words that separate fields, not the best possible ones.
    kmeans = MiniBatchKMeans(n_clusters=half, init="random", random_state=seed, batch_size=4096, n_init=1,
                             max_iter=20)
    centres = kmeans.fit(data).cluster_centers_.astype(np.float32)
    return np.vstack([centres, centres[:, MIRRORED_BINS]])


def nearest_words(descriptors: np.ndarray, centres: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest centre of each descriptor (squared distance, as BLAS products)."""
    centre_norms = (centres * centres).sum(axis=1)
    out = np.empty(len(descriptors), np.int32)
    for start in range(0, len(descriptors), chunk):
        block = np.asarray(descriptors[start:start + chunk], np.float32)
        out[start:start + len(block)] = np.argmin(centre_norms[None, :] - 2.0 * block @ centres.T, axis=1)
    return out


def word_counts(store: FeatureStore, centres: np.ndarray) -> sparse.csr_matrix:
    """(n, words) how often each word occurs in each image."""
    words = nearest_words(store.descriptors, centres)
    images = np.repeat(np.arange(len(store)), np.diff(store.offsets))
    return sparse.csr_matrix((np.ones(len(words), np.float32), (images, words)), shape=(len(store), len(centres)))


def mirror_counts(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """The counts each image's mirror would have (learn_vocabulary's word pairs swapped)."""
    half = counts.shape[1] // 2
    return counts[:, np.r_[half:2 * half, 0:half]].tocsr()


def tfidf(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """Rows weighted by TF-IDF, L2-normalised; empty rows stay empty."""
    return TfidfTransformer(sublinear_tf=True).fit_transform(counts).tocsr().astype(np.float32)


def image_vectors(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """One row per image, the same for an image and its mirrored copy: words of both."""
    return tfidf(counts + mirror_counts(counts))


def most_similar(vectors: sparse.csr_matrix, k: int, labels: np.ndarray | None = None,
                 block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) indices and cosine similarities of each row's k most similar other rows; with
    labels, only rows of other labels count. A similarity of 0 or less means no neighbour."""
    n = vectors.shape[0]
    k = max(0, min(k, n - 1))
    index = np.full((n, k), -1, np.int64)
    score = np.full((n, k), -1.0, np.float32)
    transposed = vectors.T.tocsc()
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = (vectors[start:stop] @ transposed).toarray()
        sims[np.arange(stop - start), np.arange(start, stop)] = -1.0
        if labels is not None:
            sims[labels[start:stop, None] == labels[None, :]] = -1.0
        if k == 0:
            continue
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        index[start:stop] = np.take_along_axis(top, order, axis=1)
        score[start:stop] = np.take_along_axis(top_scores, order, axis=1)
    return index, score


# --- verifying pairs -----------------------------------------------------------------------


@dataclass(frozen=True)
class PairCheck:
    """Image i against image j (mirrored or not): how their keypoints and pixels agree."""

    i: int
    j: int
    alignment: Alignment | None
    mirrored: bool = False
    correlation: float | None = None

    @property
    def inliers(self) -> int:
        return self.alignment.inliers if self.alignment else 0

    def is_plausible(self) -> bool:
        return self.alignment is not None and self.alignment.is_plausible(MIN_CONFIRMED_INLIERS, SCALE_RANGE)

    def is_match(self) -> bool:
        return self.is_plausible() and (self.inliers >= MIN_INLIERS or (self.correlation or 0.0) >= MIN_CORRELATION)


def _store_setup(store: str, root: str, paths: list[str]) -> dict:
    return {"store": FeatureStore(store), "root": Path(root), "paths": paths}


def _check_task(task: tuple[int, int, bool]) -> PairCheck:
    """Verify i against j, first in the orientation their words favour, then the other."""
    i, j, mirrored_first = task
    store: FeatureStore = worker_state["store"]
    best = PairCheck(i, j, None)
    query = store.get(i)
    for flip in (mirrored_first, not mirrored_first):
        check = PairCheck(i, j, align(query, store.get(j, flip)), flip)
        if (check.is_plausible(), check.inliers) > (best.is_plausible(), best.inliers):
            best = check
        if best.inliers >= MIN_INLIERS and best.is_plausible():
            break
    if best.is_plausible() and best.inliers < MIN_INLIERS:
        best = _with_pixels(best)
    return best


def _with_pixels(check: PairCheck) -> PairCheck:
    root, paths = worker_state["root"], worker_state["paths"]
    try:
        a, b = read_gray(root / paths[check.i]), read_gray(root / paths[check.j])
    except UnreadableImage:
        return check
    correlation, _ = aligned_correlation(a, mirror(b) if check.mirrored else b, check.alignment.matrix)
    return PairCheck(check.i, check.j, check.alignment, check.mirrored, round(correlation, 4))


def orientation_tasks(pairs: np.ndarray, counts: sparse.csr_matrix) -> list[tuple[int, int, bool]]:
    """(i, j, whether j's mirror shares more words with i than j does)."""
    plain, flipped = normalize(counts), normalize(mirror_counts(counts))
    first, second = plain[pairs[:, 0]], pairs[:, 1]
    as_is = np.asarray(first.multiply(plain[second]).sum(axis=1)).ravel()
    as_mirror = np.asarray(first.multiply(flipped[second]).sum(axis=1)).ravel()
    return [(int(i), int(j), bool(m > a)) for (i, j), a, m in zip(pairs, as_is, as_mirror)]


def unique_pairs(index: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(m, 2) distinct pairs i < j among each row's neighbours with a positive similarity."""
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    cols, sims = index.ravel(), score.ravel()
    keep = (cols >= 0) & (sims > 0)
    pairs = np.sort(np.stack([rows[keep], cols[keep]], axis=1), axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def between_groups(index: np.ndarray, score: np.ndarray, labels: np.ndarray,
                   per_groups: int = PAIRS_PER_GROUPS) -> np.ndarray:
    """The most similar image pairs (at most per_groups) of each pair of groups."""
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    cols, sims = index.ravel(), score.ravel()
    keep = (cols >= 0) & (sims > 0)
    rows, cols, sims = rows[keep], cols[keep], sims[keep]
    chosen: dict[tuple[int, int], list[tuple[float, int, int]]] = {}
    for i, j, s in zip(rows.tolist(), cols.tolist(), sims.tolist()):
        a, b = sorted((i, j))
        key = tuple(sorted((int(labels[a]), int(labels[b]))))
        chosen.setdefault(key, []).append((-s, a, b))
    pairs = {(a, b) for found in chosen.values() for _, a, b in sorted(set(found))[:per_groups]}
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


# --- groups --------------------------------------------------------------------------------


def component_names(paths: Sequence[str], labels: np.ndarray) -> list[str]:
    """g0001, g0002, ... by each component's first path in sorted order; a component of one
    image is named by its path (it matched nothing)."""
    sizes = np.bincount(labels)
    first: dict[int, str] = {}
    for path, label in zip(paths, labels):
        first[label] = min(first.get(label, path), path)
    order = sorted((p, label) for label, p in first.items() if sizes[label] > 1)
    names = {label: f"g{n:04d}" for n, (_, label) in enumerate(order, 1)}
    return [names.get(label, path) for path, label in zip(paths, labels)]


def _rows(paths: Sequence[str], groups: Sequence[str], checks: Sequence[PairCheck]) -> list[GroupRow]:
    """Each image's row: its strongest verified link inside its group, and how close the
    strongest link to another group came."""
    best: dict[int, PairCheck] = {}
    rival: dict[int, int] = {}
    for c in checks:
        for node in (c.i, c.j):
            if c.is_match() and groups[c.i] == groups[c.j]:
                if node not in best or c.inliers > best[node].inliers:
                    best[node] = c
            elif c.is_plausible() and groups[c.i] != groups[c.j]:
                rival[node] = max(rival.get(node, 0), c.inliers)
    rows = []
    for n, (path, group) in enumerate(zip(paths, groups)):
        c = best.get(n)
        if c is None:
            rows.append(GroupRow(path, group))
            continue
        a = c.alignment
        rows.append(GroupRow(path, group, "", a.inliers, round(a.inlier_ratio, 3), c.correlation, None,
                             round(a.scale, 4), round(a.angle, 2), round(a.inliers / (a.inliers + rival.get(n, 0)), 3)))
    return rows


def _merged(paths: Sequence[str], first: np.ndarray, final: np.ndarray) -> list[list[str]]:
    """Final groups made of several first-pass groups, each named by its first image."""
    heads: dict[int, str] = {}
    for path, label in zip(paths, first):
        heads[label] = min(heads.get(label, path), path)
    members: dict[int, set[int]] = {}
    for a, b in zip(first, final):
        members.setdefault(int(b), set()).add(int(a))
    return sorted(sorted(heads[a] for a in found) for found in members.values() if len(found) > 1)


def assemble_image_groups(paths: Sequence[str], checks: Sequence[PairCheck], overlap_checks: Sequence[PairCheck],
                          errors: dict[int, str]) -> Grouping:
    n = len(paths)
    first = connected(n, ((c.i, c.j) for c in checks if c.is_match()))
    final = connected(n, ((c.i, c.j) for c in list(checks) + list(overlap_checks) if c.is_match()))
    groups = component_names(paths, final)
    all_checks = list(checks) + list(overlap_checks)
    misses = [NearMiss(paths[c.i], paths[c.j], c.inliers, groups[c.i], groups[c.j])
              for c in all_checks if c.is_plausible() and groups[c.i] != groups[c.j]]
    overlaps = [Overlap(paths[c.i], paths[c.j], c.inliers, (round(c.alignment.shift[0]), round(c.alignment.shift[1])),
                        c.correlation or 0.0)
                for c in overlap_checks if c.is_match() and first[c.i] != first[c.j]]
    return Grouping(
        mode="images", rows=_rows(paths, groups, all_checks),
        merged=_merged(paths, first, final),
        overlaps=sorted(overlaps, key=lambda o: (o.a, o.b)),
        unmatched=[p for i, (p, g) in enumerate(zip(paths, groups)) if g == p and i not in errors],
        unreadable=[(paths[i], why) for i, why in sorted(errors.items())],
        near_misses=closest_pairs(misses),
    )


def _extract(root: Path, paths: list[str], folder: Path, workers: int, progress: Progress,
             warn: Callable[[str], None]) -> tuple[FeatureStore, dict[int, str]]:
    writer, errors = FeatureWriter(folder), {}
    with progress("image features", len(paths)) as bar:
        for i, found in enumerate(parallel_map(_image_features_task, paths, workers, bar, _root_setup, (str(root),),
                                               chunksize=16)):
            if isinstance(found, str):
                errors[i] = found
                warn(f"skipped unreadable image {found}")
                writer.add(None)
            else:
                writer.add(found)
    return writer.close(), errors


def _verify(tasks: list[tuple[int, int, bool]], label: str, setup_args: tuple, workers: int,
            progress: Progress) -> list[PairCheck]:
    with progress(label, len(tasks)) as bar:
        return list(parallel_map(_check_task, tasks, workers, bar, _store_setup, setup_args, chunksize=32))


def group_by_similarity(data_dir: str | os.PathLike, workers: int = 1, progress: Progress = no_progress,
                        warn: Callable[[str], None] = lambda message: None, images: Sequence[str] | None = None,
                        neighbours: int = NEIGHBOURS, vocabulary: int = VOCABULARY) -> Grouping:
    """Group the images under data_dir by the field they show, without the fields: verified
    near-duplicates joined, then groups showing the same cells merged."""
    root = Path(data_dir)
    paths = list(images) if images is not None else list_images(root)
    clock = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="bloodsearch-groups-") as tmp:
        with clock("image features"):
            store, errors = _extract(root, paths, Path(tmp), workers, progress, warn)
        with clock("words"):
            counts = word_counts(store, learn_vocabulary(store, vocabulary))
            vectors = image_vectors(counts)
            index, score = most_similar(vectors, neighbours)
        setup_args = (tmp, str(root), paths)
        with clock("near-duplicates"):
            checks = _verify(orientation_tasks(unique_pairs(index, score), counts), "near-duplicates", setup_args,
                             workers, progress)
        with clock("overlaps"):
            labels = connected(len(paths), ((c.i, c.j) for c in checks if c.is_match()))
            index, score = most_similar(vectors, OUTSIDE, labels=labels)
            overlap_checks = _verify(orientation_tasks(between_groups(index, score, labels), counts),
                                     "overlaps", setup_args, workers, progress)
        del store
    grouping = assemble_image_groups(paths, checks, overlap_checks, errors)
    grouping.seconds = clock.seconds
    return grouping
