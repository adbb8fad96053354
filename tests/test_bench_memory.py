"""python -m distrain.bench memory: one short run of both programs (figures checked for form
and for what must hold whatever the host: the same model on both sides), and bad flags."""
import json

import pytest

from distrain.bench import memory


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_a_short_run_compares_plain_keras_with_each_rank(capsys):
    code = memory.main(["--model", "mlp", "--steps", "2", "--ranks", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    plain, distributed = result["plain"], result["distrain"]
    assert distributed["ranks"] == 2 and "ranks" not in plain
    # the same model on both sides: mlp on 32x32x3 images, 10 classes
    weights = 32 * 32 * 3 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert plain["gradient_bytes"] == distributed["gradient_bytes"] == 4 * weights
    for run in (plain, distributed):
        assert 0 < run["peak_rss_before_training_mb"] <= run["peak_rss_mb"]
    assert result["added_mb"] == round(distributed["peak_rss_mb"] - plain["peak_rss_mb"], 1)


@pytest.mark.parametrize("flags", [["--ranks", "0"], ["--steps", "0"], ["--role", "other"]])
def test_bad_flags_exit_2(flags):
    with pytest.raises(SystemExit) as raised:
        memory.main(flags)
    assert raised.value.code == 2
