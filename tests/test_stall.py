"""The stall inspector's clock and messages, on a world of one whose negotiation never ends."""
import subprocess
import sys

import pytest

FAKE_CLOCK = """
import numpy as np
from mpi4py import MPI
from distrain.backends.stall import StallInspector

ticks = iter(range(0, 10 ** 6, 10))  # every reading of the clock is 10 s later
codes = []


class Stop(Exception):
    pass


def abort(code):
    codes.append(code)
    raise Stop


inspector = StallInspector(MPI.COMM_SELF, 15.0, 40.0, abort, clock=lambda: float(next(ticks)))
request = MPI.COMM_SELF.Irecv(np.zeros(1), source=0, tag=99)  # nobody sends: a stall
try:
    inspector.wait(request, 7, "a test collective")
except Stop:
    pass
request.Cancel()
request.Wait()
print("abort codes", codes)
"""


@pytest.mark.timeout(120)
def test_a_stalled_negotiation_warns_then_aborts_on_the_inspectors_clock():
    done = subprocess.run([sys.executable, "-c", FAKE_CLOCK], capture_output=True, text=True,
                          timeout=100)
    assert done.returncode == 0, done.stderr
    assert "abort codes [124]" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "stall: collective #7" in line]
    assert warnings[0].startswith("[distrain] stall: collective #7 (a test collective) has "
                                  "waited 20 s; ranks not joined: none known")
    assert "stalled for 40 s, past DISTRAIN_STALL_SHUTDOWN_SECONDS=40; aborting the job" \
        in done.stderr
