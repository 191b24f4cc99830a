"""An ensemble as one model: members (each a Predictor with its own preprocessing, TTA inside
its model) whose class probabilities are averaged with weights, saved as a folder of member
folders with ensemble.json. Choosing the members from a study is search.results.ensemble's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from search.errors import SearchError
from search.serving.destination import Destination

MANIFEST = "ensemble.json"


class EnsemblePredictor:
    """Members (each a Predictor with its own preprocessing, TTA inside its model) whose class
    probabilities are averaged with weights. Saved as a folder of member folders."""

    def __init__(self, members: list, weights: list[float], info: dict | None = None) -> None:
        self.members, self.weights = members, weights
        self.classes = list(members[0].classes)
        if any(list(m.classes) != self.classes for m in members):
            raise SearchError("ensemble members disagree on the classes")
        self.info = info or {}

    def predict(self, paths: list[Path], batch: int = 64) -> list[dict]:
        runs = [m.predict(paths, batch) for m in self.members]
        rows = []
        for i, row in enumerate(runs[0]):
            if any("error" in r[i] for r in runs):
                rows.append(next(r[i] for r in runs if "error" in r[i]))
                continue
            p = sum(w * np.array([r[i]["probabilities"][c] for c in self.classes]) for w, r in zip(self.weights, runs))
            rows.append({"file": row["file"], "class": self.classes[int(np.argmax(p))],
                         "probabilities": {c: float(v) for c, v in zip(self.classes, p)}})
        return rows

    def save(self, folder: "str | Path | Destination") -> Path:
        names = [f"member{i}" for i in range(len(self.members))] + [MANIFEST]
        folder = Destination.of(folder).prepare(names)
        for i, m in enumerate(self.members):
            m.save(folder / f"member{i}")
        (folder / MANIFEST).write_text(json.dumps(
            {"members": [{"dir": f"member{i}", "weight": w, "trial": (m.info or {}).get("trial")}
                         for i, (m, w) in enumerate(zip(self.members, self.weights))],
             "classes": self.classes, "info": self.info}, indent=1))
        return folder

    @classmethod
    def from_folder(cls, folder: str | Path) -> "EnsemblePredictor":
        from search.serving.predictor import Predictor  # a member; it hands an ensemble folder here

        folder = Path(folder)
        meta = json.loads((folder / MANIFEST).read_text())
        members = []
        for m in meta["members"]:
            if not (folder / m["dir"]).is_dir():
                raise SearchError(f"--model {folder}: ensemble member folder {m['dir']} is missing")
            members.append(Predictor.from_folder(folder / m["dir"]))
        return cls(members, [m["weight"] for m in meta["members"]], meta.get("info"))
