"""Horovod's process sets behind distrain's, on the ``horovod`` backend.

Horovod takes its static process sets in ``hvd.init`` and adds or removes sets later only in
its dynamic mode (``HOROVOD_DYNAMIC_PROCESS_SETS=1``), which Horovod's own tests found to
slow every operation. distrain registers its sets once the backend has started, so the
backend is handed ``init``'s ``process_sets`` before it starts Horovod: the rank lists
distrain will accept become Horovod's static sets, and ``"dynamic"`` starts Horovod in its
dynamic mode, as ``hvd.init(process_sets="dynamic")`` does. When distrain registers a set,
it takes Horovod's static set of the same ranks, or adds one (which needs the dynamic mode,
as in Horovod).

Example:
    >>> sets = HorovodSets(hvd, [[0, 2], [1, 3]], size=4)        # doctest: +SKIP
    >>> hvd.init(process_sets=sets.init_argument())              # doctest: +SKIP
    >>> sets.claim([0, 2])                                       # doctest: +SKIP
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["HorovodSets", "static_ranks", "dynamic_requested"]


def static_ranks(process_sets, size: int) -> list[list[int]]:
    """The rank lists of ``init``'s ``process_sets`` that distrain will register.

    Entries distrain refuses (not ints, a rank twice or outside the world, the whole world,
    a set named before) are left out; distrain's registration raises for them afterwards.

    Args:
        process_sets: ``init``'s argument: None, ``"dynamic"``, or a list of process sets
            (objects with ``ranks``) or rank lists.
        size: the world's size.

    Returns:
        Sorted rank lists, in ``process_sets``' order.
    """
    if process_sets is None or isinstance(process_sets, (str, bytes)):
        return []
    chosen: list[list[int]] = []
    for entry in process_sets:
        ranks = getattr(entry, "ranks", entry)
        if getattr(entry, "process_set_id", None) is not None or \
                isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__"):
            continue
        ranks = list(ranks)
        if not ranks or not all(type(r) is int and 0 <= r < size for r in ranks) or \
                len(set(ranks)) != len(ranks):
            continue
        ranks = sorted(ranks)
        if ranks != list(range(size)) and ranks not in chosen:
            chosen.append(ranks)
    return chosen


def dynamic_requested(process_sets) -> bool:
    """True when ``init`` was given ``process_sets="dynamic"``."""
    return isinstance(process_sets, str) and process_sets.lower() == "dynamic"


class HorovodSets:
    """Horovod's process sets of one Horovod start, found by their ranks.

    Args:
        hvd: the ``horovod.tensorflow`` module.
        process_sets: ``init``'s ``process_sets`` argument.
        size: the world's size.
    """

    def __init__(self, hvd, process_sets, size: int):
        self.hvd = hvd
        self._dynamic = dynamic_requested(process_sets)
        self._static = [hvd.ProcessSet(ranks) for ranks in static_ranks(process_sets, size)]
        self._taken: dict[tuple, object] = {}

    def init_argument(self):
        """What ``hvd.init(process_sets=...)`` is given: ``"dynamic"`` or the static sets."""
        return "dynamic" if self._dynamic else list(self._static)

    def claim(self, ranks: Sequence[int]):
        """Horovod's set of ``ranks``; every rank calls it together, in one order.

        Returns:
            The static set of these ranks given to ``hvd.init``, or else a set added now.

        Raises:
            ValueError: Horovod is not in its dynamic mode, or has this set already.
        """
        key = tuple(sorted(ranks))
        found = next((s for s in self._static
                      if tuple(s.ranks) == key and s.process_set_id is not None), None)
        if found is not None:
            self._static.remove(found)
        else:
            found = self.hvd.add_process_set(list(key))
        self._taken[key] = found
        return found

    def release(self, ranks: Sequence[int]) -> None:
        """Removes Horovod's set of ``ranks``; every rank calls it together.

        Raises:
            ValueError: Horovod is not in its dynamic mode.
        """
        found = self._taken.pop(tuple(sorted(ranks)), None)
        if found is not None:
            self.hvd.remove_process_set(found)
