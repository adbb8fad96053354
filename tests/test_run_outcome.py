"""distrain-run's messages for a job whose ranks vanished: which ranks and hosts they name."""
import types

import pytest

from distrain.run.outcome import Ending, Reason, describe
from distrain.run.supervisor import _Rank

pytestmark = pytest.mark.timeout(30)

JOB = types.SimpleNamespace(np=4, hosts=("node_1", "node_1", "node_2", "node_2"),
                            start_timeout=30, heartbeat_timeout=60)
# Open MPI 5's mpirun inside a Slurm allocation (its daemons started by srun), after
# `docker kill` of node_2: the container ids are the ranks' own host names
PRTE_LOST = (
    "PRTE has lost communication with a remote daemon.",
    "  HNP daemon   : [prterun-3b38d8228183-1433@0,0] on node 3b38d8228183",
    "  Remote daemon: [prterun-3b38d8228183-1433@0,2] on node node_2",
    "This is usually due to either a failure of the TCP network",
)


def _vanished(first_lines):
    ranks = {r: _Rank(host=host) for r, host in
             enumerate(("3b38d8228183", "3b38d8228183", "aa8a546dd8cb", "aa8a546dd8cb"))}
    return describe(JOB, Ending(None, 0, ranks, started=frozenset(range(4)),
                                mpirun_first=first_lines))


def test_the_lost_daemon_names_its_ranks_and_not_mpiruns_own_host():
    outcome = _vanished(PRTE_LOST)
    assert outcome.reason is Reason.VANISHED and outcome.code == 1
    assert outcome.summary.startswith(
        "ranks 2, 3 on host aa8a546dd8cb (node_2) ended without an exit status")
    assert outcome.hosts == ("node_2",)


def test_with_no_host_named_every_vanished_rank_is_named():
    outcome = _vanished(("PRTE has lost communication with a remote daemon.",))
    assert outcome.summary.startswith("ranks 0, 1, 2, 3 on hosts 3b38d8228183 (node_1), "
                                      "aa8a546dd8cb (node_2) ended without an exit status")
