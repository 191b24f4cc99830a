"""How many threads TensorFlow may use in this process: one per worker (or replicate) lets two
processes share two cores better than one process with both (README, "How both cores work")."""
from __future__ import annotations


def use_threads(threads: int | None) -> None:
    """Fix TensorFlow's thread pools; must run before TensorFlow executes its first op."""
    if not threads:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
