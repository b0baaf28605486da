"""Speed machinery of the pass that no format or output owns: the cyclic GC paused while it runs, and
a read-ahead thread. (Worker processes, their start method and malloc tuning: `processes`; token arrays
waiting on disk: `spill`; a large shard cut into parts: `shard_parts`.)"""

from __future__ import annotations

import contextlib
import gc
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic GC: the pass creates millions of acyclic containers and keeps a chunk of them
    alive, which makes every collection rescan them (about 2x slower overall)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def prefetched(items: Iterable[T], parse: Callable[[T], object]) -> Iterator[tuple[T, object]]:
    """(item, parse(item)) pairs; the next item is parsed in a thread (pyarrow releases the GIL) while the
    caller works on the current one."""
    def job(item):
        return item, parse(item)

    with ThreadPoolExecutor(1) as pool:
        it = iter(items)
        nxt = next(it, None)
        running = pool.submit(job, nxt) if nxt is not None else None
        while running is not None:
            nxt = next(it, None)
            done = running.result()
            running = pool.submit(job, nxt) if nxt is not None else None
            yield done
