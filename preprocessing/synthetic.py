"""Tiny synthetic image sets whose classes a tiny model can tell apart.

Each class draws a dark shape of its own on a light, noisy background; files are named
`_<k>_<n>.<ext>` like the public set, and the data dir's groups.csv says which files are
copies of one original (cell k of its class), as the public set's groups CSV does.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def draw(cls: int, rng: np.random.Generator, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """(H, W, 3) uint8: class 0 a disc, 1 a square, 2 a horizontal bar, 3 a vertical bar."""
    return draw_with_mask(cls, rng, size)[0]


def draw_with_mask(cls: int, rng: np.random.Generator, size: tuple[int, int] = (24, 32)) -> tuple[np.ndarray, np.ndarray]:
    """draw()'s image and its true foreground (the shape), as a boolean (H, W) mask."""
    h, w = size
    img = rng.normal(210, 12, (h, w, 3)).clip(0, 255)
    cy, cx = h // 2 + rng.integers(-2, 3), w // 2 + rng.integers(-2, 3)
    yy, xx = np.mgrid[:h, :w]
    r = min(h, w) // 4
    shapes = [
        (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r,
        (abs(yy - cy) <= r) & (abs(xx - cx) <= r),
        (abs(yy - cy) <= r // 3) & (abs(xx - cx) <= 2 * r),
        (abs(yy - cy) <= 2 * r) & (abs(xx - cx) <= r // 3),
    ]
    colour = np.array([90, 40, 140]) + rng.integers(-15, 16, 3)
    mask = shapes[cls % len(shapes)]
    img[mask] = colour
    return img.astype(np.uint8), mask


def make_image_set(root: Path, cells_per_class: int = 6, copies: int = 3, classes=CLASSES,
                   size: tuple[int, int] = (24, 32), seed: int = 0, ext: str = ".png",
                   masks: dict | None = None, groups_file: bool = True) -> Path:
    """Write <root>/<CLASS>/_<k>_<n><ext> and <root>/groups.csv; returns root. `masks`, if
    given, receives each file's true foreground by path relative to root's parent."""
    rows = _draw_set(root, cells_per_class, copies, classes, size, seed, ext, masks)
    if groups_file:
        write_groups(root, [(str(p.relative_to(root).as_posix()), g) for p, g in rows])
    return root


def write_groups(root: Path, rows: list[tuple[str, str]]) -> Path:
    with (root / "groups.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "group"), *rows])
    return root / "groups.csv"


def sync_groups(root: Path) -> None:
    """Bring groups.csv in line with the images under root after a test planted or removed
    files: a new file is a group of its own, a removed file's row goes."""
    from .dataset import IMAGE_SUFFIXES

    path = root / "groups.csv"
    present = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}
    rows = [r for r in list(csv.reader(path.read_text().splitlines()))[1:] if r and r[0] in present]
    known = {r[0] for r in rows}
    write_groups(root, rows + [[rel, rel] for rel in sorted(present - known)])


def _draw_set(root: Path, cells_per_class: int, copies: int, classes, size, seed: int, ext: str,
              masks: dict | None) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    n = 0
    for ci, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(cells_per_class):
            for _ in range(copies):
                image, mask = draw_with_mask(ci, rng, size)
                path = folder / f"_{k}_{n}{ext}"
                Image.fromarray(image).save(path)
                if masks is not None:
                    masks[str(path.relative_to(root.parent))] = mask
                rows.append((path, f"{root.name}-{name}-{k}"))
                n += 1
    return rows


def make_split_dataset(root: Path, cells_per_class: int = 6, copies: int = 3, test_cells: int = 2,
                       classes=CLASSES, size: tuple[int, int] = (24, 32), seed: int = 0) -> Path:
    """The public set's layout: TRAIN/<CLASS>/, TEST/<CLASS>/ with disjoint cells, and root/groups.csv."""
    rows = (_draw_set(root / "TRAIN", cells_per_class, copies, classes, size, seed, ".png", None)
            + _draw_set(root / "TEST", test_cells, copies, classes, size, seed + 1, ".png", None))
    write_groups(root, [(str(p.relative_to(root).as_posix()), g) for p, g in rows])
    return root


def draw_field(rng: np.random.Generator, size: tuple[int, int] = (192, 256)) -> np.ndarray:
    """(H, W, 3) uint8: a made-up smear, pale with many coloured blobs of several sizes, so
    that SIFT finds keypoints everywhere (as in a real field) and no two fields share them."""
    import cv2

    h, w = size
    field = np.empty((h, w, 3), np.float32)
    field[:] = (205, 190, 215)
    for _ in range(int(h * w / 500)):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(3, 14)), int(rng.integers(3, 14)))
        colour = tuple(float(c) for c in rng.integers(40, 230, 3))
        cv2.ellipse(field, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    field += rng.normal(0, 6, field.shape)
    return cv2.GaussianBlur(field, (0, 0), 0.8).clip(20, 255).astype(np.uint8)


def augment_field(field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One copy as the public set's were made: turned up to 20 degrees (black corners),
    zoomed 0.92-1.06, shifted up to 8%, mirrored half the time, then downscaled 2x."""
    import cv2

    h, w = field.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-20, 20)), float(rng.uniform(0.92, 1.06)))
    matrix[:, 2] += (float(rng.uniform(-0.08, 0.08)) * w, float(rng.uniform(-0.08, 0.08)) * h)
    copy = cv2.warpAffine(field, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    if rng.random() < 0.5:
        copy = copy[:, ::-1]
    return cv2.resize(copy, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def make_field_set(root: Path, fields: int = 5, copies: int = 5, seed: int = 0,
                   size: tuple[int, int] = (192, 256)) -> dict[str, str]:
    """A tiny stand-in for the public set with its original fields:

    root/sources/field_XX.png: `fields` fields plus two more, field_A0 and field_A1, cut
    from one wider canvas at positions half a field apart (they overlap);
    root/images/{TRAIN,TEST}/<CLASS>/_<k>_<n>.jpeg: `copies` augmented copies of each, k
    shuffled so that it says nothing about the field.

    Returns each image's path (relative to root/images) -> the field it was made from.
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    sources = root / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    pictures = {f"field_{i:02d}": draw_field(rng, size) for i in range(fields)}
    canvas = draw_field(rng, (h, w + w // 2))
    pictures["field_A0"], pictures["field_A1"] = canvas[:, :w].copy(), canvas[:, w // 2:].copy()
    for name, picture in pictures.items():
        cv2.imwrite(str(sources / f"{name}.png"), picture)
    truth, n = {}, 0
    names = sorted(pictures)
    positions = rng.permutation(len(names) * copies)
    for f, name in enumerate(names):
        split = "TEST" if f % 3 == 2 else "TRAIN"
        cls = CLASSES[f % len(CLASSES)]
        folder = root / "images" / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            k = int(positions[f * copies + c]) % 7
            rel = f"{split}/{cls}/_{k}_{n}.jpeg"
            cv2.imwrite(str(root / "images" / rel), augment_field(pictures[name], rng), [cv2.IMWRITE_JPEG_QUALITY, 90])
            truth[rel] = name
            n += 1
    return truth
