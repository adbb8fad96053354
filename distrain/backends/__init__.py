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
from distrain.backends.base import Backend, CollectiveMismatchError, check_root
from distrain.environment import World, WorldError

__all__ = ["Backend", "CollectiveMismatchError", "check_root", "create_backend",
           "resolve_backend", "host_share_backend", "BACKENDS"]

BACKENDS = env.BACKENDS


def create_backend(name: str | None = None, world: World | None = None,
                   process_sets=None) -> Backend:
    """Starts the backend for this process.

    Args:
        name: ``mpi``, ``horovod``, ``local`` or ``auto``; ``DISTRAIN_BACKEND`` when None.
        world: the launcher's description; read from the environment when None.
        process_sets: ``init``'s ``process_sets``, for the horovod backend, which gives
            them to Horovod as it starts it (the others make sets when they are registered).

    Returns:
        The started backend.

    Raises:
        ValueError: ``name`` is not a backend.
        WorldError: the chosen backend cannot serve the world the launcher described.
    """
    world = world or env.detect_world()
    name = resolve_backend(name, world)
    if name == "local":
        if world.size > 1:
            raise WorldError(f"the local backend runs a single rank, but {world.launcher} "
                             f"started {world.size}; use the mpi or horovod backend")
        from distrain.backends.local import LocalBackend
        return LocalBackend(world)
    if name == "horovod":
        from distrain.backends.horovod import HorovodBackend
        return HorovodBackend(world, process_sets)
    from distrain.backends.mpi import MPIBackend
    return MPIBackend(world)


def resolve_backend(name: str | None, world: World) -> str:
    """The backend a start with ``name`` runs: ``auto`` chosen from how the job was started.

    Args:
        name: ``mpi``, ``horovod``, ``local`` or ``auto``; ``DISTRAIN_BACKEND`` when None.
        world: the launcher's description.

    Returns:
        ``mpi``, ``horovod`` or ``local``.

    Raises:
        ValueError: ``name`` is not a backend.
        WorldError: horovodrun's Gloo mode without Horovod (no MPI world).
    """
    name = (name or env.setting(env.BACKEND, "auto")).lower()
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"unknown backend {name!r} (from {env.BACKEND} or init()); use one "
                         f"of {', '.join(BACKENDS)} or auto")
    return _choose(world) if name == "auto" else name


def host_share_backend(size: int, fusion_threshold: int, chunk_bytes: int) -> Backend:
    """A backend whose collectives do all of this rank's work and send nothing: for timing
    the host's share of a collective (the cost model's), with no MPI and no other rank.

    At one rank it is the local backend, whose every call is the whole collective; at more,
    the MPI backend's own code (signature, fusion plan, packing, scaling) over a
    negotiation and a transport that move no bytes (:meth:`MPIBackend.without_messages`).

    Args:
        size: the world size to do the work for (it decides the averaging passes).
        fusion_threshold: the fusion bucket size.
        chunk_bytes: the largest message.

    Returns:
        The backend; it needs no :meth:`Backend.shutdown`.
    """
    if size <= 1:
        from distrain.backends.local import LocalBackend
        return LocalBackend(None, fusion_threshold, chunk_bytes)
    from distrain.backends.mpi import MPIBackend
    return MPIBackend.without_messages(size, fusion_threshold, chunk_bytes)


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
