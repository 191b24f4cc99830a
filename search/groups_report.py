"""The report of `search data groups`: what a person reads to trust (or doubt) the groups.

groups.json holds everything; summary.txt the few lines that matter; near-misses.png shows
the pairs in different groups that matched best, side by side: if any of them shows the
same cells, two groups should have been one.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from preprocessing.dataset import SPLIT_NAMES
from preprocessing.discovery import Grouping

SHEET_PAIRS = 12
SHEET_WIDTH = 320  # pixels per picture on the sheet: the images' own size


def split_and_class(path: str) -> tuple[str, str]:
    """('TRAIN', 'EOSINOPHIL') for TRAIN/EOSINOPHIL/x.jpeg; ('', 'EOSINOPHIL') in a flat layout."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[0].upper() in SPLIT_NAMES:
        return parts[0], parts[-2]
    return "", parts[-2] if len(parts) >= 2 else ""


def _sizes(counts: list[int]) -> dict:
    return {"min": min(counts), "median": statistics.median(counts), "max": max(counts)} if counts else {}


def per_class(grouping: Grouping) -> dict:
    """{split: {class: images, groups and group sizes}}; a group's size is its images there."""
    members: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in grouping.rows:
        members[split_and_class(r.path)][r.group] += 1
    table: dict = {}
    for (split, cls), groups in sorted(members.items()):
        table.setdefault(split or "all", {})[cls] = {
            "images": sum(groups.values()), "groups": len(groups), "group_sizes": _sizes(list(groups.values()))}
    return table


def shared_groups(grouping: Grouping, key) -> list[dict]:
    """Groups whose images fall in more than one key(path) (split, or class): a leak across
    TRAIN and TEST, or a field whose copies sit in two class folders."""
    seen: dict[str, Counter] = defaultdict(Counter)
    for r in grouping.rows:
        seen[r.group][key(r.path)] += 1
    return [{"group": g, "images": dict(sorted(c.items()))} for g, c in sorted(seen.items()) if len(c) > 1]


def report_dict(grouping: Grouping, data_dir: str, sources: str | None) -> dict:
    sizes = Counter(r.group for r in grouping.rows)
    return {
        "mode": grouping.mode,
        "data_dir": str(data_dir),
        "sources": str(sources) if sources else None,
        "images": len(grouping.rows),
        "groups": len(sizes),
        "group_sizes": _sizes(list(sizes.values())),
        "per_class": per_class(grouping),
        "groups_across_splits": shared_groups(grouping, lambda p: split_and_class(p)[0] or "all"),
        "groups_across_classes": shared_groups(grouping, lambda p: split_and_class(p)[1]),
        "merged": grouping.merged,
        "overlaps": [{"a": o.a, "b": o.b, "inliers": o.inliers, "shift": list(o.shift), "correlation": o.correlation}
                     for o in grouping.overlaps],
        "unmatched": grouping.unmatched,
        "unreadable": [{"file": p, "error": e} for p, e in grouping.unreadable],
        "unreadable_sources": [{"file": p, "error": e} for p, e in grouping.unreadable_sources],
        "near_misses": [{"a": n.a, "b": n.b, "inliers": n.inliers, "group_a": n.group_a, "group_b": n.group_b}
                        for n in grouping.near_misses],
        "seconds": grouping.seconds,
    }


def summary_lines(report: dict) -> list[str]:
    lines = [f"{report['images']} images in {report['groups']} groups "
             f"(sizes {report['group_sizes'].get('min')}-{report['group_sizes'].get('max')}, "
             f"median {report['group_sizes'].get('median')}), "
             + (f"matched to the fields in {report['sources']}" if report["sources"] else "clustered without sources")]
    for split, classes in report["per_class"].items():
        cells = ", ".join(f"{cls} {c['groups']} ({c['images']} images)" for cls, c in classes.items())
        lines.append(f"  {split}: groups per class: {cells}")
    merged = report["merged"]
    lines.append(f"merged clusters: {len(merged)} ({sum(map(len, merged))} members, "
                 f"from {len(report['overlaps'])} overlapping pairs)")
    across = report["groups_across_splits"]
    if across:
        # TEST_SIMPLE's fields are TEST's: the leaks that matter involve TRAIN.
        with_train = [g for g in across if "TRAIN" in g["images"]]
        lines.append(f"groups in more than one split: {len(across)}, {len(with_train)} of them with TRAIN"
                     + (": " + "; ".join(f"{g['group']} {g['images']}" for g in with_train[:8]) if with_train else "")
                     + (" ..." if len(with_train) > 8 else ""))
    lines.append(f"groups in more than one class folder: {len(report['groups_across_classes'])}")
    lines.append(f"unmatched images: {len(report['unmatched'])}" +
                 (f" ({', '.join(report['unmatched'][:5])}{' ...' if len(report['unmatched']) > 5 else ''})"
                  if report["unmatched"] else ""))
    if report["unreadable"] or report["unreadable_sources"]:
        lines.append(f"unreadable: {len(report['unreadable'])} images, {len(report['unreadable_sources'])} sources")
    if report["near_misses"]:
        top = report["near_misses"][0]
        lines.append(f"closest pair in different groups: {top['inliers']} inliers ({top['a']} vs {top['b']})")
    return lines


def _picture(path: Path, width: int = SHEET_WIDTH) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        image = np.zeros((width * 3 // 4, width, 3), np.uint8)
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.cvtColor(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def near_miss_sheet(grouping: Grouping, data_dir: Path, path: Path, title: str) -> bool:
    """PNG: one row per near miss, its two pictures side by side. False when there are none."""
    pairs = grouping.near_misses[:SHEET_PAIRS]
    if not pairs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 2.6 * len(pairs) + 0.6
    fig, axes = plt.subplots(len(pairs), 2, figsize=(7, height), squeeze=False)
    for row, n in zip(axes, pairs):
        for ax, name, group in ((row[0], n.a, n.group_a), (row[1], n.b, n.group_b)):
            file = Path(name) if Path(name).is_absolute() else data_dir / name
            ax.imshow(_picture(file))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{Path(name).name}\ngroup {Path(group).name}", fontsize=7)
        row[0].set_ylabel(f"{n.inliers} inliers", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))  # room for the title above the first row
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return True


def write_report(grouping: Grouping, folder: Path, data_dir: str, sources: str | None) -> dict:
    """groups.json, summary.txt and near-misses.png in folder; returns the report."""
    folder.mkdir(parents=True, exist_ok=True)
    report = report_dict(grouping, data_dir, sources)
    sheet = folder / "near-misses.png"
    if near_miss_sheet(grouping, Path(data_dir), sheet,
                       "Closest pairs in different groups: the same cells here would mean a missed merge"):
        report["contact_sheet"] = sheet.name
    (folder / "groups.json").write_text(json.dumps(report, indent=1))
    (folder / "summary.txt").write_text("\n".join(summary_lines(report)) + "\n")
    return report
