"""Training speed on this CPU: images/s of one configuration's training step, per TensorFlow setting.

    python benchmarks/train_speed.py --data-dir ../shared/data/blood-cells/dataset2-master/images \
        --study seed-fcn --size 60x80 [--variants baseline,xla,...] [--images 1024] [--json]

Each variant runs in a fresh process (thread pools are fixed when TensorFlow starts): it
builds the study's configuration at --size, fits it on --images random training images
of the grouped split (uint8 batches streamed from the on-disk cache, exactly as a trial is
fed), one warm-up epoch and then --epochs timed epochs, and reports the median images/s, its
ratio to the baseline, the forward pass's FLOPs per image (TensorFlow's profiler) and the
training throughput that implies (about 3x forward FLOPs per image). Variants:

  baseline     what a trial does today (Keras defaults: on CPU, jit_compile resolves to off)
  xla          model.compile(jit_compile=True)
  threads-1x2  inter_op 1, intra_op 2 (one op at a time, both cores inside it)
  threads-2x1  inter_op 2, intra_op 1
  threads-1x1  inter_op 1, intra_op 1 (with --concurrent 2: one process per core, as
               `search launch --workers 2 --threads 1` runs them)
  deterministic  tf.config.experimental.enable_op_determinism() (the cost of bit-reproducibility)
  bf16         mixed_bfloat16 policy (CPU bf16 support varies; accuracy must be re-checked)
  no-prefetch  the same pipeline without tf.data prefetch (what overlap buys)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
VARIANTS = ("baseline", "xla", "threads-1x2", "threads-2x1", "threads-1x1", "deterministic", "bf16", "no-prefetch")


def forward_flops(model, shape) -> int:
    """Floating-point operations of one image's forward pass (TensorFlow's graph profiler)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(model.__call__, autograph=False).get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=convert_variables_to_constants_v2(fn).graph, options=options).total_float_ops


def child(args) -> dict:
    import tensorflow as tf

    if args.variant == "threads-1x2":
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(2)
    elif args.variant == "threads-2x1":
        tf.config.threading.set_inter_op_parallelism_threads(2)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    elif args.variant == "threads-1x1":
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    elif args.variant == "deterministic":
        tf.config.experimental.enable_op_determinism()
    import keras

    if args.variant == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    from search.running.data import DataProvider
    from search.running.training import compile_model
    from studies import check_params, load_study
    from models import build_model
    from preprocessing import make_batches

    config = check_params(load_study(args.study), {"size": args.size, **dict(p.split("=", 1) for p in args.param)},
                          args.study)
    data = DataProvider(args.data_dir, args.cache_dir, 0.2, 0).get(config.preprocess)
    import numpy as np

    # A random sample: the split lists images class by class, and one class alone learns nothing.
    idx = np.sort(np.random.default_rng(0).choice(data.split.train, min(args.images, len(data.split.train)), replace=False))
    keras.utils.set_random_seed(0)
    model = build_model(config.model, (*config.preprocess.size, config.preprocess.channels), data.num_classes,
                        scaling=(data.stats.kind, data.stats.mean, data.stats.std))
    compile_model(model, config, data.num_classes, args.epochs * len(idx) // config.batch_size + 1,
                  jit_compile=True if args.variant == "xla" else "auto")
    ds = make_batches(data.cache, idx, config.batch_size, shuffle=True, seed=0)
    if args.variant == "no-prefetch":
        ds = ds.prefetch(0)  # a zero-sized buffer: the step waits for each batch
    times = []
    for epoch in range(args.epochs + 1):
        started = time.perf_counter()
        history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
        if epoch:  # the first epoch traces and compiles
            times.append(time.perf_counter() - started)
    images_per_s = len(idx) / statistics.median(times)
    # Augmentation layers hold random-state variables the profiler's frozen graph cannot take;
    # they cost nothing at inference, so an augmentation-free twin has the same FLOPs.
    plain = dataclasses.replace(config.model, augment="none") if hasattr(config.model, "augment") else config.model
    twin = build_model(plain, (*config.preprocess.size, config.preprocess.channels), data.num_classes)
    flops = forward_flops(twin, (*config.preprocess.size, config.preprocess.channels))
    return {"images_per_s": round(images_per_s, 1),
            "forward_mflops_per_image": round(flops / 1e6, 1),
            # A training step costs about three forward passes (forward, two backward products).
            "approx_train_gflops_per_s": round(3 * flops * images_per_s / 1e9, 1),
            "epoch_s": [round(t, 2) for t in times], "loss": round(float(history["loss"][-1]), 4),
            "config": f"{args.study} {config.preprocess.size[0]}x{config.preprocess.size[1]} batch {config.batch_size}",
            "jit_compile": bool(model.jit_compile)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--cache-dir")
    p.add_argument("--study", default="seed-fcn")
    p.add_argument("--size", default="60x80")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--images", type=int, default=1024, help="training images per timed epoch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up epoch")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--concurrent", type=int, default=1,
                   help="run this many copies of each variant at once and report their summed images/s "
                        "(what several workers on one machine get)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    results = {"machine": f"{os.cpu_count()} CPUs", "data_dir": args.data_dir}
    base = ["--data-dir", args.data_dir, "--study", args.study, "--size", args.size, "--images", str(args.images),
            "--epochs", str(args.epochs), *(["--cache-dir", args.cache_dir] if args.cache_dir else []),
            *[x for kv in args.param for x in ("--param", kv)]]
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            sys.exit(f"--variants: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        copies = [subprocess.Popen([sys.executable, __file__, *base, "--variant", variant], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for _ in range(args.concurrent)]
        outputs = [(c, *c.communicate()) for c in copies]
        failed = [err for c, _, err in outputs if c.returncode]
        if failed:
            results[variant] = {"error": failed[0].strip().splitlines()[-1] if failed[0].strip() else "failed"}
        else:
            each = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outputs]
            results[variant] = each[0]
            if args.concurrent > 1:
                results[variant] = {**each[0], "processes": args.concurrent,
                                    "images_per_s_each": [e["images_per_s"] for e in each],
                                    "images_per_s": round(sum(e["images_per_s"] for e in each), 1)}
        if "images_per_s" in results.get("baseline", {}) and "images_per_s" in results[variant]:
            results[variant]["vs_baseline"] = round(results[variant]["images_per_s"] / results["baseline"]["images_per_s"], 2)
        if not args.json:
            print(f"{variant:<14} {json.dumps(results[variant])}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
