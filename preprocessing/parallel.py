"""Work spread over processes, with a progress bar and a wall clock per stage."""
from __future__ import annotations

import multiprocessing
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator, Sequence

import cv2

Progress = Callable[[str, int], AbstractContextManager]
"""(label, total) -> a context manager whose value has .update(n): click.progressbar fits."""

# What setup() prepared in this process (an index, a feature store): tasks read it here.
worker_state: dict[str, Any] = {}


class _NoBar:
    def update(self, n: int) -> None:
        pass


def no_progress(label: str, total: int) -> AbstractContextManager:
    return nullcontext(_NoBar())


def _init_worker(setup: Callable[..., dict] | None, args: tuple) -> None:
    # Each process runs one task at a time: OpenCV's own threads would only compete.
    cv2.setNumThreads(1)
    worker_state.clear()
    if setup is not None:
        worker_state.update(setup(*args))


def parallel_map(fn: Callable, items: Sequence, workers: int, bar: Any, setup: Callable[..., dict] | None = None,
                 args: tuple = (), chunksize: int = 8) -> Iterator:
    """fn over items, results in order, in `workers` processes (in this one when workers is
    1), each prepared once by setup(*args), whose dict becomes worker_state."""
    if workers <= 1 or len(items) <= 1:
        _init_worker(setup, args)
        try:
            for item in items:
                yield fn(item)
                bar.update(1)
        finally:
            worker_state.clear()
        return
    # spawn, not fork: forking a process that has started OpenCV's or BLAS's threads can hang.
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(items)), initializer=_init_worker, initargs=(setup, args)) as pool:
        for result in pool.imap(fn, items, chunksize=chunksize):
            yield result
            bar.update(1)


class Stopwatch:
    """Wall time of named stages: `with clock("name"): ...`; clock.seconds after."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 2)
