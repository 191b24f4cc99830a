"""How sample/blood-cells was made from the public data set (dataset2-master/images):

    python sample/make_sample.py PATH/TO/dataset2-master/images sample/blood-cells

Per class, the first 30 original cells of the public TRAIN split (all of them where it has
fewer: 27 lymphocytes, 16 monocytes), 5 augmented copies of each, and the first 3 cells of
its TEST split, 4 copies each; copies drawn with a fixed seed; file names kept, so
`_<k>_<n>.jpeg` still names cell k's copy n, which the grouped splits rely on.
"""
import random
import re
import shutil
import sys
from pathlib import Path

TRAIN_CELLS, TRAIN_COPIES, TEST_CELLS, TEST_COPIES = 30, 5, 3, 4
COPY = re.compile(r"^_(\d+)_\d+\.jpe?g$")


def main(src: Path, dst: Path) -> None:
    rng = random.Random(0)
    for split, cells, copies in (("TRAIN", TRAIN_CELLS, TRAIN_COPIES), ("TEST", TEST_CELLS, TEST_COPIES)):
        for class_dir in sorted((src / split).iterdir()):
            by_cell: dict[int, list[Path]] = {}
            for f in sorted(class_dir.iterdir()):
                if m := COPY.match(f.name):
                    by_cell.setdefault(int(m.group(1)), []).append(f)
            out = dst / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for cell in sorted(by_cell)[:cells]:
                for f in sorted(rng.sample(by_cell[cell], min(copies, len(by_cell[cell])))):
                    shutil.copy2(f, out / f.name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
