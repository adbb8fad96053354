"""How a rank learns who it is, from each launcher's variables."""
import pytest

from distrain import environment as env
from distrain.environment import World, WorldError, detect_world, tasks_per_node


def test_plain_process_is_rank_zero_of_one():
    assert detect_world({}) == World(0, 1, 0, 1, 0, 1, "none")


def test_open_mpi():
    world = detect_world({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
                          "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                          "OMPI_COMM_WORLD_LOCAL_SIZE": "4"})
    assert world == World(5, 8, 1, 4, 1, 2, "openmpi")


def test_mpich_hydra():
    world = detect_world({"PMI_RANK": "2", "PMI_SIZE": "3", "MPI_LOCALRANKID": "0",
                          "MPI_LOCALNRANKS": "1"})
    assert world == World(2, 3, 0, 1, 2, 3, "mpich")


def test_slurm_with_uneven_nodes():
    world = detect_world({"SLURM_PROCID": "6", "SLURM_NTASKS": "7", "SLURM_LOCALID": "0",
                          "SLURM_NODEID": "3", "SLURM_NNODES": "4",
                          "SLURM_TASKS_PER_NODE": "2(x3),1"})
    assert world == World(6, 7, 0, 1, 3, 4, "slurm")


def test_horovodrun_wins_over_mpirun_it_used():
    world = detect_world({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "1",
                          "HOROVOD_LOCAL_SIZE": "2", "HOROVOD_CROSS_RANK": "0",
                          "HOROVOD_CROSS_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
                          "OMPI_COMM_WORLD_SIZE": "4"})
    assert world == World(1, 4, 1, 2, 0, 2, "horovodrun", gloo=False)


def test_horovodrun_gloo_mode_is_recognised():
    world = detect_world({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2",
                          "HOROVOD_GLOO_RENDEZVOUS_ADDR": "10.0.0.1"})
    assert world.gloo and world.launcher == "horovodrun"


@pytest.mark.parametrize("variables, problem", [
    ({"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2"}, "not an integer"),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "2"}, "rank 2 of size 2"),
    ({"PMI_RANK": "0"}, "PMI_SIZE is not set"),
    ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
      "OMPI_COMM_WORLD_LOCAL_RANK": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, "local rank 3"),
])
def test_contradictions_are_errors(variables, problem):
    with pytest.raises(WorldError, match=problem):
        detect_world(variables)


def test_slurm_tasks_per_node_format():
    assert [tasks_per_node("4(x2),3,1", n) for n in range(4)] == [4, 4, 3, 1]
    with pytest.raises(WorldError, match="malformed"):
        tasks_per_node("4(y2)", 0)
    with pytest.raises(WorldError, match="no entry"):
        tasks_per_node("2", 1)


def test_node_name_is_slurms_under_slurm_else_the_host_name():
    import socket
    assert env.node_name({"SLURMD_NODENAME": "node_2"}) == "node_2"
    assert env.node_name({}) == socket.gethostname()


def test_settings_parse_and_reject():
    assert env.int_setting(env.FUSION_THRESHOLD, 7, {}) == 7
    assert env.int_setting(env.FUSION_THRESHOLD, 7, {env.FUSION_THRESHOLD: "1e6"}) == 1000000
    with pytest.raises(ValueError, match="DISTRAIN_FUSION_THRESHOLD='big'"):
        env.int_setting(env.FUSION_THRESHOLD, 7, {env.FUSION_THRESHOLD: "big"})
    with pytest.raises(ValueError, match="at least 0"):
        env.int_setting(env.FUSION_THRESHOLD, 7, {env.FUSION_THRESHOLD: "-1"}, minimum=0)
    assert env.float_setting(env.STALL_WARNING_SECONDS, 60.0, {}) == 60.0


def test_every_variable_name_lives_in_the_environment_module():
    import pathlib
    import re
    package = pathlib.Path(env.__file__).parent
    pattern = re.compile(r"[\"'](DISTRAIN|HOROVOD|OMPI|PMI|SLURM|MPI_LOCAL)_[A-Z_]+[\"']")
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.name != "environment.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_horovodrun_mpi_mode_is_recognised_by_ancestry_or_its_signature():
    from distrain.environment import started_by_horovodrun
    ompi = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}
    assert started_by_horovodrun(ompi, ["prted", "/venv/bin/python /venv/bin/horovodrun -np 2"])
    assert not started_by_horovodrun(ompi, ["prted", "mpirun -np 2 python train.py"])
    remote = dict(ompi, NCCL_SOCKET_IFNAME="eth0", OMPI_MCA_pml="ob1", OMPI_MCA_btl="^openib")
    assert started_by_horovodrun(remote, ["orted"])
    assert not started_by_horovodrun({}, ["horovodrun"])  # no MPI world at all
