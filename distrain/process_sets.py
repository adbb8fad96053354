"""Process sets: collectives over a subset of the ranks, with Horovod's names.

A process set is a sorted list of global ranks. Over MPI it is a sub-communicator with a
backend of its own (its own negotiation, stall inspector and fusion buffers), so collectives
of disjoint sets run at the same time; on the horovod backend it is Horovod's process set of
those ranks, given to Horovod's ops (:mod:`distrain.backends.horovod_sets`). Sets are registered by every rank together: at
``init(process_sets=[...])``, or later with :func:`add_process_set` when ``init`` was given
``process_sets="dynamic"`` (or ``HOROVOD_DYNAMIC_PROCESS_SETS=1`` is set), as in Horovod.

Example:
    >>> evens = hvd.ProcessSet([0, 2])                          # doctest: +SKIP
    >>> hvd.init(process_sets=[evens])                          # doctest: +SKIP
    >>> hvd.allreduce(x, process_set=evens)                     # doctest: +SKIP
"""
from __future__ import annotations

from distrain import environment as env
from distrain import runtime
from distrain.backends import Backend
from distrain.backends.base import CollectiveArgumentError

__all__ = ["ProcessSet", "global_process_set", "add_process_set", "remove_process_set",
           "setup", "clear", "backend_for", "by_id"]


class ProcessSet:
    """A set of ranks that run collectives among themselves.

    Two sets are the same set only if they are the same object, as in Horovod.

    Args:
        ranks: global ranks as Python ints (any order), or an mpi4py communicator whose
            ranks are taken.

    Attributes:
        ranks: the sorted global ranks (empty for the global set until ``init``).
        process_set_id: the id given at registration; None before and after removal.

    Raises:
        ValueError: ``ranks`` is neither a list of ints nor a communicator, or names a rank
            twice.
    """

    def __init__(self, ranks):
        if hasattr(ranks, "Get_group"):  # an mpi4py communicator
            from mpi4py import MPI
            group = ranks.Get_group()
            ranks = MPI.Group.Translate_ranks(group, list(range(group.Get_size())),
                                              MPI.COMM_WORLD.Get_group())
        elif isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__"):
            ranks = None
        else:
            ranks = list(ranks)
        if ranks is None or not all(type(r) is int for r in ranks):
            raise ValueError("ProcessSet should be initialized with a list of process ranks "
                             "(Python ints) or an mpi4py Comm object")
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"a process set names each rank once, not {ranks}")
        self.ranks = sorted(ranks)
        self.process_set_id: int | None = None
        self._backend: Backend | None = None

    def _registered(self) -> bool:
        return self.process_set_id is not None

    def size(self) -> int | None:
        """The number of ranks in the set; None before it is registered."""
        return len(self.ranks) if self._registered() else None

    def rank(self) -> int | None:
        """This process's rank within the set; None before registration.

        Raises:
            ValueError: this process is not in the set.
        """
        if not self._registered():
            return None
        if not self.included():
            raise ValueError("Process is not part of provided process set.")
        return self.ranks.index(runtime.rank())

    def included(self) -> bool | None:
        """True when this process is in the set; None before it is registered."""
        if not self._registered():
            return None
        return runtime.rank() in self.ranks

    def __repr__(self) -> str:
        return f"ProcessSet(process_set_id={self.process_set_id}, ranks={self.ranks})"


global_process_set = ProcessSet([])
_sets: dict[int, ProcessSet] = {}
_dynamic = False


def _register(process_set: ProcessSet, backend: Backend | None) -> ProcessSet:
    free = 0
    while free in _sets:  # ids of removed sets are used again, as in Horovod
        free += 1
    process_set.process_set_id = free
    process_set._backend = backend
    _sets[process_set.process_set_id] = process_set
    return process_set


def setup(process_sets) -> None:
    """Registers the global set and ``init``'s sets (every rank together, in one order).

    Args:
        process_sets: None, a list of :class:`ProcessSet` (or rank lists), or ``"dynamic"``.

    Raises:
        ValueError: a set names a rank outside the world, or twice.
    """
    global _dynamic
    root = runtime.backend()
    if global_process_set.process_set_id is None:
        global_process_set.ranks = list(range(root.world.size))
        _register(global_process_set, root)
    _dynamic = _dynamic or (isinstance(process_sets, str) and process_sets.lower() ==
                            "dynamic") or \
        env.setting(env.HOROVOD_DYNAMIC_PROCESS_SETS, "0") not in ("0", "")
    if process_sets is None or isinstance(process_sets, str):
        return
    for number, process_set in enumerate(process_sets):
        if isinstance(process_set, ProcessSet) and _duplicate(process_set):
            raise ValueError(f"distrain could not be initialized because process_sets entry "
                             f"number {number} is a duplicate: {process_set}")
        add_process_set(process_set, _at_init=True)


def _duplicate(process_set: ProcessSet) -> bool:
    return any(s.ranks == process_set.ranks for s in _sets.values())


def clear() -> None:
    """Forgets every set (at ``shutdown``); their backends are shut down."""
    global _dynamic
    for process_set in list(_sets.values()):
        if process_set is not global_process_set and process_set._backend is not None:
            process_set._backend.shutdown()
        process_set.process_set_id, process_set._backend = None, None
    global_process_set.ranks = []
    _sets.clear()
    _dynamic = False


def add_process_set(process_set, _at_init: bool = False) -> ProcessSet:
    """Registers a new set; every rank must call it, with the same ranks, in one order.

    Args:
        process_set: a :class:`ProcessSet` or a list of ranks.

    Returns:
        The registered :class:`ProcessSet`.

    Raises:
        ValueError: dynamic process sets are off, the set is registered already, or it names
            a rank outside the world.
    """
    if not _at_init and not _dynamic:
        raise ValueError("Set HOROVOD_DYNAMIC_PROCESS_SETS=1 (or init(process_sets="
                         "'dynamic')) to allow adding process sets after initialization.")
    if not isinstance(process_set, ProcessSet):
        process_set = ProcessSet(process_set)
    root = runtime.backend()
    if process_set._registered() or _duplicate(process_set):
        raise ValueError(f"Attempted to add a duplicate process set: {process_set}")
    if not process_set.ranks or process_set.ranks[0] < 0 or \
            process_set.ranks[-1] >= root.world.size:
        raise ValueError(f"process set ranks {process_set.ranks} must be ranks of the "
                         f"world of {root.world.size}")
    return _register(process_set, root.subset(process_set.ranks))


def remove_process_set(process_set: ProcessSet) -> bool:
    """Removes a set added with :func:`add_process_set`; every rank must call it.

    Returns:
        True when it was registered and is now removed; False otherwise (the global set
        cannot be removed).

    Raises:
        ValueError: dynamic process sets are off.
    """
    if not _dynamic:
        raise ValueError("Set HOROVOD_DYNAMIC_PROCESS_SETS=1 (or init(process_sets="
                         "'dynamic')) to allow removing process sets after initialization.")
    if process_set is global_process_set or not process_set._registered():
        return False
    registered = _sets.pop(process_set.process_set_id, None)
    if registered is None:
        return False
    runtime.backend().release_subset(registered.ranks)
    if registered._backend is not None:
        registered._backend.shutdown()
    registered.process_set_id, registered._backend = None, None
    return True


def by_id(process_set_id: int) -> ProcessSet | None:
    """The registered set with this id, or None."""
    return _sets.get(process_set_id)


def backend_for(process_set: ProcessSet | None, collective: str = "collective") -> Backend:
    """The backend that runs a collective of ``process_set`` on this rank.

    Args:
        process_set: the set, or None for the global one.
        collective: the collective's name, for the error.

    Raises:
        NotInitializedError: before ``init``.
        ValueError: the set is not registered.
        CollectiveArgumentError: this rank is not in the set.
    """
    root = runtime.backend()
    if process_set is None or process_set is global_process_set:
        return root
    if not isinstance(process_set, ProcessSet) or not process_set._registered():
        raise ValueError("Process set does not exist or has not been registered.")
    if process_set._backend is None:
        raise CollectiveArgumentError(f"{collective}: Rank {root.world.rank} is not a member "
                                      f"of the provided process set.")
    return process_set._backend
