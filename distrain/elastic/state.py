"""Elastic state with Horovod's names: in memory within a launch, on disk across launches.

Within one launch it behaves as Horovod's: the state is saved in memory when it is made and
at every ``commit()``; ``restore()`` returns to that copy (no collective, no relaunch);
``sync()`` gives every rank rank 0's model and saved attributes; ``check_host_updates()``
raises :class:`HostsUpdatedInterrupt` on every rank when the job is to be resized.

Across launches: an MPI world has a fixed size, so distrain grows or shrinks a job by
launching it again (:mod:`distrain.run.relaunch`), and a failed job is relaunched too.
``commit()`` therefore also has rank 0 write the state atomically (the old or the new commit
is on disk at every moment), and a relaunch restores the last commit on rank 0 and gives it
to every rank (:meth:`State.restore_commit`).

The commit goes to ``$DISTRAIN_ELASTIC_DIR/state.npz`` (default ``./distrain-elastic``), on
rank 0's host: use storage that rank 0's next host sees too (distrain-run keeps rank 0 on
its host while that host is listed).
"""
from __future__ import annotations

import copy
import json
import os
import zipfile

import numpy as np

from distrain import environment as env
from distrain.elastic import requests
from distrain.errors import UsageError
from distrain.files import write_atomically

__all__ = ["HostsUpdatedInterrupt", "State", "ObjectState", "TensorFlowKerasState",
           "TensorFlowState", "state_path", "DEFAULT_DIR"]

DEFAULT_DIR = "distrain-elastic"
STATE_NAME = "state.npz"


class HostsUpdatedInterrupt(RuntimeError):
    """Raised on every rank when the job is to be resized (Horovod's exception): the commit
    is on disk, and :func:`distrain.elastic.run` ends the launch for distrain-run to relaunch
    it at the new size.

    Args:
        skip_sync: Horovod's flag (hosts were only removed, so no state needs syncing).
        reason: what the message says.
    """

    def __init__(self, skip_sync: bool = False, reason: str = "distrain-run asked for a "
                                                               "resize"):
        super().__init__(reason)
        self.skip_sync = skip_sync


def state_path() -> str:
    """Where commits are written: ``$DISTRAIN_ELASTIC_DIR/state.npz``."""
    return os.path.join(env.setting(env.ELASTIC_DIR) or DEFAULT_DIR, STATE_NAME)


class State:
    """Horovod's ``hvd.elastic.State``: user attributes (``State(epoch=0, batch=0)``) plus
    whatever a subclass keeps (model, optimizer, variables).

    Args:
        **kwargs: attributes (JSON values: numbers, strings, lists, dicts) saved with every
            commit and restored after a relaunch.
    """

    def __init__(self, **kwargs):
        self._attributes = list(kwargs)
        self._reset_callbacks = []
        self.commits = 0
        self.size_at_commit: int | None = None
        for name, value in kwargs.items():
            setattr(self, name, value)
        self._saved: tuple[dict, dict] | None = None
        self.save()                  # as Horovod's: restore() returns here before a commit

    # --- Horovod's interface -----------------------------------------------------------------
    def register_reset_callbacks(self, callbacks) -> None:
        """Adds functions called (no arguments) after a relaunch has restored the state."""
        self._reset_callbacks.extend(callbacks)

    def on_reset(self) -> None:
        """Calls the reset callbacks, in the order registered."""
        for callback in self._reset_callbacks:
            callback()

    def commit(self) -> None:
        """Saves the state in memory and on disk (rank 0, atomically), then raises
        :class:`HostsUpdatedInterrupt` on every rank if the job is to be resized. Every rank
        must call it at the same point."""
        self.save()
        self.persist()
        self.check_host_updates()

    def check_host_updates(self) -> None:
        """Raises :class:`HostsUpdatedInterrupt` on every rank when a resize is requested
        (one small allreduce in an elastic job; nothing otherwise)."""
        if requests.agreed():
            raise HostsUpdatedInterrupt(False)

    def save(self) -> None:
        """Keeps a copy of the state in memory: what :meth:`restore` returns to."""
        self._saved = (copy.deepcopy({name: getattr(self, name) for name in self._attributes}),
                       {group: [np.array(a, copy=True) for a in arrays]
                        for group, arrays in self._arrays().items()})

    def restore(self) -> None:
        """Returns this rank to the state last saved in memory (at the last commit, sync, or
        when the state was made), without a collective and without a relaunch."""
        attributes, arrays = self._saved
        for name, value in copy.deepcopy(attributes).items():
            setattr(self, name, value)
        self._load(arrays, strict=False)

    def sync(self) -> None:
        """Gives every rank rank 0's model (or variables) and rank 0's saved attributes, and
        saves the result in memory, as Horovod's ``sync``."""
        from distrain import collectives
        if collectives.size() > 1:
            self._broadcast()
            mine = dict(self._saved[0], commits=self.commits,
                        size_at_commit=self.size_at_commit)
            theirs = collectives.allgather_object(mine)[0]
            self.commits = theirs.pop("commits")
            self.size_at_commit = theirs.pop("size_at_commit")
            for name, value in theirs.items():
                setattr(self, name, value)
        self.save()

    # --- across launches ------------------------------------------------------------------------
    def persist(self) -> None:
        """Writes the state last saved in memory to :func:`state_path` on rank 0,
        atomically; counts the commit on every rank."""
        from distrain import collectives
        self.commits += 1
        if collectives.rank() != 0:
            return
        attributes, saved = self._saved
        arrays = {f"a/{name}/{i:05d}": a
                  for name, group in saved.items() for i, a in enumerate(group)}
        meta = {"attributes": attributes, "size": collectives.size(), "commits": self.commits}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        path = state_path()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_atomically(path, lambda handle: np.savez(handle, **arrays))

    def restore_commit(self) -> bool:
        """Reads the last commit on disk on rank 0, if there is one, and gives it to every
        rank (a relaunched job's start).

        Returns:
            Whether a commit was restored (the same answer on every rank).

        Raises:
            UsageError: the commit cannot be read or does not fit this state.
        """
        from distrain import collectives
        present, problem = False, None
        if collectives.rank() == 0 and os.path.isfile(state_path()):
            try:
                meta, arrays = _read(state_path())
                self._load(arrays, strict=True)
                for name, value in meta["attributes"].items():
                    setattr(self, name, value)
                self.commits, self.size_at_commit = meta["commits"], meta["size"]
                self.save()
                present = True
            except UsageError as exc:
                problem = str(exc)
        if collectives.size() > 1:     # every rank learns rank 0's answer, or its problem
            present, problem = collectives.allgather_object((present, problem))[0]
        if problem:
            raise UsageError(problem)
        self.sync()
        return bool(present)

    # --- what a subclass keeps ------------------------------------------------------------------
    def _arrays(self) -> dict:
        return {}

    def _load(self, arrays: dict, strict: bool) -> None:
        """Assigns saved arrays; ``strict`` (a commit on disk) refuses any mismatch, else an
        optimizer built since the save keeps its new variables, as Horovod's."""

    def _broadcast(self) -> None:
        pass


class ObjectState(State):
    """Horovod's ``ObjectState``: attributes only (``bcast_object``/``get_rank`` accepted for
    its signature; distrain's collectives are used)."""

    def __init__(self, bcast_object=None, get_rank=None, **kwargs):
        super().__init__(**kwargs)


class TensorFlowState(State):
    """Horovod's ``TensorFlowState``: a list of ``tf.Variable`` plus attributes."""

    def __init__(self, variables=None, session=None, **kwargs):
        self.variables = list(variables or [])
        super().__init__(**kwargs)

    def _arrays(self) -> dict:
        return {"variables": [v.numpy() for v in self.variables]}

    def _load(self, arrays: dict, strict: bool) -> None:
        _assign(self.variables, arrays.get("variables", []), "variables")

    def _broadcast(self) -> None:
        from distrain import collectives
        collectives.broadcast_variables(self.variables, root_rank=0)


class TensorFlowKerasState(State):
    """Horovod's ``TensorFlowKerasState``: a Keras model, its optimizer, and attributes.

    Args:
        model: the Keras model.
        optimizer: its optimizer (``model.optimizer`` when None); built on the model's
            trainable variables at a restore if it is not yet.
        backend: accepted for Horovod's signature.
        **kwargs: attributes, e.g. ``epoch=0, batch=0``.

    Raises:
        ValueError: the model is not built (Horovod's check).
    """

    def __init__(self, model, optimizer=None, backend=None, **kwargs):
        if not getattr(model, "built", True):
            raise ValueError("Model must be built first. Run `model.build(input_shape)`.")
        self.model = model
        self.optimizer = optimizer if optimizer is not None else getattr(model, "optimizer",
                                                                          None)
        super().__init__(**kwargs)

    def _optimizer_variables(self) -> list:
        from distrain.keras_compat import optimizer_variables
        return optimizer_variables(self.optimizer) if self.optimizer is not None else []

    def _arrays(self) -> dict:
        return {"model": [np.asarray(v) for v in self.model.weights],
                "optimizer": [np.asarray(v) for v in self._optimizer_variables()]}

    def _load(self, arrays: dict, strict: bool) -> None:
        _assign(self.model.weights, arrays.get("model", []), "model weights")
        saved = arrays.get("optimizer", [])
        if not strict:      # in memory: what existed at the save (Horovod zips the lists)
            _assign(self._optimizer_variables()[:len(saved)], saved, "optimizer variables")
            return
        if saved and self.optimizer is not None and \
                len(saved) != len(self._optimizer_variables()):
            self.optimizer.build(self.model.trainable_variables)     # not built yet
        if self.optimizer is not None and len(saved) == len(self._optimizer_variables()):
            _assign(self._optimizer_variables(), saved, "optimizer variables")
        elif saved:
            raise UsageError(f"{state_path()}: {len(saved)} optimizer variables there, "
                             f"{len(self._optimizer_variables())} here; build the "
                             f"optimizer as the committed run did")

    def _broadcast(self) -> None:
        from distrain import collectives
        collectives.broadcast_variables(list(self.model.weights) + self._optimizer_variables(),
                                        root_rank=0)


def _assign(variables, arrays, what: str) -> None:
    variables = list(variables)
    if [tuple(v.shape) for v in variables] != [a.shape for a in arrays]:
        raise UsageError(f"{state_path()}: the committed {what} ({len(arrays)} arrays) do not "
                         f"fit these ({len(variables)}); was the model changed?")
    for variable, array in zip(variables, arrays):
        variable.assign(array)


def _read(path: str):
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays: dict[str, list] = {}
            for key in sorted(k for k in data.files if k.startswith("a/")):
                arrays.setdefault(key.split("/")[1], []).append(data[key])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise UsageError(f"cannot read the elastic commit {path!r} ({exc})") from None
    return meta, arrays
