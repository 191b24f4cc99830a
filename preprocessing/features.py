"""Local features of a blood-smear field and the geometry that ties two views of one field.

SIFT keypoints, and the similarity transform (rotation, uniform scale, shift) that RANSAC
finds between two sets of them: what an augmented copy of a field (rotated, zoomed,
shifted, maybe mirrored) shares with the field it was made from.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .images import UnreadableImage

# SIFT's default contrast threshold (0.04) finds ~80 keypoints in a 320x240 smear, which
# leaves true matches with 10-20 inliers, too close to chance; 0.02 finds ~250.
CONTRAST_THRESHOLD = 0.02
MAX_KEYPOINTS = 500
# Lowe's ratio test, a little looser than his 0.7: smears repeat (red cells look alike), and
# RANSAC removes what the looser test lets through.
RATIO = 0.8
RANSAC_PX = 3.0
# Pixels darker than this are the black fill of a rotation's corners, not the smear (whose
# darkest nuclei are far brighter in gray).
FILL_LEVEL = 12
# Keypoints on the fill's edge describe the corner's straight border, which every rotated
# copy has: keep them this far away from it.
FILL_MARGIN_PX = 6


@dataclass(frozen=True)
class Features:
    """SIFT keypoints of one picture: where they are and what they look like."""

    points: np.ndarray  # (N, 2) float32, x then y, in pixels
    descriptors: np.ndarray  # (N, 128) uint8: OpenCV's SIFT values are whole numbers 0..255
    size: tuple[int, int]  # (width, height) of the picture they were found in

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class Alignment:
    """The similarity transform that maps one picture's keypoints onto another's."""

    matches: int  # keypoint pairs that passed the ratio test
    inliers: int  # of those, the ones the transform agrees with
    scale: float
    angle: float  # degrees, counter-clockwise in image coordinates
    shift: tuple[float, float]  # (dx, dy) in the second picture's pixels

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0

    @property
    def matrix(self) -> np.ndarray:
        """The 2x3 matrix that moves the first picture onto the second."""
        rad = math.radians(self.angle)
        c, s = self.scale * math.cos(rad), self.scale * math.sin(rad)
        return np.float32([[c, -s, self.shift[0]], [s, c, self.shift[1]]])

    def is_plausible(self, min_inliers: int, scale_range: tuple[float, float]) -> bool:
        return self.inliers >= min_inliers and scale_range[0] <= self.scale <= scale_range[1]


@functools.lru_cache(maxsize=1)
def _sift() -> cv2.SIFT:
    return cv2.SIFT_create(nfeatures=MAX_KEYPOINTS, contrastThreshold=CONTRAST_THRESHOLD)


@functools.lru_cache(maxsize=1)
def _matcher() -> cv2.BFMatcher:
    return cv2.BFMatcher(cv2.NORM_L2)


def read_gray(path: str | Path, scale: float = 1.0) -> np.ndarray:
    """The picture as 8-bit gray, resized by `scale`; UnreadableImage when it cannot be decoded."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None or gray.size == 0:
        raise UnreadableImage(f"{path}: not a readable image")
    if scale != 1.0:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        # Area averaging is what a 2x downscale that kept the smear's detail looks like.
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


def content_mask(gray: np.ndarray) -> np.ndarray:
    """255 where the smear is, 0 on and near the black fill that rotation leaves in corners."""
    smear = (gray > FILL_LEVEL).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * FILL_MARGIN_PX + 1, 2 * FILL_MARGIN_PX + 1))
    # Isolated dark pixels inside the smear are not fill: close them before keeping away from fill.
    smear = cv2.morphologyEx(smear, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return cv2.erode(smear, kernel, borderType=cv2.BORDER_REPLICATE) * 255


def detect(gray: np.ndarray, mask: np.ndarray | None = None) -> Features:
    keypoints, descriptors = _sift().detectAndCompute(gray, mask)
    if descriptors is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (gray.shape[1], gray.shape[0]))
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    return Features(points, descriptors.astype(np.uint8), (gray.shape[1], gray.shape[0]))


def field_features(gray: np.ndarray) -> Features:
    """Features of a smear that may have black rotation corners; none on the corners."""
    return detect(gray, content_mask(gray))


def mirror(gray: np.ndarray) -> np.ndarray:
    """Left-right mirror: SIFT descriptors are not mirror-invariant, so a mirrored copy of a
    field matches only the mirrored field's own features."""
    return cv2.flip(gray, 1)


def ratio_matches(a: Features, b: Features, ratio: float = RATIO) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into a, into b) of keypoint pairs that pass Lowe's ratio test."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = _matcher().knnMatch(a.descriptors.astype(np.float32), b.descriptors.astype(np.float32), k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    return np.array([m.queryIdx for m in good], np.int64), np.array([m.trainIdx for m in good], np.int64)


def align(a: Features, b: Features, min_matches: int = 6) -> Alignment | None:
    """The similarity transform mapping a's keypoints onto b's (RANSAC), or None when too
    few keypoints match to estimate one."""
    ia, ib = ratio_matches(a, b)
    if len(ia) < min_matches:
        return None
    matrix, inliers = cv2.estimateAffinePartial2D(a.points[ia], b.points[ib], method=cv2.RANSAC,
                                                  ransacReprojThreshold=RANSAC_PX, maxIters=2000, confidence=0.995)
    if matrix is None or inliers is None:
        return None
    (c, s), shift = matrix[:, 0], matrix[:, 2]
    # A degenerate fit (all inliers on one spot) has scale near 0: is_plausible rejects it.
    return Alignment(matches=len(ia), inliers=int(inliers.sum()), scale=float(math.hypot(c, s)),
                     angle=float(math.degrees(math.atan2(s, c))), shift=(float(shift[0]), float(shift[1])))


def aligned_correlation(a: np.ndarray, b: np.ndarray, matrix: np.ndarray) -> tuple[float, float]:
    """Pearson correlation of the smear pixels a and b share once a is moved into b's frame
    by matrix (2x3), and the share of b they cover. Two views of the same cells give ~0.9;
    keypoints that line up by chance, or dust on the optics (at the same pixels in every
    field), give under 0.4. Black rotation corners take no part."""
    h, w = b.shape[:2]
    moved = cv2.warpAffine(a.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(content_mask(a), matrix, (w, h), flags=cv2.INTER_NEAREST) > 0
    inside &= content_mask(b) > 0
    if inside.sum() < 100:
        return 0.0, float(inside.mean())
    x, y = moved[inside], b[inside].astype(np.float32)
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return (float((x * y).sum()) / denominator if denominator > 0 else 0.0), float(inside.mean())


# OpenCV's SIFT descriptor is 4 x 4 cells x 8 orientation bins; in a mirrored picture the
# keypoint's cells come in reverse row order and its orientations turn the other way.
MIRRORED_BINS = (np.arange(128).reshape(4, 4, 8)[::-1][:, :, (-np.arange(8)) % 8]).ravel()


def mirrored(features: Features) -> Features:
    """What SIFT would find in the left-right mirror of the picture, without finding it again:
    the same keypoints mirrored, their descriptors permuted (close to, not exactly, what
    detection on the mirrored picture gives: about a quarter of the distance between two
    unrelated keypoints)."""
    points = features.points.copy()
    points[:, 0] = features.size[0] - 1 - points[:, 0]
    return Features(points, np.ascontiguousarray(features.descriptors[:, MIRRORED_BINS]), features.size)
