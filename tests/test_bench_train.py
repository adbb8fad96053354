"""python -m distrain.bench train: its figures' form on one rank, and bad flags (exit 2)."""
import json
import subprocess
import sys

import pytest

from conftest import rank_env
from distrain.bench import train


def test_one_rank_prints_its_figures_with_the_passes_in_the_global_batch():
    done = subprocess.run([sys.executable, "-m", "distrain.bench", "train", "--model", "mlp",
                           "--steps", "2", "--warmup", "1", "--batch-size", "8",
                           "--backward-passes", "3", "--json"],
                          capture_output=True, text=True, timeout=180, env=rank_env(1))
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["ranks"], figures["backward_passes"], figures["global_batch"]) == (1, 3, 24)
    assert figures["backend"] == "auto" and figures["steps"] == 2
    assert figures["samples_per_s"] == pytest.approx(24 / (figures["step_ms"] / 1e3), rel=0.01)


@pytest.mark.parametrize("flags", [["--backend", "gloo"], ["--backward-passes", "0"],
                                   ["--steps", "0"]])
def test_bad_flags_exit_2(flags):
    with pytest.raises(SystemExit) as raised:
        train.main(flags)
    assert raised.value.code == 2
