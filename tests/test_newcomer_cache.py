"""The newcomer's issue, points 7 and 13, through the real CLI on tiny data: a read-only
--cache-dir is refused up front by the commands that build entries, and read by those that
only need complete ones; a file rewritten with its name, size and mtime kept (rsync -a,
cp -p, a tar restore) is decoded again instead of served from the old entry."""
import io
import json
import os
import shutil
import subprocess
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import optuna
import pytest

from preprocessing import ImageSpec, load_dataset
from preprocessing import digests
from preprocessing.images import load_image
from preprocessing.synthetic import make_split_dataset
from searchtools import env_for, launched_study, load, one_line_error, run_search, search_cmd

STUDY = "seed-fcn"
TINY = ["--study", STUDY, "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--epochs", "1", "--quiet"]
DATASET = {"cells_per_class": 4, "copies": 2}
MOUNT_READ_ONLY = 'mount --bind -o ro "$0" "$0" && exec "$@"'


# --- a read-only folder, honestly --------------------------------------------------------------
# chmod does not stop root, and the suite may run as root: there the command runs in a
# private mount namespace where the folder is bind-mounted read-only (EROFS, what a read-only
# share gives). As any other user, chmod a-w is the real thing.

def _can_mount_read_only(scratch: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && ! touch "$0/x" 2>/dev/null',
                            str(scratch)], capture_output=True)
    return probe.returncode == 0


@contextmanager
def _writes_refused(folder: Path):
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(mode & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """run(workdir, folder, *args): the CLI with `folder` read-only to it."""
    as_root = os.geteuid() == 0
    if as_root and not _can_mount_read_only(tmp_path_factory.mktemp("ro-probe")):
        pytest.skip("runs as root, where chmod does not stop writes, and cannot bind-mount a folder read-only")

    def run(workdir: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
        command = search_cmd(*args)
        if as_root:
            command = ["unshare", "-m", "sh", "-c", MOUNT_READ_ONLY, str(folder.resolve()), *command]
        with nullcontext() if as_root else _writes_refused(folder):
            return subprocess.run(command, cwd=workdir, env=env_for(workdir), capture_output=True,
                                  text=True, timeout=600)
    return run


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A launched study; `train-only` holds its cache as the launch left it (no TEST entry)."""
    work = launched_study(tmp_path_factory, "newcomer-cache", TINY, trials=1, **DATASET)
    shutil.copytree(work / "cache", work / "train-only")
    return work


# --- 7. a read-only --cache-dir -----------------------------------------------------------------

@pytest.mark.slow
def test_7_launch_resume_and_worker_refuse_a_read_only_cache_dir_before_any_study(study, read_only):
    ro = study / "ro"
    ro.mkdir(exist_ok=True)
    trials = len(load(study, STUDY).trials)
    launch = read_only(study, ro, "launch", *TINY, "--study-name", "ro-study", "--trials", "1", "--data-dir", "data",
                       "--cache-dir", "ro")
    one_line_error(launch, "--cache-dir ro: cannot write there (")
    below = read_only(study, ro, "launch", *TINY, "--study-name", "ro-study", "--trials", "1", "--data-dir", "data",
                      "--cache-dir", "ro/new")
    one_line_error(below, "--cache-dir ro/new: cannot write there (")
    assert "ro-study" not in optuna.get_all_study_names(f"sqlite:///{study / 'optuna.db'}")
    worker = read_only(study, ro, "worker", "--study-name", STUDY, "--cache-dir", str(ro), "--quiet")
    one_line_error(worker, f"--cache-dir {ro}: cannot write there (")
    # resume takes the launch's cache dir: that folder, now read-only.
    stored = study / "cache"
    resume = read_only(study, stored, "resume", "--study-name", STUDY, "--trials", "2", "--quiet")
    one_line_error(resume, f"--cache-dir {stored}: cannot write there (")
    assert len(load(study, STUDY).trials) == trials and not list(ro.iterdir())


@pytest.mark.slow
def test_7_evaluate_predict_and_export_read_a_complete_read_only_cache(study, read_only):
    writable = run_search(study, "evaluate", "--study-name", STUDY, "--json")
    assert writable.returncode == 0, writable.stderr
    complete = study / "complete"
    shutil.copytree(study / "cache", complete)
    listing = sorted(p.relative_to(complete) for p in complete.rglob("*"))

    evaluated = read_only(study, complete, "evaluate", "--study-name", STUDY, "--json", "--cache-dir", "complete")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout) == json.loads(writable.stdout)
    image = next((study / "data" / "TEST").rglob("*.png"))
    predicted = read_only(study, complete, "predict", "--study-name", STUDY, "--cache-dir", "complete", str(image))
    assert predicted.returncode == 0 and image.name in predicted.stdout, predicted.stderr
    exported = read_only(study, complete, "export", "--study-name", STUDY, "--cache-dir", "complete", "--out", "exp")
    assert exported.returncode == 0 and (study / "exp" / "model.keras").is_file(), exported.stderr
    assert sorted(p.relative_to(complete) for p in complete.rglob("*")) == listing


@pytest.mark.slow
def test_7_an_entry_missing_from_a_read_only_cache_is_one_line_naming_the_folder(study, read_only):
    missing = read_only(study, study / "train-only", "evaluate", "--study-name", STUDY, "--cache-dir", "train-only")
    one_line_error(missing, "cache dir train-only is not writable (", "(TEST) at 16x16", "writable --cache-dir")


# --- 13. a file rewritten with its name, size and mtime kept ------------------------------------

def _rewrite_keeping_name_size_and_mtime(path: Path, colour=(250, 20, 20)) -> None:
    """cp -p of other pixels over `path`: a flat image, padded with a text chunk to the
    old byte size, then the old times put back."""
    from PIL import Image, PngImagePlugin

    st = path.stat()
    with Image.open(path) as old:
        flat = Image.new(old.mode, old.size, colour[:len(old.getbands())])

    def encoded(pad: int) -> bytes:
        info = PngImagePlugin.PngInfo()
        info.add_text("pad", "x" * pad)
        out = io.BytesIO()
        flat.save(out, "PNG", pnginfo=info)
        return out.getvalue()

    data = encoded(st.st_size - len(encoded(0)))
    assert len(data) == st.st_size, "the flat image does not encode smaller than the drawn one"
    with open(path, "r+b") as f:  # in place, as cp -p writes: same inode
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _train_entries(work: Path) -> dict[str, dict]:
    metas = [json.loads(m.read_text()) for m in (work / "cache" / "images").glob("*/meta.json")]
    return {m["key"]: m for m in metas if m["split"] == "TRAIN"}


@pytest.mark.slow
def test_13_a_rewritten_file_with_its_mtime_restored_gets_its_new_pixels(tmp_path_factory):
    work = launched_study(tmp_path_factory, "newcomer-stale", TINY, trials=1, **DATASET)
    (old_key, old), = _train_entries(work).items()
    train = load_dataset(work / "data").train
    changed = train.path(0)
    _rewrite_keeping_name_size_and_mtime(changed)
    assert load_dataset(work / "data").train.fingerprint == train.fingerprint  # what the old key saw: nothing

    again = run_search(work, "launch", *TINY, "--trials", "2", "--data-dir", "data")
    assert again.returncode == 0, again.stderr
    entries = _train_entries(work)
    (new_key, new), = ((k, m) for k, m in entries.items() if k != old_key)
    assert new["fingerprint"] == old["fingerprint"] and new["content"] != old["content"]
    spec = ImageSpec(**new["config"])
    rows = {key: _row(work / "cache" / "images" / key, spec, 0) for key in (old_key, new_key)}
    np.testing.assert_array_equal(rows[new_key], load_image(changed, spec))
    assert not np.array_equal(rows[new_key], rows[old_key])
    assert len(load(work, STUDY).trials) == 2


def _row(entry: Path, spec: ImageSpec, i: int) -> np.ndarray:
    shape = (*spec.size, spec.channels)
    images = np.fromfile(entry / "images.u8", dtype=np.uint8)
    return images.reshape(-1, *shape)[i]


# --- 13. the digest's memo: spares unchanged files, never trusts a changed one -------------------

@pytest.fixture
def counted_reads(monkeypatch):
    reads = []
    real = digests.file_digest
    monkeypatch.setattr(digests, "file_digest", lambda path: reads.append(path) or real(path))
    return reads


def _clock(monkeypatch, offset_s: float) -> None:
    """Hashing as if it began offset_s from now: a file's age decides whether it is memoised."""
    real = digests.time.time_ns
    monkeypatch.setattr(digests.time, "time_ns", lambda: real() + int(offset_s * 1e9))


def test_13_memo_spares_unchanged_files_and_rereads_a_replaced_one(tmp_path, monkeypatch, counted_reads):
    train = load_dataset(make_split_dataset(tmp_path / "data", **DATASET)).train
    _clock(monkeypatch, 10)  # the files are 10 s old: past the racy window
    first = digests.content_digest(train, tmp_path / "cache")
    assert len(counted_reads) == len(train)
    counted_reads.clear()
    assert digests.content_digest(train, tmp_path / "cache") == first and counted_reads == []

    # rsync -a: other bytes into a new file renamed over the old one, mtime restored.
    target = train.path(3)
    st = target.stat()
    copy = target.with_name(".rsync-tmp")
    shutil.copyfile(target, copy)
    _rewrite_keeping_name_size_and_mtime(copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, target)
    assert load_dataset(tmp_path / "data").train.fingerprint == train.fingerprint
    assert digests.content_digest(train, tmp_path / "cache") != first and counted_reads == [target]


def test_13_files_changed_within_the_racy_window_are_read_every_time(tmp_path, monkeypatch, counted_reads):
    train = load_dataset(make_split_dataset(tmp_path / "data", **DATASET)).train
    _clock(monkeypatch, -10)  # hashing began before the files last changed: their ctime proves nothing
    digests.content_digest(train, tmp_path / "cache")
    digests.content_digest(train, tmp_path / "cache")
    assert len(counted_reads) == 2 * len(train)

