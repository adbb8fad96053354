"""distrain-run's host lists: -H, hostfiles, and their errors."""
import pytest

from distrain.errors import UsageError
from distrain.run.hosts import (Host, format_hosts, parse_hostfile, parse_hosts, placement,
                                read_hostfile)


def test_dash_h_reads_hosts_and_slots_in_order():
    assert parse_hosts("node1:2,node2:3,10.0.0.7") == (
        Host("node1", 2), Host("node2", 3), Host("10.0.0.7", 1))


def test_hostfile_reads_slots_comments_and_blank_lines():
    text = """
    # the rack
    node1 slots=2   # trailing comment
    node2 slots=4 max_slots=8

    node_3
    """
    assert parse_hostfile(text) == (Host("node1", 2), Host("node2", 4), Host("node_3", 1))


@pytest.mark.parametrize("spec, words", [
    ("node1:0", "slots must be a positive integer"),
    ("node1:x", "slots must be a positive integer"),
    ("node1:-2", "slots must be a positive integer"),
    ("node1:2,node1:2", "appears twice"),
    ("no;de:2", "illegal characters"),
    ("no de:2", "illegal characters"),
    ("-rf:2", "illegal characters"),
    ("node1:2,,node2:1", "empty host entry"),
])
def test_malformed_dash_h_names_the_problem(spec, words):
    with pytest.raises(UsageError, match=words) as info:
        parse_hosts(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, words", [
    ("node1 slots=0", "line 1: slots must be a positive integer"),
    ("node1 slots=two", "line 1: slots must be a positive integer"),
    ("# c\nnode1 slots=1\nnode1 slots=2", "line 3: host 'node1' appears twice"),
    ("node1 slots=1\nno$de slots=1", "line 2: host name 'no$de' has illegal characters"),
    ("node1 cpus=4", "line 1: unexpected 'cpus=4'"),
    ("# only a comment\n\n", "lists no hosts"),
])
def test_malformed_hostfile_names_the_line(text, words):
    with pytest.raises(UsageError, match=words.replace("$", r"\$")):
        parse_hostfile(text, "hosts.txt")


def test_read_hostfile_reports_a_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read hostfile"):
        read_hostfile(str(tmp_path / "nope"))


def test_placement_fills_hosts_slot_by_slot_then_wraps():
    hosts = (Host("a", 2), Host("b", 1))
    assert placement(hosts, 3) == ["a", "a", "b"]
    assert placement(hosts, 5) == ["a", "a", "b", "a", "a"]
    assert format_hosts(hosts) == "a:2,b:1"
