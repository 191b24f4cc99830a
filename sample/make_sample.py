"""How sample/blood-cells was made from the public data set and its groups (the source field
of every image, groups/public-blood-cells.csv, made by `search data groups`):

    python sample/make_sample.py PATH/TO/dataset2-master/images groups/public-blood-cells.csv sample/blood-cells

Per class, up to 25 fields of the public TRAIN split with 5 images of each, and 3 fields of its
TEST split that no TRAIN field overlaps, 4 images each; drawn with a fixed seed; file names
kept. The sample's own groups.csv names each image's field, so every split made on the sample
(the demo's validation split, --cv folds, TEST) keeps a field on one side.
"""
import csv
import random
import shutil
import sys
from pathlib import Path

TRAIN_FIELDS, TRAIN_IMAGES, TEST_FIELDS, TEST_IMAGES = 25, 5, 3, 4


def read_groups(path: Path) -> dict[str, str]:
    rows = list(csv.reader(path.read_text().splitlines()))
    return {r[0]: r[1] for r in rows[1:] if len(r) >= 2}


def fields(groups: dict[str, str], split: str, cls: str) -> dict[str, list[str]]:
    """group -> its images in one class folder of one split."""
    out: dict[str, list[str]] = {}
    for rel, group in sorted(groups.items()):
        if rel.startswith(f"{split}/{cls}/"):
            out.setdefault(group, []).append(rel)
    return out


def main(src: Path, groups_csv: Path, dst: Path) -> None:
    rng = random.Random(0)
    groups = read_groups(groups_csv)
    train_groups = {g for rel, g in groups.items() if rel.startswith("TRAIN/")}
    chosen: list[tuple[str, str]] = []
    for cls in sorted(p.name for p in (src / "TRAIN").iterdir() if p.is_dir()):
        train = fields(groups, "TRAIN", cls)
        test = {g: files for g, files in fields(groups, "TEST", cls).items() if g not in train_groups}
        for table, n_fields, n_images in ((train, TRAIN_FIELDS, TRAIN_IMAGES), (test, TEST_FIELDS, TEST_IMAGES)):
            for group in sorted(rng.sample(sorted(table), min(n_fields, len(table)))):
                for rel in sorted(rng.sample(table[group], min(n_images, len(table[group])))):
                    chosen.append((rel, group))
    if dst.exists():
        shutil.rmtree(dst)
    for rel, _ in chosen:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
    with (dst / "groups.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "group"), *chosen])
    print(f"{len(chosen)} images of {len({g for _, g in chosen})} fields written to {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
