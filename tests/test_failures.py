"""What happens when a rank fails or stalls: the job ends, with the reason, never hangs."""
import subprocess
import sys
import time

import pytest

from conftest import rank_env, run_mpi

CRASH = """
import distrain as hvd, numpy as np
hvd.init()
hvd.barrier()
if hvd.rank() == 1:
    raise RuntimeError("injected failure on rank 1")
hvd.allreduce(np.ones(3))   # rank 0 would wait here forever without fail-fast
"""

STALL = """
import time, distrain as hvd, numpy as np
hvd.init()
if hvd.rank() == 1:
    time.sleep(60)          # never reaches the collective in time
hvd.allreduce(np.ones(3), name="grad/late")
"""


@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_uncaught_exception_on_one_rank_aborts_every_rank():
    start = time.monotonic()
    result = run_mpi(2, ["-c", CRASH], timeout=45)
    assert result.returncode != 0
    assert "[rank 1] RuntimeError: injected failure on rank 1" in result.stderr
    assert "aborting every rank" in result.stderr
    assert time.monotonic() - start < 40


@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_stall_is_reported_with_missing_ranks_then_aborted():
    result = run_mpi(3, ["-c", STALL], timeout=45, DISTRAIN_STALL_WARNING_SECONDS="1",
                     DISTRAIN_STALL_SHUTDOWN_SECONDS="4")
    assert result.returncode != 0
    assert "ranks not joined: 1" in result.stderr, result.stderr[-2000:]
    assert "grad/late" in result.stderr
    assert "DISTRAIN_STALL_SHUTDOWN_SECONDS=4; aborting the job" in result.stderr


OVERLAP_STALL = """
import time, distrain as hvd, numpy as np, tensorflow as tf
from distrain.overlap import overlapped_allreduce
hvd.init()
grads = [tf.constant(np.ones((64, 64), np.float32)), tf.constant(np.ones(8, np.float32))]
step = tf.function(lambda g: overlapped_allreduce(g, name="grads/overlapped"))
step(grads)
if hvd.rank() == 1:
    time.sleep(60)          # misses the next step's buckets
step(grads)
"""

OVERLAP_CRASH = """
import distrain as hvd, numpy as np, tensorflow as tf
from distrain.overlap import overlapped_allreduce
hvd.init()
shape = (4,) if hvd.rank() == 0 else (5,)   # ranks disagree on the second bucket's shapes
tf.function(lambda g: overlapped_allreduce(g, name="grads/mismatched"))(
    [tf.ones(shape), tf.ones((8,))])
"""


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_a_rank_missing_from_overlapped_buckets_is_named_then_aborted():
    result = run_mpi(2, ["-c", OVERLAP_STALL], timeout=75, DISTRAIN_STALL_WARNING_SECONDS="1",
                     DISTRAIN_STALL_SHUTDOWN_SECONDS="4", DISTRAIN_FIRST_BUCKET_BYTES="16",
                     DISTRAIN_OVERLAP="1")
    assert result.returncode != 0
    assert "ranks not joined: 1" in result.stderr, result.stderr[-2000:]
    assert "grads/overlapped (bucket 1 of 2)" in result.stderr, result.stderr[-2000:]
    assert "DISTRAIN_STALL_SHUTDOWN_SECONDS=4; aborting the job" in result.stderr


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_a_mismatch_in_an_overlapped_bucket_aborts_every_rank_naming_it():
    result = run_mpi(2, ["-c", OVERLAP_CRASH], timeout=75, DISTRAIN_OVERLAP="1",
                     DISTRAIN_FIRST_BUCKET_BYTES="16")
    assert result.returncode != 0
    assert "grads/mismatched (bucket 2 of 2)" in result.stderr, result.stderr[-2000:]
    assert "aborting every rank" in result.stderr, result.stderr[-2000:]


WEDGED = """
import time, distrain as hvd, numpy as np
hvd.init()
hvd.barrier()
if hvd.rank() == 1:   # joins the negotiation, then never moves its data
    hvd.collectives.backend().engine.allreduce = lambda *args: time.sleep(60)
hvd.allreduce(np.ones(3), name="grad/wedged")
"""


@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_a_rank_wedged_in_the_data_transfer_is_aborted_by_the_watchdog():
    start = time.monotonic()
    result = run_mpi(2, ["-c", WEDGED], timeout=45, DISTRAIN_STALL_SHUTDOWN_SECONDS="3")
    assert result.returncode != 0
    assert "(grad/wedged) has moved its data for 3 s without finishing, past " \
           "DISTRAIN_STALL_SHUTDOWN_SECONDS=3" in result.stderr, result.stderr[-2000:]
    assert time.monotonic() - start < 40


@pytest.mark.timeout(60)
def test_launcher_world_that_mpi_does_not_see_is_an_error():
    # Variables of a 2-rank MPICH launch, but no launcher: MPI starts a world of one.
    child = rank_env(1, PMI_RANK="0", PMI_SIZE="2", DISTRAIN_BACKEND="mpi")
    result = subprocess.run([sys.executable, "-c", "import distrain; distrain.init()"],
                            env=child, capture_output=True, text=True, timeout=45)
    assert result.returncode != 0
    assert "mpich started 2 ranks but MPI reports a world of 1" in result.stderr
