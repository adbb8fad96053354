"""Checkpoints: model and optimizer state plus the step counter, written atomically.

A checkpoint is one ``.npz`` file. It is written to a temporary file in the same directory,
flushed and fsynced, then renamed over the previous one, and the directory is fsynced: at
every moment the directory holds one whole checkpoint, the old or the new.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile

import numpy as np

from distrain.errors import UsageError
from distrain.files import write_atomically

__all__ = ["CHECKPOINT_NAME", "save", "load", "kept", "check_writable", "weights_digest"]

CHECKPOINT_NAME = "checkpoint.npz"
_KEPT = re.compile(r"checkpoint-(\d+)\.npz")


def weights_digest(arrays) -> str:
    """A short hex digest of arrays' bytes, to compare weights across ranks and files."""
    import hashlib
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_writable(directory: str) -> None:
    """Creates ``directory`` if needed and proves a file can be written there.

    Raises:
        UsageError: it cannot be created or written.
    """
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"checkpoint directory {directory!r} is not writable "
                         f"({exc.strerror or exc}); choose another --checkpoint-dir") from None


def save(directory: str, step: int, epoch: int, model_arrays, optimizer_arrays,
         meta: dict, keep: int = 0) -> str:
    """Writes a checkpoint atomically.

    Args:
        directory: where it goes.
        step: steps done so far.
        epoch: the epoch the next step belongs to.
        model_arrays: the model's weights, in ``model.weights`` order.
        optimizer_arrays: the optimizer's variables, in order.
        meta: facts that must match on resume (model, dataset, batch size...), and where
            the run is.
        keep: also keep the last ``keep`` checkpoints as ``checkpoint-STEP.npz`` (hard links
            of the whole file; older ones are removed).

    Returns:
        The checkpoint's path.
    """
    arrays = {f"model/{i:05d}": np.asarray(a) for i, a in enumerate(model_arrays)}
    arrays.update({f"optimizer/{i:05d}": np.asarray(a) for i, a in enumerate(optimizer_arrays)})
    header = dict(meta, step=step, epoch=epoch)
    arrays["meta"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    final = os.path.join(directory, CHECKPOINT_NAME)
    write_atomically(final, lambda handle: np.savez(handle, **arrays))
    if keep:
        _keep(directory, final, step, keep)
    return final


def kept(directory: str) -> list[tuple[int, str]]:
    """The ``checkpoint-STEP.npz`` files in ``directory``, as ``(step, path)``, oldest first."""
    found = []
    for name in os.listdir(directory):
        match = _KEPT.fullmatch(name)
        if match:
            found.append((int(match[1]), os.path.join(directory, name)))
    return sorted(found)


def _keep(directory: str, final: str, step: int, keep: int) -> None:
    copy = os.path.join(directory, f"checkpoint-{step}.npz")
    temporary = f"{copy}.{os.getpid()}.tmp"
    try:
        os.link(final, temporary)
        os.replace(temporary, copy)          # a whole file under its name, or none
        for _, old in kept(directory)[:-keep]:
            os.unlink(old)
    except OSError as exc:
        raise UsageError(f"cannot keep {copy!r} ({exc.strerror or exc}); choose another "
                         f"--checkpoint-dir") from None


def load(directory: str):
    """Reads the checkpoint in ``directory``.

    Returns:
        ``(meta, model_arrays, optimizer_arrays)``; ``meta`` holds ``step`` and ``epoch``.

    Raises:
        UsageError: there is no checkpoint, or it cannot be read.
    """
    path = os.path.join(directory, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise UsageError(f"--resume: no checkpoint at {path!r}; run without --resume first")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            model = [data[k] for k in sorted(k for k in data.files if k.startswith("model/"))]
            optim = [data[k] for k in sorted(k for k in data.files
                                             if k.startswith("optimizer/"))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise UsageError(f"cannot read checkpoint {path!r} ({exc})") from None
    return meta, model, optim
