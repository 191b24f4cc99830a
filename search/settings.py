"""Launch settings: what `search launch` was asked to do, stored with the study for `resume`."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("median", "hyperband", "successive-halving", "wilcoxon", "none")
EPOCH_PRUNERS = ("median", "hyperband", "successive-halving")
LOG_MODELS = ("all", "best", "none")
SETTINGS_ATTR = "bloodsearch.settings"
PARENT_RUN_ATTR = "bloodsearch.parent_run_id"


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
    seed: int = 0
    timeout: float | None = None
    workers: int = 1
    params: dict[str, str] = field(default_factory=dict)
    trials_per_worker: int = 5
    log_models: str = "all"
    val_fraction: float = 0.2
    heartbeat_interval: int = 10
    grace_period: int = 30
    repeats: int = 1
    sampler_seed: int | None = None

    # Where the study lives is how it is found again, so it is not stored with it.
    _NOT_STORED = ("storage",)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k not in self._NOT_STORED})

    @classmethod
    def from_json(cls, text: str, **overrides) -> "SearchSettings":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in json.loads(text).items() if k in known}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def mlflow_params(self) -> dict:
        return {"search.epochs": self.epochs, "search.patience": self.patience, "search.seed": self.seed,
                "search.sampler": self.sampler, "search.pruner": self.pruner, "search.study": self.study,
                "search.val_fraction": self.val_fraction, "search.data_dir": self.data_dir,
                "search.repeats": self.repeats, "search.sampler_seed": self.sampler_seed_base}

    @property
    def sampler_seed_base(self) -> int:
        """--sampler-seed, or --seed: two studies on one split can draw different trials."""
        return self.seed if self.sampler_seed is None else self.sampler_seed

    def worker_sampler_seed(self, trials_so_far: int, spawned: int) -> int:
        # A sampler seeded alike in every worker (or every launch) replays the same random
        # start-up points; the study's history and the spawn count make each one distinct
        # yet reproducible.
        return (self.sampler_seed_base * 100_003 + trials_so_far * 1_009 + spawned) % (2**31 - 1)
