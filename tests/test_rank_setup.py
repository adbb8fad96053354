"""A rank's thread count: --threads, else what the launcher exported, else a fair share."""
import pytest

from distrain import environment as env
from distrain.errors import UsageError
from distrain.train.rank_setup import fair_threads, rank_threads


def test_the_flag_wins_over_the_environment():
    assert rank_threads(3, 1, {env.TF_NUM_INTRAOP_THREADS: "1"}) == 3


def test_an_exported_thread_count_is_taken_as_it_is():
    # a compose run exports 1: its containers share one machine's cores, each sees them all
    assert rank_threads(None, 1, {env.TF_NUM_INTRAOP_THREADS: "1"}) == 1


def test_without_either_each_rank_gets_its_share_of_the_host():
    assert rank_threads(None, 2, {}) == fair_threads(2)


@pytest.mark.parametrize("value", ["abc", "0"])
def test_a_bad_exported_count_is_one_usage_error(value):
    with pytest.raises(UsageError, match=f"TF_NUM_INTRAOP_THREADS='{value}'"):
        rank_threads(None, 1, {env.TF_NUM_INTRAOP_THREADS: value})
