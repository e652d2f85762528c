"""The serving process's heap: frozen out of full garbage collections after start-up, released again on reload."""

from __future__ import annotations

import gc
import weakref

from pipelines.service.heap import resettle_if_frozen, settle_heap


class Model:
    """Stands for a loaded model: an object in a reference cycle, freed only by the cycle collector."""

    def __init__(self) -> None:
        self.cycle = self


def test_frozen_objects_survive_collections_until_the_heap_is_settled_again() -> None:
    gc.unfreeze()
    resettle_if_frozen()  # nothing frozen yet: a process that never settled keeps the normal collector
    assert gc.get_freeze_count() == 0
    try:
        old = Model()
        ref = weakref.ref(old)
        assert settle_heap() > 0 and gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert ref() is not None  # frozen: full collections no longer walk (or free) it
        resettle_if_frozen()  # after a reload: unfreeze, collect, freeze what is alive now
        assert ref() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
