"""The step loop's heap: collected and frozen inside the block, unfrozen after."""
import gc
import weakref

import pytest

from distrain.train.heap import frozen_heap


class _Cycle:
    def __init__(self):
        self.me = self


def test_the_block_starts_collected_and_frozen_and_ends_unfrozen():
    garbage = _Cycle()
    dead = weakref.ref(garbage)
    del garbage
    kept = _Cycle()
    with frozen_heap():
        assert dead() is None  # the cycle left before the loop was collected first
        assert gc.get_freeze_count() > 0
        assert any(o is kept for o in gc.get_objects()) is False  # frozen: not tracked
    assert gc.get_freeze_count() == 0
    assert any(o is kept for o in gc.get_objects())


def test_an_error_in_the_block_still_unfreezes():
    with pytest.raises(KeyError):
        with frozen_heap():
            raise KeyError("a step failed")
    assert gc.get_freeze_count() == 0
