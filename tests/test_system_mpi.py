"""The collective suite on a system MPI (Debian's MPICH), not the PyPI Open MPI.

mpi4py's binary wheel loads whichever MPI library it is pointed at; Debian names MPICH's
library libmpich.so.12, so a folder with a libmpi.so.12 link to it stands in for the name
mpi4py's MPICH build looks for (docs/install.md). .ci/run installs Debian's mpich first.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, rank_env

MPICH_LIB = "/usr/lib/x86_64-linux-gnu/libmpich.so.12"
MPIEXEC = shutil.which("mpiexec.mpich")


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.skipif(MPIEXEC is None or not os.path.exists(MPICH_LIB),
                    reason="Debian's mpich is not installed (apt-get install mpich)")
def test_collectives_on_system_mpich(tmp_path):
    os.symlink(MPICH_LIB, tmp_path / "libmpi.so.12")
    child = rank_env(2, MPI4PY_LIBMPI=MPICH_LIB, LD_LIBRARY_PATH=str(tmp_path))
    result = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, "-m", "pytest", "tests/ranks", "-o",
         "python_files=rank_*.py", "-q", "-p", "no:cacheprovider", "--color=no"],
        cwd=ROOT, env=child, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # Not anchored at line starts: mpiexec may glue the two ranks' last lines together.
    assert len(re.findall(r"\d+ passed(?:, \d+ \w+)* in [\d.]+s", result.stdout)) == 2, \
        result.stdout[-3000:]
    assert not re.search(r"\d+ (?:failed|errors?)\b", result.stdout), result.stdout[-3000:]
    probe = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, "-c",
         "import sys, distrain as h; h.init(); from mpi4py import MPI; sys.stdout.write("
         "f'<{h.collectives.backend().world.launcher} {MPI.Get_library_version().split()[0]}>')"],
        cwd=ROOT, env=child, capture_output=True, text=True, timeout=60)
    assert probe.stdout.count("<mpich MPICH>") == 2, probe.stdout + probe.stderr
