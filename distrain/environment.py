"""Who this process is: every environment variable distrain reads or sets, and launcher detection.

A rank learns its place in the job from the variables its launcher exported. This module
holds every such name, and every ``DISTRAIN_*`` setting, so the rest of distrain never spells
an environment-variable name itself.

Detection order (the first launcher whose variables are present wins):

==========  ==============================================================================
horovodrun  ``HOROVOD_RANK``/``HOROVOD_SIZE``/``HOROVOD_LOCAL_*``/``HOROVOD_CROSS_*`` (Gloo
            mode); in MPI mode Open MPI's variables, with horovodrun as an ancestor
Open MPI    ``OMPI_COMM_WORLD_RANK``/``_SIZE``/``_LOCAL_RANK``/``_LOCAL_SIZE``
Slurm       ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``/``SLURM_NODEID``/``SLURM_NNODES``
MPICH       ``PMI_RANK``/``PMI_SIZE`` with Hydra's ``MPI_LOCALRANKID``/``MPI_LOCALNRANKS``
none        a plain ``python`` process: rank 0 of 1
==========  ==============================================================================

Example:
    >>> detect_world({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}).rank
    1
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
from typing import Mapping

__all__ = [
    "World", "WorldError", "detect_world", "setting", "int_setting", "float_setting",
    "flag_setting", "tasks_per_node", "started_by_horovodrun", "node_name",
]

# --- distrain's own settings -------------------------------------------------------------
BACKEND = "DISTRAIN_BACKEND"                      # one of BACKENDS, or auto
BACKENDS = ("mpi", "horovod", "local")            # the backends init() and --backend take
FUSION_THRESHOLD = "DISTRAIN_FUSION_THRESHOLD"    # bytes per fusion bucket
CHUNK_BYTES = "DISTRAIN_CHUNK_BYTES"              # largest single MPI message
OVERLAP = "DISTRAIN_OVERLAP"                      # 0 reduces gradients after backward
BUCKET_BYTES = "DISTRAIN_BUCKET_BYTES"            # overlap bucket size (first: FIRST_...)
FIRST_BUCKET_BYTES = "DISTRAIN_FIRST_BUCKET_BYTES"
CHECK_SIGNATURES = "DISTRAIN_CHECK_SIGNATURES"    # 0 turns the cross-rank shape check off
STALL_WARNING_SECONDS = "DISTRAIN_STALL_WARNING_SECONDS"
STALL_SHUTDOWN_SECONDS = "DISTRAIN_STALL_SHUTDOWN_SECONDS"
CACHE_DIR = "DISTRAIN_CACHE_DIR"                  # cost-model calibration cache
RESTART_COUNT = "DISTRAIN_RESTART_COUNT"          # set by distrain-run on a relaunch
LAUNCHER = "DISTRAIN_LAUNCHER"                    # set by distrain-run: "distrain-run"
ELASTIC = "DISTRAIN_ELASTIC"                      # set by distrain-run in an elastic job
ELASTIC_DIR = "DISTRAIN_ELASTIC_DIR"              # where distrain.elastic states commit
TIMELINE = "DISTRAIN_TIMELINE"                    # a Chrome trace of the run's collectives

# --- horovodrun ----------------------------------------------------------------------------
HOROVOD_RANK = "HOROVOD_RANK"
HOROVOD_SIZE = "HOROVOD_SIZE"
HOROVOD_LOCAL_RANK = "HOROVOD_LOCAL_RANK"
HOROVOD_LOCAL_SIZE = "HOROVOD_LOCAL_SIZE"
HOROVOD_CROSS_RANK = "HOROVOD_CROSS_RANK"
HOROVOD_CROSS_SIZE = "HOROVOD_CROSS_SIZE"
HOROVOD_CONTROLLER = "HOROVOD_CONTROLLER"         # "gloo" in Gloo mode
HOROVOD_GLOO_RENDEZVOUS_ADDR = "HOROVOD_GLOO_RENDEZVOUS_ADDR"
HOROVOD_DYNAMIC_PROCESS_SETS = "HOROVOD_DYNAMIC_PROCESS_SETS"  # 1: add/remove after init
# Horovod's runtime settings (horovodrun's options and the core's variables, 0.28.1); what
# distrain does with each is the table in distrain/horovod_settings.py.
HOROVOD_FUSION_THRESHOLD = "HOROVOD_FUSION_THRESHOLD"
HOROVOD_CYCLE_TIME = "HOROVOD_CYCLE_TIME"
HOROVOD_CACHE_CAPACITY = "HOROVOD_CACHE_CAPACITY"
HOROVOD_HIERARCHICAL_ALLREDUCE = "HOROVOD_HIERARCHICAL_ALLREDUCE"
HOROVOD_HIERARCHICAL_ALLGATHER = "HOROVOD_HIERARCHICAL_ALLGATHER"
HOROVOD_TORUS_ALLREDUCE = "HOROVOD_TORUS_ALLREDUCE"
HOROVOD_AUTOTUNE = "HOROVOD_AUTOTUNE"
HOROVOD_AUTOTUNE_LOG = "HOROVOD_AUTOTUNE_LOG"
HOROVOD_AUTOTUNE_WARMUP_SAMPLES = "HOROVOD_AUTOTUNE_WARMUP_SAMPLES"
HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE = "HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE"
HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES = "HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES"
HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE = "HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE"
HOROVOD_TIMELINE = "HOROVOD_TIMELINE"
HOROVOD_TIMELINE_MARK_CYCLES = "HOROVOD_TIMELINE_MARK_CYCLES"
HOROVOD_STALL_CHECK_DISABLE = "HOROVOD_STALL_CHECK_DISABLE"
HOROVOD_STALL_CHECK_TIME_SECONDS = "HOROVOD_STALL_CHECK_TIME_SECONDS"
HOROVOD_STALL_SHUTDOWN_TIME_SECONDS = "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"
HOROVOD_MPI_THREADS_DISABLE = "HOROVOD_MPI_THREADS_DISABLE"
HOROVOD_NUM_NCCL_STREAMS = "HOROVOD_NUM_NCCL_STREAMS"
HOROVOD_THREAD_AFFINITY = "HOROVOD_THREAD_AFFINITY"
HOROVOD_GLOO_TIMEOUT_SECONDS = "HOROVOD_GLOO_TIMEOUT_SECONDS"
HOROVOD_GLOO_IFACE = "HOROVOD_GLOO_IFACE"
HOROVOD_LOG_LEVEL = "HOROVOD_LOG_LEVEL"
HOROVOD_LOG_HIDE_TIME = "HOROVOD_LOG_HIDE_TIME"
HOROVOD_ADASUM_MPI_CHUNK_SIZE = "HOROVOD_ADASUM_MPI_CHUNK_SIZE"
HOROVOD_BATCH_D2D_MEMCOPIES = "HOROVOD_BATCH_D2D_MEMCOPIES"
HOROVOD_CPU_OPERATIONS = "HOROVOD_CPU_OPERATIONS"
HOROVOD_GPU_OPERATIONS = "HOROVOD_GPU_OPERATIONS"
HOROVOD_DISABLE_GROUP_FUSION = "HOROVOD_DISABLE_GROUP_FUSION"
HOROVOD_ENABLE_ASYNC_COMPLETION = "HOROVOD_ENABLE_ASYNC_COMPLETION"
HOROVOD_ENABLE_XLA_OPS = "HOROVOD_ENABLE_XLA_OPS"
HOROVOD_ELASTIC = "HOROVOD_ELASTIC"
# horovodrun in MPI mode sets no HOROVOD_* variable; it exports these to every rank.
HOROVODRUN_MPI_SIGNATURE = {"OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "^openib"}
NCCL_SOCKET_IFNAME = "NCCL_SOCKET_IFNAME"

# --- Open MPI (mpirun, and distrain-run which drives it) -----------------------------------
OMPI_RANK = "OMPI_COMM_WORLD_RANK"
OMPI_SIZE = "OMPI_COMM_WORLD_SIZE"
OMPI_LOCAL_RANK = "OMPI_COMM_WORLD_LOCAL_RANK"
OMPI_LOCAL_SIZE = "OMPI_COMM_WORLD_LOCAL_SIZE"

# --- MPICH / Hydra / Intel MPI --------------------------------------------------------------
PMI_RANK = "PMI_RANK"
PMI_SIZE = "PMI_SIZE"
MPICH_LOCAL_RANK = "MPI_LOCALRANKID"
MPICH_LOCAL_SIZE = "MPI_LOCALNRANKS"

# --- Slurm (srun) ---------------------------------------------------------------------------
SLURM_PROCID = "SLURM_PROCID"
SLURM_NTASKS = "SLURM_NTASKS"
SLURM_LOCALID = "SLURM_LOCALID"
SLURM_NODEID = "SLURM_NODEID"
SLURM_NNODES = "SLURM_NNODES"
SLURM_TASKS_PER_NODE = "SLURM_TASKS_PER_NODE"
SLURM_NTASKS_PER_NODE = "SLURM_NTASKS_PER_NODE"   # sbatch --ntasks-per-node, where given
SLURM_JOB_NODELIST = "SLURM_JOB_NODELIST"         # the job's nodes, compressed (node_[1-2])
SLURMD_NODENAME = "SLURMD_NODENAME"               # the Slurm node a job's process runs on
SLURM_JOB_ID = "SLURM_JOB_ID"                     # set inside a job (batch script, salloc)
SLURM_OVERLAP = "SLURM_OVERLAP"                   # srun --overlap, read by srun from its env

# --- threading and TensorFlow ---------------------------------------------------------------
OMP_NUM_THREADS = "OMP_NUM_THREADS"
TF_NUM_INTRAOP_THREADS = "TF_NUM_INTRAOP_THREADS"
TF_NUM_INTEROP_THREADS = "TF_NUM_INTEROP_THREADS"
TF_CPP_MIN_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"

# --- the C library ---------------------------------------------------------------------------
GLIBC_TUNABLES = "GLIBC_TUNABLES"                 # distrain-run adds glibc.malloc.hugetlb=1
MALLOC_HUGETLB = "glibc.malloc.hugetlb"


class WorldError(RuntimeError):
    """The launcher's variables are contradictory or name an unusable setup."""


@dataclasses.dataclass(frozen=True)
class World:
    """A rank's place in the job, as its launcher described it.

    Attributes:
        rank: global rank, 0 <= rank < size.
        size: number of ranks in the job.
        local_rank: rank among the ranks on this host.
        local_size: number of ranks on this host.
        cross_rank: index of this host among the hosts with a rank of this local rank.
        cross_size: number of hosts with a rank of this local rank (Horovod's meaning: the
            number of hosts when every host runs as many ranks).
        launcher: which launcher's variables were read: ``horovodrun``, ``openmpi``,
            ``slurm``, ``mpich`` or ``none``.
        gloo: True when horovodrun started the process in Gloo mode (no MPI world).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    cross_rank: int = 0
    cross_size: int = 1
    launcher: str = "none"
    gloo: bool = False

    def __post_init__(self):
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise WorldError(f"{self.launcher} reports rank {self.rank} of size {self.size}")
        if self.local_size < 1 or not 0 <= self.local_rank < self.local_size:
            raise WorldError(
                f"{self.launcher} reports local rank {self.local_rank} of local size "
                f"{self.local_size}")


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise WorldError(f"{name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise WorldError(f"{name}={value!r} is not an integer") from None


def tasks_per_node(spec: str, node: int) -> int:
    """Reads Slurm's compressed ``SLURM_TASKS_PER_NODE`` for one node.

    Args:
        spec: the value, e.g. ``"2(x3),1"`` (three nodes of 2 tasks, then one of 1).
        node: index of the node.

    Returns:
        The number of tasks on that node.

    Raises:
        WorldError: the value is malformed or has no entry for ``node``.
    """
    index = 0
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise WorldError(f"{SLURM_TASKS_PER_NODE}={spec!r} is malformed")
        count, repeat = int(match.group(1)), int(match.group(2) or 1)
        if node < index + repeat:
            return count
        index += repeat
    raise WorldError(f"{SLURM_TASKS_PER_NODE}={spec!r} has no entry for node {node}")


def _homogeneous_cross(rank: int, size: int, local_size: int) -> tuple[int, int]:
    """Host index and host count when every host runs ``local_size`` ranks in rank order."""
    return rank // local_size, max(1, -(-size // local_size))


def _ancestor_commands(pid: int, depth: int = 8) -> list[str]:
    """Command lines of this process's ancestors, nearest first (Linux /proc; else [])."""
    commands = []
    for _ in range(depth):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
            if pid <= 1:
                break
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                commands.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            break
    return commands


def started_by_horovodrun(env: Mapping[str, str], ancestors: list[str] | None = None) -> bool:
    """True when horovodrun launched this process, in Gloo or in MPI mode.

    Gloo mode exports ``HOROVOD_RANK``. MPI mode exports no variable of its own, so it is
    recognised by a ``horovodrun`` among the process's ancestors (same host), or by the MPI
    settings horovodrun forwards to every rank (other hosts).

    Args:
        env: the environment.
        ancestors: ancestor command lines; read from /proc when None.
    """
    if HOROVOD_RANK in env:
        return True
    if OMPI_RANK not in env:
        return False
    if ancestors is None:
        ancestors = _ancestor_commands(os.getpid())
    if any("horovodrun" in command for command in ancestors):
        return True
    return NCCL_SOCKET_IFNAME in env and all(
        env.get(k) == v for k, v in HOROVODRUN_MPI_SIGNATURE.items())


def detect_world(env: Mapping[str, str] | None = None) -> World:
    """Reads a rank's place in the job from its launcher's environment variables.

    The cross rank and size given here assume ranks are placed by host in rank order; the MPI
    backend replaces them with what MPI itself reports once it starts.

    Args:
        env: the environment to read; ``os.environ`` when omitted.

    Returns:
        The :class:`World` the launcher described; rank 0 of 1 when no launcher is detected.

    Raises:
        WorldError: a launcher's variables are present but malformed or contradictory.
    """
    env = os.environ if env is None else env
    if HOROVOD_RANK in env:
        rank, size = _int(env, HOROVOD_RANK), _int(env, HOROVOD_SIZE)
        local_rank = _int(env, HOROVOD_LOCAL_RANK, 0)
        local_size = _int(env, HOROVOD_LOCAL_SIZE, size)
        cross = _homogeneous_cross(rank, size, local_size)
        gloo = (env.get(HOROVOD_CONTROLLER, "").lower() == "gloo"
                or HOROVOD_GLOO_RENDEZVOUS_ADDR in env)
        return World(rank, size, local_rank, local_size,
                     _int(env, HOROVOD_CROSS_RANK, cross[0]),
                     _int(env, HOROVOD_CROSS_SIZE, cross[1]), "horovodrun", gloo)
    if OMPI_RANK in env:
        rank, size = _int(env, OMPI_RANK), _int(env, OMPI_SIZE)
        local_rank = _int(env, OMPI_LOCAL_RANK, 0)
        local_size = _int(env, OMPI_LOCAL_SIZE, size)
        launcher = "horovodrun" if started_by_horovodrun(env) else "openmpi"
        return World(rank, size, local_rank, local_size,
                     *_homogeneous_cross(rank, size, local_size), launcher)
    if SLURM_PROCID in env and SLURM_NTASKS in env:
        rank, size = _int(env, SLURM_PROCID), _int(env, SLURM_NTASKS)
        node = _int(env, SLURM_NODEID, 0)
        spec = env.get(SLURM_TASKS_PER_NODE)
        local_size = tasks_per_node(spec, node) if spec else size
        return World(rank, size, _int(env, SLURM_LOCALID, 0), local_size, node,
                     _int(env, SLURM_NNODES, 1), "slurm")
    if PMI_RANK in env:
        rank, size = _int(env, PMI_RANK), _int(env, PMI_SIZE)
        local_rank = _int(env, MPICH_LOCAL_RANK, 0)
        local_size = _int(env, MPICH_LOCAL_SIZE, size)
        return World(rank, size, local_rank, local_size,
                     *_homogeneous_cross(rank, size, local_size), "mpich")
    return World()


def node_name(env: Mapping[str, str] | None = None) -> str:
    """The name of the node this process runs on: Slurm's (``SLURMD_NODENAME``) under Slurm,
    which may differ from the host name (a container's is its id), else the host name."""
    env = os.environ if env is None else env
    return env.get(SLURMD_NODENAME) or socket.gethostname()


def setting(name: str, default: str | None = None, env: Mapping[str, str] | None = None):
    """Returns a ``DISTRAIN_*`` (or other) setting's raw value, or ``default``."""
    env = os.environ if env is None else env
    value = env.get(name)
    return default if value is None or value == "" else value


def int_setting(name: str, default: int, env: Mapping[str, str] | None = None,
                minimum: int | None = None) -> int:
    """Returns an integer setting.

    Args:
        name: the variable's name.
        default: the value when it is unset or empty.
        env: the environment to read; ``os.environ`` when omitted.
        minimum: the least acceptable value.

    Returns:
        The value.

    Raises:
        ValueError: the value is not an integer or is below ``minimum``.
    """
    raw = setting(name, None, env)
    if raw is None:
        return default
    try:
        value = int(float(raw)) if re.fullmatch(r"\d+(\.\d*)?[eE]\d+", raw) else int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={raw!r} must be at least {minimum}")
    return value


def flag_setting(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    """Returns an on/off setting: an integer (above 0 is on, as Horovod reads its flags), or
    ``true``/``false``, ``yes``/``no``, ``on``/``off``.

    Raises:
        ValueError: the value is none of these.
    """
    raw = setting(name, None, env)
    if raw is None:
        return default
    words = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
    if raw.strip().lower() in words:
        return words[raw.strip().lower()]
    try:
        return int(raw) > 0
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a flag; set it to 1 or 0") from None


def float_setting(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    """Returns a floating-point setting.

    Raises:
        ValueError: the value is not a number.
    """
    raw = setting(name, None, env)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None

# --- distrain-run ---
# distrain-run forwards the whole environment to every rank (``-x NAME`` per variable), except
# what each host's MPI launcher sets for itself and the shell's own per-process state.
PATH = "PATH"                                     # where mpirun and the program are looked up
TMPDIR = "TMPDIR"                                 # where Open MPI keeps its session directories
MPIRUN = "DISTRAIN_MPIRUN"                        # the mpirun/mpiexec distrain-run drives
HOST_DISCOVERY_SCRIPT = "DISTRAIN_HOST_DISCOVERY_SCRIPT"  # --host-discovery-script's default
NOT_FORWARDED_PREFIXES = ("OMPI_", "PMIX_", "PRTE_", "OPAL_", "HYDRA_", "PMI_", "MPI_LOCAL",
                          "BASH_FUNC_")
NOT_FORWARDED = ("_", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", SLURMD_NODENAME)
