"""Running a provider's reads a few at a time on worker threads, results in input order.

Each worker takes the next item when it is free (no future per item: a Gen 1 full read is
10,000 of them), and the caller's thread hears of each item finished (for the progress line)
as it happens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def pool_map(
    func: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    on_done: Callable[[int], None] | None = None,
) -> list[R]:
    """``func`` over ``items``, ``workers`` at a time, results in input order.

    ``on_done`` gets the count done so far, from the caller's thread, as items finish. The
    first failure stops the workers taking more and is raised.
    """
    if not items:
        return []
    workers = min(workers, len(items))
    if workers == 1:
        out = []
        for n, item in enumerate(items, 1):
            out.append(func(item))
            if on_done:
                on_done(n)
        return out
    results: list[Any] = [None] * len(items)
    indexes = iter(range(len(items)))
    take = threading.Lock()
    stop = threading.Event()
    finished: SimpleQueue[BaseException | None] = SimpleQueue()  # one entry per item

    def work() -> None:
        while not stop.is_set():
            with take:
                index = next(indexes, None)
            if index is None:
                return
            try:
                results[index] = func(items[index])
            except BaseException as exc:  # handed to the caller's thread, raised there
                finished.put(exc)
                return
            finished.put(None)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exmail-v1") as pool:
        for _ in range(workers):
            pool.submit(work)
        done = 0
        try:
            while done < len(items):
                failure = finished.get()
                while True:
                    if failure is not None:
                        raise failure
                    done += 1
                    if done == len(items) or finished.empty():
                        break
                    failure = finished.get()
                if on_done:
                    on_done(done)
        finally:
            stop.set()
    return results
