"""Holding the cyclic garbage collector while a batch of events is applied.

A batch allocates tens of thousands of objects (rows, ORM states, sealed values) that live until
its commit, and the collector, run every few hundred allocations, walks them again and again
and promotes them to older generations, which its full collections then walk with the whole
heap (about a tenth of the case store's CPU in a burst). Held for the batch, the collector
runs once after it, when nearly all of them have been freed by their reference counts: no
object is lost, only collected a few milliseconds later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_holders = 0


@contextmanager
def held() -> Iterator[None]:
    """No automatic collection until the outermost `held` ends (batches may overlap); left
    alone when something else disabled the collector."""
    global _holders
    if _holders == 0 and not gc.isenabled():
        yield
        return
    _holders += 1
    gc.disable()
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0:
            gc.enable()
