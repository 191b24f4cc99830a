"""Artifact pictures. Matplotlib with the file-only backend: workers have no screen."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# A class name in a script the font lacks (CJK, say) is drawn as boxes; the counts beside it
# stay right, and a warning per glyph per trial only buried the output.
warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)


def confusion_png(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def learning_curves_png(history: dict[str, list[float]], path: Path, title: str) -> None:
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, label=prefix + key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def contact_sheet_png(rows: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]], path: Path, title: str) -> None:
    """rows: (class name, [(image, its Otsu-masked image), ...]); one row per class."""
    per_row = max(len(pairs) for _, pairs in rows) * 2
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 1.6, len(rows) * 1.4 + 0.6), squeeze=False)
    for r, (name, pairs) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c // 2 < len(pairs):
                picture = pairs[c // 2][c % 2]
                ax.imshow(picture[:, :, 0] if picture.shape[2] == 1 else picture, cmap="gray")
                if r == 0:
                    ax.set_title("image" if c % 2 == 0 else "Otsu mask", fontsize=8)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
