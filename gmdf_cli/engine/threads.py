"""Files decoded and detected by background threads, their events handed over in input order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


def in_order_threads(sources: Sequence[Callable[[], Iterator[T]]], threads: int, depth: int = 16) -> Iterator[T]:
    """The items of ``sources`` (each a function returning an iterator), in order, computed by ``threads`` threads
    at once: while the consumer drains source k, sources k+1 .. k+threads-1 run ahead, each at most ``depth`` items
    ahead; source k+threads starts when source k is done, so memory stays bounded however many sources there are.
    An exception in a thread is raised here; closing this generator (an error, Ctrl-C) stops the threads."""
    stop = threading.Event()
    threads = max(1, threads)

    def produce(source: Callable[[], Iterator[T]], out: queue.Queue[Any]) -> None:
        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in source():
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gmdf-decode-detect")
    running: dict[int, queue.Queue[Any]] = {}

    def start(index: int) -> None:
        if index < len(sources):
            running[index] = queue.Queue(maxsize=depth)
            pool.submit(produce, sources[index], running[index])

    try:
        for index in range(threads):
            start(index)
        for index in range(len(sources)):
            out = running.pop(index)
            while (item := out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
            start(index + threads)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
