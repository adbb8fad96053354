"""Backend selection: ``mpi``, ``horovod`` or ``local``, chosen from how the job was started.

Automatic choice (overridden by ``DISTRAIN_BACKEND`` or ``init(backend=...)``):

- started by horovodrun and Horovod imports: ``horovod``;
- started by horovodrun in MPI mode without Horovod: ``mpi``;
- started by horovodrun in Gloo mode without Horovod: an error (there is no MPI world);
- started by mpirun, mpiexec, srun or distrain-run: ``mpi``;
- a plain ``python`` process: ``local`` (no MPI needed).
"""
from __future__ import annotations

from distrain import environment as env
from distrain.backends.base import Backend, CollectiveMismatchError
from distrain.environment import World, WorldError

__all__ = ["Backend", "CollectiveMismatchError", "create_backend", "BACKENDS"]

BACKENDS = ("mpi", "horovod", "local")


def create_backend(name: str | None = None, world: World | None = None) -> Backend:
    """Starts the backend for this process.

    Args:
        name: ``mpi``, ``horovod``, ``local`` or ``auto``; ``DISTRAIN_BACKEND`` when None.
        world: the launcher's description; read from the environment when None.

    Returns:
        The started backend.

    Raises:
        ValueError: ``name`` is not a backend.
        WorldError: the chosen backend cannot serve the world the launcher described.
    """
    world = world or env.detect_world()
    name = (name or env.setting(env.BACKEND, "auto")).lower()
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"unknown backend {name!r} (from {env.BACKEND} or init()); use one "
                         f"of {', '.join(BACKENDS)} or auto")
    if name == "auto":
        name = _choose(world)
    if name == "local":
        if world.size > 1:
            raise WorldError(f"the local backend runs a single rank, but {world.launcher} "
                             f"started {world.size}; use the mpi or horovod backend")
        from distrain.backends.local import LocalBackend
        return LocalBackend(world)
    if name == "horovod":
        from distrain.backends.horovod import HorovodBackend
        return HorovodBackend(world)
    from distrain.backends.mpi import MPIBackend
    return MPIBackend(world)


def _choose(world: World) -> str:
    if world.launcher == "horovodrun":
        from distrain.backends.horovod import horovod_importable
        if horovod_importable():
            return "horovod"
        if world.gloo:
            raise WorldError(
                "horovodrun started this process in Gloo mode, but horovod.tensorflow does "
                "not import here, and Gloo mode has no MPI world for distrain to use; run "
                "`horovodrun --mpi ...` or `distrain-run ...` instead, or install Horovod")
        return "mpi"
    return "local" if world.launcher == "none" else "mpi"
