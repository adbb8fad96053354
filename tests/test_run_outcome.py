"""distrain-run's messages for a job whose ranks vanished or aborted: which ranks and hosts
they name."""
import io
import types

import pytest

from distrain.protocol import Record, format_record
from distrain.run.outcome import Ending, Reason, describe
from distrain.run.output import Console
from distrain.run.supervisor import _Output, _Rank
from distrain.run.vendors import OPENMPI5

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


def _read(lines):
    """What the supervisor's reader makes of Open MPI 5's output ``lines``: the reader, the
    ranks it found failed, and what it showed on stdout."""
    failed, shown = [], io.StringIO()
    job = types.SimpleNamespace(vendor=OPENMPI5)
    output = _Output(job, Console(shown, io.StringIO()), None, failed.append)
    for stream, text in lines:
        output.feed(stream, (text + ("" if text.endswith("\n") else "\n")).encode())
    return output, failed, shown.getvalue()


@pytest.mark.parametrize("tag", ["[1,1]<stdout>: ", ""], ids=["tagged", "untagged"])
def test_a_rank_that_aborts_the_job_is_named_with_its_code_though_its_exit_is_lost(tag):
    # across hosts, MPI_Abort's teardown can take the rank wrappers' exit records with it,
    # and mpirun may pass the job's last lines on untagged; the program's own record,
    # written before the abort and naming its rank, still names the rank that failed
    start = "[1,{r}]<stdout>: " + format_record(Record.START, host="h{r}", pid=1, rank="{r}")
    output, failed, shown = _read([
        ("stdout", start.format(r=0)), ("stdout", start.format(r=1)),
        ("stderr", "[1,1]<stderr>: [rank 1] uncaught CollectiveMismatchError: aborting every "
                   "rank"),
        ("stdout", tag + format_record(Record.ABORT, code=1, time="5.0", rank=1)),
        ("stdout", tag + format_record(Record.EXIT, code=143, signal=15, stopped=0,
                                       time="6.0", rank=1))])
    assert failed == [1]
    assert "distrain" not in shown       # records are read, never shown
    job = types.SimpleNamespace(np=2, hosts=("a", "b"), start_timeout=30,
                                heartbeat_timeout=60)
    outcome = describe(job, Ending(Reason.RANK, 0, output.ranks, started=frozenset({0, 1}),
                                   failed=(1,)))
    assert outcome.reason is Reason.RANK and outcome.code == 1 and outcome.hosts == ("b",)
    assert outcome.summary == "rank 1 on host h1 (b) exited with code 1"
    assert outcome.last_words.endswith("uncaught CollectiveMismatchError: aborting every rank")
