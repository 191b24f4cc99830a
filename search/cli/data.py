"""Data: look at a data set before searching it; train the U-Net that mask=unet uses."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from search.cli import options as o
from search.errors import SearchError


@click.group()
def data() -> None:
    """Look at a data set before searching it."""


@data.command("inspect")
@o.data_dir(required=True)
@o.groups
@click.option("--sheet", type=click.Path(dir_okay=False), default="contact-sheet.png", show_default=True,
              help="PNG with a few TRAIN images per class next to their Otsu masks.")
@click.option("--per-class", type=click.IntRange(1, 12), default=4, show_default=True)
@click.option("--size", default="120x160", show_default=True, help="Size the sheet shows images at.")
@o.as_json
def inspect(data_dir, groups_file, group_pattern, sheet, per_class, size, as_json) -> None:
    """Class counts per split, groups per class, image sizes, unreadable files."""
    from preprocessing import load_dataset, parse_size
    from preprocessing.inspection import contact_pairs, inspect_dataset

    from search.plots import contact_sheet_png

    # Read-only: a flat layout's TEST split is shown as a launch would make it, not recorded.
    dataset = load_dataset(data_dir, grouping=o.grouping(data_dir, groups_file, group_pattern), write_record=False)
    _warn(dataset)
    hw = parse_size(size)
    report = inspect_dataset(dataset)
    unreadable = {u["file"] for u in report["splits"]["TRAIN"]["unreadable"]}
    contact_sheet_png(contact_pairs(dataset, per_class, hw, skip=unreadable), o.output_file(sheet),
                      f"{dataset.root.name}: TRAIN, one image per group, and its Otsu mask")
    report["contact_sheet"] = str(sheet)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"{report['data_dir']} ({report['layout']} layout), classes: {', '.join(report['classes'])}; "
               f"{report['grouping']}")
    for name, split in report["splits"].items():
        click.echo(f"{name}: {sum(split['images'].values())} images")
        for cls in report["classes"]:
            click.echo(f"  {cls:<12} {split['images'].get(cls, 0):>6} images {split['groups'].get(cls, 0):>5} groups")
        sizes = ", ".join(f"{k} ({v})" for k, v in list(split["sizes_wxh"].items())[:5])
        click.echo(f"  sizes (WxH): {sizes}")
        for u in split["unreadable"]:
            click.echo(f"  unreadable: {u['file']} ({u['error']})")
    if split_record := report.get("test_split"):
        click.echo(f"TEST split: recorded in {split_record['record']}" if split_record["recorded"] else
                   f"TEST split: not recorded yet; shown as the first launch will make it and record it in "
                   f"{split_record['record']}")
    click.echo(f"contact sheet: {sheet}")


def _warn(dataset) -> None:
    """What the data set left out or cannot test, before the command's own output."""
    for note in dataset.notes:
        click.echo(f"warning: {note}", err=True)


@data.command("audit")
@o.data_dir(required=True)
@o.groups
@click.option("--cv", type=click.IntRange(0), default=3, show_default=True, metavar="K",
              help="Audit the K folds a --cv K study would make (0: the single --val-fraction split).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="The folds' seed, as a study's --seed.")
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--split-groups", type=click.Path(dir_okay=False), metavar="FILE",
              help="Make the folds with these groups instead (to see what another grouping leaks).")
@click.option("--split-pattern", metavar="REGEX", help="Make the folds with groups read from file names by REGEX.")
@click.option("--split-per-file", is_flag=True, help="Make the folds with one group per file.")
@o.as_json
def audit(data_dir, groups_file, group_pattern, cv, seed, val_fraction, split_groups, split_pattern, split_per_file,
          as_json) -> None:
    """Held-out images that share a group with their training images: TEST and TEST_SIMPLE
    against TRAIN, and each validation fold against its training folds."""
    from preprocessing import load_dataset
    from preprocessing.audit import audit as run_audit, table
    from preprocessing.groups import Grouping

    if sum(map(bool, (split_groups, split_pattern, split_per_file))) > 1:
        raise SearchError("give at most one of --split-groups, --split-pattern, --split-per-file")
    reference = o.grouping(data_dir, groups_file, group_pattern)
    data = load_dataset(data_dir, grouping=reference, write_record=False)
    _warn(data)
    split_by = None
    if split_groups or split_pattern or split_per_file:
        split_by = _regrouped(data, Grouping() if split_per_file else o.grouping(data_dir, split_groups, split_pattern))
    rows = run_audit(data, split_by, cv, seed, val_fraction)
    if as_json:
        click.echo(json.dumps({"reference": reference.describe(), "split_by": (split_by or data).grouping.describe(),
                               "rows": [r.to_dict() for r in rows]}, indent=1))
        return
    for line in table(rows, reference.describe(), (split_by or data).grouping.describe()):
        click.echo(line)


def _regrouped(data, grouping):
    """data's files grouped another way. Not a second load: a flat layout's TEST split would be
    made again with these groups, and TRAIN would not be the same files."""
    from dataclasses import replace

    groups = grouping.assign({name: list(split.files) for name, split in data.splits.items()})
    return replace(data, grouping=grouping, splits={name: replace(split, groups=tuple(groups[name]))
                                                    for name, split in data.splits.items()})


@click.group()
def unet() -> None:
    """U-Net masks (mask=unet): train ahead of time, see its quality."""


@unet.command("train")
@o.data_dir(required=True)
@o.groups
@click.option("--size", default="120x160", show_default=True, help="HEIGHTxWIDTH the masks are made at.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=3, show_default=True, help="Early stopping on val_loss.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@o.cache_dir
@o.tracking_uri
@click.option("--retrain", is_flag=True, help="Replace a U-Net already stored for this data set and size.")
def train(data_dir, groups_file, group_pattern, size, epochs, patience, batch_size, seed, val_fraction, cache_dir, tracking_uri, retrain) -> None:
    """Train the U-Net on TRAIN's grayscale images against their Otsu masks; report Dice and IoU
    on the grouped validation split; store it for mask=unet and log it to MLflow (experiment unet)."""
    from preprocessing import default_cache_dir, load_dataset, parse_size

    from search.running.unet import ensure_unet
    from search.stores.tracking import Tracker, check_tracking

    hw = parse_size(size)
    dataset = load_dataset(data_dir, record_dir=cache_dir, grouping=o.grouping(data_dir, groups_file, group_pattern))
    check_tracking(tracking_uri)
    runs = []
    report = ensure_unet(dataset.train, hw, cache_dir or default_cache_dir(), retrain=retrain,
                         on_trained=lambda r: runs.append(Tracker(tracking_uri).log_unet(r, data_dir)),
                         epochs=epochs, patience=patience, batch_size=batch_size, seed=seed, val_fraction=val_fraction)
    m = report.meta
    pad = m["padding"]
    padding = f"; sides padded by {pad['bottom']} rows, {pad['right']} columns" if pad["bottom"] or pad["right"] else ""
    click.echo(f"U-Net at {hw[0]}x{hw[1]}: validation Dice {m['val_dice']:.4f}, IoU {m['val_iou']:.4f} "
               f"against Otsu masks ({m['epochs_run']} epochs, {m['train_seconds']:.0f} s{padding})")
    click.echo(f"stored in {report.model_dir}" + (f"; MLflow run {runs[0]} (experiment unet)" if runs else
                                                  " (trained earlier; --retrain to replace it)"))


@data.command("groups")
@o.data_dir(required=True)
@click.option("--sources", type=click.Path(file_okay=False),
              help="Folder of the original fields the images were made from (the public set's "
                   "dataset-master/Original_Images). Without it, near-duplicates are clustered among the images.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The groups CSV: path,group,...")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Folder for groups.json, summary.txt and near-misses.png. [default: <out>-report/ beside --out]")
@click.option("--workers", type=click.IntRange(1), default=lambda: os.cpu_count() or 1, show_default="CPU count",
              help="Processes matching images.")
def groups(data_dir, sources, out, report_dir, workers) -> None:
    """Find which original field each image was made from: the true groups for a grouped
    validation split. Overlapping fields (the same cells seen from neighbouring stage
    positions) are one group."""
    from preprocessing.discovery import group_by_sources, write_csv
    from preprocessing.near_duplicates import group_by_similarity

    from search.groups_report import summary_lines, write_report

    def progress(label: str, total: int):
        return click.progressbar(length=total, label=label, file=sys.stderr)

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    out_path = o.output_file(out)
    report_path = Path(report_dir) if report_dir else out_path.with_name(out_path.stem + "-report")
    if sources:
        grouping = group_by_sources(data_dir, sources, workers=workers, progress=progress, warn=warn)
    else:
        grouping = group_by_similarity(data_dir, workers=workers, progress=progress, warn=warn)
    write_csv(grouping, out_path)
    report = write_report(grouping, report_path, data_dir, sources)
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"groups: {out_path}; report: {report_path}")
    _audit_found(data_dir, out_path)


def _audit_found(data_dir: str, groups_csv: Path) -> None:
    """What the groups just found say of TEST against TRAIN and of a study's 3 folds, so the
    leak they reveal is seen at once (the same table as `search data audit`)."""
    from preprocessing import DataError, load_dataset
    from preprocessing.audit import audit as run_audit, table
    from preprocessing.groups import Grouping

    try:
        data = load_dataset(data_dir, grouping=Grouping(file=str(groups_csv.resolve())), write_record=False)
        rows = run_audit(data, None, cv=3, seed=0)
    except (DataError, ValueError) as exc:  # e.g. too few groups per class for 3 folds
        click.echo(f"audit skipped: {exc}")
        return
    for line in table(rows, data.grouping.describe(), data.grouping.describe()):
        click.echo(line)
