"""distrain.run.slurm_nodes: a Slurm job's nodes from Slurm's commands (faked here), and the
line naming the ranks of the nodes whose slurmd does not answer."""
import pytest

from distrain.run import slurm_nodes
from distrain.run.hosts import Host

pytestmark = pytest.mark.timeout(60)

JOB = {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_TASKS_PER_NODE": "2(x2),1"}


@pytest.fixture
def slurm(monkeypatch):
    """Slurm's commands as a 3-node job sees them: n3 first in the node table."""
    answers = {
        ("scontrol", "show", "hostnames", "n[1-3]"): "n1\nn2\nn3\n",
        ("sinfo", "-h", "-N", "-n", "n3,n1,n2", "-o", "%N %o"):
            "n1 10.0.0.1\nn2 10.0.0.2\nn3 10.0.0.3\n",
        ("scontrol", "-o", "show", "nodes"):
            "NodeName=n3 Arch=x86_64\nNodeName=n9 Arch=x86_64\nNodeName=n1 Arch=x86_64\n"
            "NodeName=n2 Arch=x86_64\n",
        ("scontrol", "show", "config"): "SlurmctldPort = 6817\nSlurmdPort              = 7000\n",
    }
    monkeypatch.setattr(slurm_nodes, "_slurm", lambda *argv: answers[argv])


def test_hosts_are_the_jobs_nodes_in_node_table_order_with_their_tasks(slurm):
    assert slurm_nodes.job_hosts(JOB) == [Host("n3", 2), Host("n1", 2), Host("n2", 1)]
    each = {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_NTASKS_PER_NODE": "4"}
    assert [h.slots for h in slurm_nodes.job_hosts(each)] == [4, 4, 4]


def test_hosts_prints_discovery_lines(slurm, capsys):
    assert slurm_nodes.main(["hosts"], JOB) == 0
    assert capsys.readouterr().out == "n3:2\nn1:2\nn2:1\n"


def test_live_hosts_are_those_the_job_holds_now_whose_slurmd_answers(slurm, monkeypatch,
                                                                      capsys):
    shown = {"1": "JobId=1 ReqNodeList=(null) ExcNodeList=(null) NodeList=n[1-2] BatchHost=n3",
             "2": "JobId=2 NodeList=n[1-3] BatchHost=n3"}
    real = slurm_nodes._slurm

    def fake(*argv):
        if argv[:3] == ("scontrol", "-o", "show") and argv[3] == "job":
            return shown[argv[4]]
        if argv == ("scontrol", "show", "hostnames", "n[1-2]"):
            return "n1\nn2\n"
        if argv[:4] == ("sinfo", "-h", "-N", "-n"):
            return "n1 10.0.0.1\nn2 10.0.0.2\nn3 10.0.0.3\n"
        return real(*argv)

    monkeypatch.setattr(slurm_nodes, "_slurm", fake)
    monkeypatch.setattr(slurm_nodes, "answers", lambda address, port: address != "10.0.0.2")
    # n3 no longer held (Slurm dropped it), n2's slurmd silent: n1 left
    assert slurm_nodes.main(["hosts", "--live"], dict(JOB, SLURM_JOB_ID="1")) == 0
    assert capsys.readouterr().out == "n1:2\n"
    assert slurm_nodes.live_hosts(dict(JOB, SLURM_JOB_ID="2")) == [Host("n3", 2), Host("n1", 2)]


def test_block_ranks_fill_the_nodes_in_order():
    assert slurm_nodes.block_ranks(["c", "a", "b"], "2(x2),1") == {
        "c": [0, 1], "a": [2, 3], "b": [4]}


def test_lost_names_the_ranks_of_the_silent_node_on_its_address_and_slurmd_port(
        slurm, monkeypatch, capsys):
    monkeypatch.setattr(slurm_nodes, "answers", lambda address, port: address != "10.0.0.1")
    assert slurm_nodes.main(["lost", "14"], JOB) == 0
    assert capsys.readouterr().err == (
        "distrain: ranks 2, 3 on node n1 were lost: its slurmd (10.0.0.1:7000) does not "
        "answer (srun ended with exit code 14)\n")


def test_lost_says_nothing_when_every_node_answers(slurm, monkeypatch, capsys):
    monkeypatch.setattr(slurm_nodes, "answers", lambda address, port: True)
    assert slurm_nodes.main(["lost", "1"], JOB) == 0
    assert capsys.readouterr() == ("", "")


def test_lost_line_for_one_rank_and_for_two_nodes():
    placed = {"a": [0], "b": [1], "c": [2]}
    assert slurm_nodes.lost_line(placed, {"c": "x:1"}, 9) == (
        "distrain: rank 2 on node c was lost: its slurmd (x:1) does not answer (srun ended "
        "with exit code 9)")
    assert slurm_nodes.lost_line(placed, {"b": "y:1", "c": "x:1"}, 9).startswith(
        "distrain: rank 1 on node b; rank 2 on node c were lost: their slurmds (y:1, x:1) do "
        "not answer")


def test_outside_a_job_it_is_one_line_and_exit_2(capsys):
    assert slurm_nodes.main(["hosts"], {}) == 2
    assert capsys.readouterr().err.startswith("python -m distrain.run.slurm_nodes: error: "
                                              "SLURM_JOB_NODELIST is not set")
