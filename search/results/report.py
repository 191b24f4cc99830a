"""A study's pictures for humans: optimization history, parameter importances (Optuna's
evaluator), parallel coordinates and intermediate values, as PNG files logged to the study's
parent run."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.visualization import matplotlib as vis  # noqa: E402

PLOTS = {
    "optimization_history": vis.plot_optimization_history,
    "param_importances": vis.plot_param_importances,
    "parallel_coordinate": vis.plot_parallel_coordinate,
    "intermediate_values": vis.plot_intermediate_values,
}


def write_report(study: optuna.Study, out: Path) -> dict[str, str]:
    """{plot name: file written, or why it was skipped}. A study without a complete trial
    has nothing to plot: a one-line error, not a folder of empty pictures."""
    from search.errors import SearchError
    from search.record import S

    if not study.get_trials(deepcopy=False, states=(S.COMPLETE,)):
        raise SearchError(f"study {study.study_name!r} has no complete trial yet: nothing to report")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, plot in PLOTS.items():
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                written[name] = f"skipped: {exc}"
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(10, 6)
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written[name] = str(path)
    return written


def write_html(study: optuna.Study, out: Path, written: dict[str, str], top: int = 10) -> Path:
    """One page: the pictures and the best trials, for a supervisor's browser."""
    from html import escape

    from search.results.study import best_trials

    table = "".join(
        f"<tr><td>{r.number}</td><td>{r.value:.4f}</td><td>{r.epochs_run:g}</td>"
        f"<td>{'yes' if r.converged else 'no'}</td><td>{escape(', '.join(f'{k}={v}' for k, v in sorted(r.params.items())))}</td>"
        f"<td>{escape(r.provenance())}</td></tr>"
        for r in best_trials(study, top, baselines=True))
    images = "".join(f"<h2>{escape(name.replace('_', ' '))}</h2>" +
                     (f'<img src="{Path(path).name}" width="900">' if not path.startswith("skipped") else f"<p>{escape(path)}</p>")
                     for name, path in written.items())
    page = out / "report.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><title>{escape(study.study_name)}</title>"
                    f"<h1>Study {escape(study.study_name)}</h1>"
                    f"<table border=1 cellpadding=4><tr><th>trial</th><th>val accuracy</th><th>epochs</th>"
                    f"<th>converged</th><th>parameters</th><th>baseline / from</th></tr>{table}</table>{images}")
    return page
