"""Launch settings: what `search launch` was asked to do, stored with the study for `resume`."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields

from search.metrics import METRICS  # noqa: F401  (what a trial's value can measure: the registry's)
from search.urls import redact

SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("median", "hyperband", "successive-halving", "wilcoxon", "none")
EPOCH_PRUNERS = ("median", "hyperband", "successive-halving")
LOG_MODELS = ("all", "best", "none")
SETTINGS_ATTR = "bloodsearch.settings"
DATA_ATTR = "bloodsearch.data"  # the TRAIN files a study was created on (names and sizes)
# What gives a trial's value its meaning: fixed when the study is created. A launch or worker
# that differs in one would compare trials measured differently (another split, another budget).
DEFINING = {"study": "--study", "study_digest": "--study (the file's content digest)", "seed": "--seed",
            "val_fraction": "--val-fraction", "epochs": "--epochs", "patience": "--patience",
            "warmup_epochs": "--warmup-epochs", "repeats": "--repeats",
            "cv": "--cv", "metric": "--metric", "tta": "--tta",
            "groups_digest": "--groups/--group-pattern (digest of TRAIN's groups)"}
# Studies made before groups were an input split by `_<k>_` in file names, which is not a cell.
LEGACY_GROUPS = "file names (_<k>_ read as a cell id, which leaks: docs/groups.md)"
# Free to change from one launch to the next; the change is said.
CHANGEABLE = {"trials": "--trials", "workers": "--workers", "timeout": "--timeout", "sampler": "--sampler",
              "sampler_seed": "--sampler-seed", "pruner": "--pruner", "log_models": "--log-models",
              "params": "--param", "trials_per_worker": "--trials-per-worker", "threads": "--threads",
              "gpus": "--gpus", "workers_per_gpu": "--workers-per-gpu"}
PARENT_RUN_ATTR = "bloodsearch.parent_run_id"
# A study's name is also its MLflow experiment's and its models' registered names, which
# refuse '.', '/', ':', '%' and quotes; Optuna's storage caps names too.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_study_name(name: str) -> str:
    """The name, or a one-line error saying what a name may hold."""
    from search.errors import SearchError

    if not STUDY_NAME.fullmatch(name or ""):
        shown = repr(name) if len(name) <= 40 else repr(name[:40]) + f"... ({len(name)} characters)"
        raise SearchError(f"--study-name {shown}: a study name is 1 to 64 letters, digits, '-' and '_', starting "
                          f"with a letter or digit (it also names the study's MLflow experiment and models)")
    return name


@dataclass
class SearchSettings:
    study: str
    study_name: str
    storage: str
    tracking_uri: str
    data_dir: str
    trials: int
    cache_dir: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    epochs: int = 20
    patience: int = 5
    warmup_epochs: int = 0  # the learning rate rises over these first epochs; early stopping starts after
    seed: int = 0
    timeout: float | None = None
    workers: int = 1  # 0: one per GPU (times workers_per_gpu), or one without GPUs
    params: dict[str, str] = field(default_factory=dict)
    trials_per_worker: int = 5
    log_models: str = "all"
    val_fraction: float = 0.2
    heartbeat_interval: int = 10
    grace_period: int = 30
    repeats: int = 1
    sampler_seed: int | None = None
    study_digest: str | None = None  # a .py study's content, so a changed file is noticed
    cv: int = 0  # K >= 2: each trial trains K grouped folds of TRAIN; 0: one validation split
    metric: str = "accuracy"  # what the trial's value measures (search.metrics.REGISTRY)
    tta: str = "none"  # test-time augmentation of validation and out-of-fold predictions
    threads: int | None = None  # TensorFlow threads per worker; None: TensorFlow's default (all cores)
    groups: str | None = None  # a CSV of path,group (absolute path); see preprocessing.groups
    group_pattern: str | None = None  # or a regular expression on file names
    groups_digest: str | None = None  # what the grouping made of TRAIN: fixed with the study
    gpus: str | None = None  # --gpus: all, none or indices such as 0,2; None: every GPU found
    workers_per_gpu: int = 1

    # Where the study lives is how it is found again, so it is not stored with it.
    _NOT_STORED = ("storage",)

    def to_json(self) -> str:
        """What the study stores for `resume`: no storage URL, no password."""
        stored = {k: v for k, v in asdict(self).items() if k not in self._NOT_STORED}
        stored["tracking_uri"] = redact(self.tracking_uri)
        return json.dumps(stored)

    @classmethod
    def from_json(cls, text: str, **overrides) -> "SearchSettings":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in json.loads(text).items() if k in known}
        data.setdefault("groups_digest", LEGACY_GROUPS)
        if data.get("metric") == "cell-accuracy":  # renamed: a cell was never what the group was
            data["metric"] = "group-accuracy"
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def grouping(self):
        """The preprocessing.Grouping these settings name."""
        from preprocessing.groups import Grouping

        return Grouping(file=self.groups, pattern=self.group_pattern)

    def to_payload(self) -> str:
        """Everything, credentials included: for a worker's standard input, never argv."""
        return json.dumps(asdict(self))

    @classmethod
    def from_payload(cls, text: str) -> "SearchSettings":
        return cls(**json.loads(text))

    def differences(self, given: "SearchSettings", names: dict[str, str]) -> list[tuple[str, object, object]]:
        """(option, this value, given value) for each of `names` where the two differ."""
        return [(option, getattr(self, key), getattr(given, key)) for key, option in names.items()
                if getattr(self, key) != getattr(given, key)]

    def mlflow_params(self) -> dict:
        return {"search.epochs": self.epochs, "search.patience": self.patience,
                "search.warmup_epochs": self.warmup_epochs, "search.seed": self.seed,
                "search.sampler": self.sampler, "search.pruner": self.pruner, "search.study": self.study,
                "search.val_fraction": self.val_fraction, "search.data_dir": self.data_dir,
                "search.repeats": self.repeats, "search.sampler_seed": self.sampler_seed_base,
                "search.cv": self.cv, "search.metric": self.metric, "search.tta": self.tta,
                "search.groups": self.groups or "", "search.group_pattern": self.group_pattern or "",
                "search.groups_digest": self.groups_digest or ""}

    @property
    def max_steps(self) -> int:
        """The most steps an epoch pruner sees: every fold's epochs, one after another."""
        return self.epochs * max(1, self.cv)

    @property
    def sampler_seed_base(self) -> int:
        """--sampler-seed, or --seed: two studies on one split can draw different trials."""
        return self.seed if self.sampler_seed is None else self.sampler_seed

    def worker_sampler_seed(self, trials_so_far: int, spawned: int) -> int:
        # A sampler seeded alike in every worker (or every launch) replays the same random
        # start-up points; the study's history and the spawn count make each one distinct
        # yet reproducible.
        return (self.sampler_seed_base * 100_003 + trials_so_far * 1_009 + spawned) % (2**31 - 1)
