"""``distrain-run --check-build``: what is installed and which backends can work.

Versions come from package metadata and subprocesses, never by importing TensorFlow (or
Horovod, which imports it) in the launcher: the check takes a fraction of a second.

Example:
    distrain-run --check-build
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

from distrain.errors import UsageError
from distrain.run.vendors import detect_vendor, find_mpirun, version_text

__all__ = ["package_version", "mpi_library", "report", "main"]

_MPI_PROBE = ("import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; "
              "print(MPI.Get_library_version().strip().splitlines()[0])")


def package_version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def mpi_library(python: str = sys.executable, timeout: float = 30.0) -> tuple[bool, str]:
    """Loads mpi4py's MPI library in a subprocess (without initialising MPI).

    Returns:
        ``(True, library version line)`` or ``(False, why not)``.
    """
    try:
        done = subprocess.run([python, "-c", _MPI_PROBE], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return False, lines[-1] if lines else f"exit code {done.returncode}"
    return True, done.stdout.replace("\x00", "").strip()


def report(environ=None) -> str:
    """The check-build text.

    Args:
        environ: where to look for mpirun; ``os.environ`` when None.
    """
    environ = os.environ if environ is None else environ
    from distrain import __version__
    tensorflow = package_version("tensorflow") or package_version("tensorflow-cpu")
    mpi4py = package_version("mpi4py")
    horovod = package_version("horovod")
    try:
        mpirun = find_mpirun(environ, beside=os.path.dirname(sys.executable))
        version = version_text(mpirun)
        first = version.strip().splitlines()[0] if version.strip() else "?"
        try:
            launcher = f"{detect_vendor(version).label} ({first}) at {mpirun}"
        except UsageError:
            launcher = f"not supported ({first}) at {mpirun}"
    except UsageError as exc:
        launcher = f"not found: {exc}"
    mpi_ok, library = mpi_library() if mpi4py else (False, "mpi4py is not installed")
    horovod_found = horovod is not None and importlib.util.find_spec("horovod") is not None
    rows = [
        ("distrain", __version__),
        ("TensorFlow", tensorflow or "not installed"),
        ("mpi4py", mpi4py or "not installed"),
        ("MPI library", library if mpi_ok else f"cannot be loaded ({library})"),
        ("MPI launcher", launcher),
        ("Horovod", horovod or "not installed"),
    ]
    backends = [
        ("mpi", mpi_ok, f"mpi4py {mpi4py} with {library.split(',')[0]}" if mpi_ok
         else library),
        ("horovod", horovod_found,
         "installed; used when horovodrun starts the job (not imported here: it loads "
         "TensorFlow)" if horovod_found else "Horovod is not installed"),
        ("local", True, "one process, no MPI"),
    ]
    lines = [f"distrain v{__version__}", ""]
    lines += [f"  {name:<13} {value}" for name, value in rows]
    lines += ["", "Available backends:"]
    lines += [f"  [{'X' if ok else ' '}] {name:<8} {why}" for name, ok, why in backends]
    return "\n".join(lines)


def main(environ=None) -> int:
    """Prints :func:`report`; returns 0."""
    print(report(environ), flush=True)
    return 0
