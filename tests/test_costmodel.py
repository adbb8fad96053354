"""The cost model's arithmetic on synthetic numbers, and how models are cut into sub-models."""
import json
import os

import numpy as np
import pytest

from distrain import costmodel
from distrain.costmodel.ring import CommModel, fit_alpha_beta, ring_time


def test_ring_time_is_the_alpha_beta_formula():
    assert ring_time(1000, 1, 1.0, 1.0) == 0.0
    assert ring_time(1000, 4, alpha=2e-6, beta=1e-9) == pytest.approx(6 * 2e-6 + 1.5 * 1e-6)


def test_fit_recovers_alpha_and_beta_exactly():
    alpha, beta, p = 3e-6, 2e-10, 4
    sizes = [256, 4096, 65536, 1 << 20]
    times = [ring_time(n, p, alpha, beta) for n in sizes]
    fitted = fit_alpha_beta(sizes, times, p)
    assert fitted == pytest.approx((alpha, beta), rel=1e-6)
    with pytest.raises(ValueError):
        fit_alpha_beta([1], [1.0], 2)


def test_a_sparse_gradient_is_two_allgathers():
    comm = CommModel(size=2, alpha=1e-6, beta=1e-9, call_overhead=1e-4)
    assert comm.allgather_time(1000) == pytest.approx(1e-4 + 1e-6 + 1000e-9)
    assert comm.allgather_time(1000, size=4) == pytest.approx(1e-4 + 3 * (1e-6 + 1000e-9))
    assert comm.allgather_time(1000, size=1) == 0
    assert comm.sparse_time(10, 32, size=4) == pytest.approx(
        comm.allgather_time(320, 4) + comm.allgather_time(80, 4))


def test_the_chunk_beta_puts_the_line_through_the_chunks_time():
    from distrain.costmodel.calibrate import chunk_beta
    alpha, p = 3e-6, 4
    sizes = [256, 4096, 65536, 1 << 20]
    times = [ring_time(n, p, alpha, 2e-10) for n in sizes]
    times[-1] *= 1.5  # the chunk moves slower than the middle sizes say
    beta = chunk_beta(sizes, times, p, alpha, 2e-10)
    assert ring_time(1 << 20, p, alpha, beta) == pytest.approx(times[-1], rel=1e-12)
    assert beta > 2e-10
    # a chunk no slower than the latency: the fitted beta stays
    assert chunk_beta([256, 1024], [1e-6, 1e-6], 2, 1e-6, 3e-10) == 3e-10


def test_allreduce_time_follows_the_fusion_plan_and_chunks():
    comm = CommModel(size=2, alpha=1e-6, beta=1e-9, gamma=1e-10, call_overhead=1e-4,
                     tensor_overhead=1e-5, chunk_bytes=1 << 20, fusion_threshold=64 << 20)
    # One direct 4 MiB tensor (4 chunks, scaled once) and two small ones in one bucket
    # (packed once; the second starts on a 64-byte boundary: 16 + 6 floats, 88 bytes).
    shapes, dtypes = [(1 << 20,), (10,), (6,)], ["float32"] * 3
    direct = 4 * ring_time(1 << 20, 2, 1e-6, 1e-9) + 1e-10 * (4 << 20)
    bucket = ring_time(88, 2, 1e-6, 1e-9) + 1e-10 * 88
    expected = 1e-4 + 3 * 1e-5 + direct + bucket
    assert comm.allreduce_time(shapes, dtypes) == pytest.approx(expected)
    # More ranks cost more; one rank costs only the host's share.
    assert comm.allreduce_time(shapes, dtypes, size=8) > comm.allreduce_time(shapes, dtypes)
    assert comm.allreduce_time(shapes, dtypes, size=1) == pytest.approx(
        1e-4 + 3e-5 + 1e-10 * ((4 << 20) + 88))


def test_allreduce_time_with_a_timed_host_share_adds_only_the_messages():
    comm = CommModel(size=2, alpha=1e-6, beta=1e-9, gamma=1e-10, call_overhead=1e-4,
                     tensor_overhead=1e-5, chunk_bytes=1 << 20, fusion_threshold=64 << 20)
    shapes, dtypes = [(1 << 20,), (10,), (6,)], ["float32"] * 3
    messages = 4 * ring_time(1 << 20, 2, 1e-6, 1e-9) + ring_time(88, 2, 1e-6, 1e-9)
    assert comm.allreduce_time(shapes, dtypes, host=2e-3) == pytest.approx(
        1e-4 + 2e-3 + messages)
    assert comm.allreduce_time(shapes, dtypes, size=1, host=2e-3) == pytest.approx(2e-3)


def test_messages_follow_the_calibration_sweep_at_its_world_size():
    curve = ((256, 2e-5), (1 << 19, 1e-3), (1 << 20, 1.5e-3))
    comm = CommModel(size=2, alpha=1e-6, beta=1e-9, chunk_bytes=1 << 20, curve=curve)
    shapes, dtypes = [((1 << 18) + (1 << 17),)], ["float32"]  # 1.5 MiB: a chunk and a half
    assert comm.allreduce_time(shapes, dtypes, host=0.0) == pytest.approx(2.5e-3)
    assert comm.message_time(3 << 18) == pytest.approx(1.25e-3)   # between two sizes
    assert comm.message_time(100) == pytest.approx(2e-5)          # below the smallest
    # other world sizes, and messages beyond the sweep, take the ring line
    at_four = ring_time(1 << 20, 4, 1e-6, 1e-9) + ring_time(1 << 19, 4, 1e-6, 1e-9)
    assert comm.allreduce_time(shapes, dtypes, size=4, host=0.0) == pytest.approx(at_four)
    assert comm.message_time(1 << 21) == pytest.approx(ring_time(1 << 21, 2, 1e-6, 1e-9))


def test_expected_wait_is_the_mean_of_the_slowest_less_the_median():
    rounds = [1.0, 2.0, 3.0, 4.0]
    assert costmodel.expected_wait(rounds, 1) == 0.0
    # The max of two draws from {1, 2, 3, 4}: P(max = i) = (i^2 - (i-1)^2) / 16.
    mean_max = (1 * 1 + 2 * 3 + 3 * 5 + 4 * 7) / 16
    assert costmodel.expected_wait(rounds, 2) == pytest.approx(mean_max - 2.5)
    assert costmodel.expected_wait(rounds, 1000) == pytest.approx(4.0 - 2.5, rel=1e-6)
    assert costmodel.expected_wait([5.0] * 8, 64) == pytest.approx(0.0)
    assert costmodel.expected_wait([], 4) == 0.0


def test_combine_takes_the_median_wait_and_whatif_extrapolates_it():
    preds = []
    for wait, rounds in ((0.5, [1.0, 2.0]), (2.0, [3.0, 4.0]), (1.0, [5.0, 6.0])):
        p = _prediction({"data": 1, "compute": 2, "allreduce": 3 + wait, "apply": 4})
        p.wait, p.rounds = wait, rounds
        preds.append(p)
    merged = costmodel.combine(preds)
    assert merged.wait == 1.0 and merged.phases["allreduce"] == 4.0
    assert sorted(merged.rounds) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    fixed = 1 + 2 + 4
    rows = {r["ranks"]: r["step_s"] for r in merged.whatif}
    message = merged.comm.allreduce_time([(1000,)], ["float32"], size=2, host=0.0)
    assert rows[1] == pytest.approx(fixed)  # one rank: no wait, no messages
    assert rows[2] == pytest.approx(fixed + 1.0 + message)  # the measured size: the measured wait
    rounds = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    grown = costmodel.expected_wait(rounds, 4) / costmodel.expected_wait(rounds, 2)
    assert grown > 1
    assert rows[4] == pytest.approx(
        fixed + 1.0 * grown
        + merged.comm.allreduce_time([(1000,)], ["float32"], size=4, host=0.0))
    steps = [rows[p] for p in sorted(rows)]
    assert steps == sorted(steps)  # more ranks never predict a faster step here


def test_recommended_threshold_balances_latency_and_bandwidth():
    comm = CommModel(size=4, alpha=5e-6, beta=1e-10)
    # n >= 20 p alpha / beta = 4e6 bytes -> next power of two.
    assert comm.recommended_fusion_threshold() == 1 << 22
    assert CommModel(size=1, alpha=0, beta=0, fusion_threshold=123).\
        recommended_fusion_threshold() == 123


def _prediction(phases, shapes=((1000,),)):
    comm = CommModel(size=2, alpha=1e-5, beta=1e-9)
    return costmodel.Prediction(dict(phases), [("a", 1.0)], 0.0, comm, 32, list(shapes),
                                ["float32"] * len(shapes))


def test_whatif_scales_only_the_allreduce():
    p = _prediction({"data": 0.001, "compute": 0.010, "allreduce": 0.0, "apply": 0.001})
    rows = costmodel.whatif(p, sizes=(1, 2, 4))
    fixed = 0.012
    assert rows[0] == {"ranks": 1, "step_s": fixed, "samples_per_s": 32 / fixed,
                       "efficiency": 1.0}
    step4 = fixed + ring_time(4000, 4, 1e-5, 1e-9)
    assert rows[2]["step_s"] == pytest.approx(step4)
    assert rows[2]["samples_per_s"] == pytest.approx(128 / step4)
    assert rows[2]["efficiency"] == pytest.approx(fixed / step4)


def test_total_and_combine_take_medians():
    a = _prediction({"data": 1, "compute": 2, "allreduce": 3, "apply": 4})
    b = _prediction({"data": 3, "compute": 2, "allreduce": 1, "apply": 0})
    c = _prediction({"data": 2, "compute": 5, "allreduce": 2, "apply": 2})
    assert a.total == 10
    merged = costmodel.combine([a, b, c])
    assert merged.phases == {"data": 2, "compute": 2, "allreduce": 2, "apply": 2}
    assert merged.total == 8
    assert [r["ranks"] for r in merged.whatif] == list(costmodel.WHATIF_SIZES)


def test_time_in_turn_alternates_dicts_round_by_round():
    from distrain.costmodel.compute import time_in_turn
    calls = []
    step = {"data": lambda: calls.append("data"), "layer:a": lambda: calls.append("a")}
    paired = {"twin:data": lambda: calls.append("data"), "pair:a": lambda: calls.append("a+")}
    times = time_in_turn([step, paired], rounds=3, warmup=1)
    assert calls == ["data", "a", "data", "a+"] * 4
    assert {name: len(values) for name, values in times.items()} == {
        "data": 3, "layer:a": 3, "twin:data": 3, "pair:a": 3}
    assert all(t >= 0 for values in times.values() for t in values)


def test_pair_rounds_merge_adjacent_sub_models_in_their_places():
    from distrain.costmodel.compute import pair_rounds
    functions = {name: name for name in (
        "data", "layer:a", "layer:b", "layer:c", "pair:a", "whole", "wait", "apply")}
    step, paired = pair_rounds(functions)
    assert list(step) == ["data", "layer:a", "layer:b", "layer:c", "whole", "wait", "apply"]
    assert list(paired) == ["twin:data", "pair:a", "twin:layer:c", "twin:wait", "twin:apply"]
    assert paired["pair:a"] == "pair:a" and paired["twin:layer:c"] == "layer:c"


def test_call_cost_is_the_median_saving_of_a_merged_pair():
    times = {"layer:a": 3.0, "layer:b": 5.0, "pair:a": 7.5,      # saves 0.5
             "layer:c": 2.0, "layer:d": 2.0, "pair:c": 3.0,      # saves 1.0
             "layer:e": 1.0, "layer:f": 1.0, "pair:e": 1.75,     # saves 0.25
             "layer:g": 9.0}
    assert costmodel.call_cost(times, list("abcdefg")) == 0.5
    assert costmodel.call_cost({"layer:a": 1.0, "layer:b": 1.0, "pair:a": 2.5}, ["a", "b"]) == 0
    assert costmodel.call_cost({"layer:a": 1.0}, ["a"]) == 0


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def test_chains_are_cut_after_every_layer_and_residual_blocks_stay_whole(keras):
    from distrain.costmodel.model_cuts import submodels
    from distrain.train.models import build_model
    mlp = build_model("mlp", (4, 4, 1), 3)
    names = [n for n, _ in submodels(mlp)]
    assert len(names) == 4 and names[0].startswith("flatten")  # Keras may number it
    assert names[1:] == ["dense_1", "dense_2", "logits"]
    resnet = build_model("resnet", (8, 8, 1), 3)
    names = [n for n, _ in submodels(resnet)]
    assert names == ["stem_conv..stem_relu"] + [f"stage{s}_block{b}" for s in (1, 2, 3)
                                                for b in (1, 2)] + ["pool..logits"]
    # Every trainable weight is in exactly one sub-model.
    counted = sum(len(m.trainable_weights) for _, m in submodels(resnet))
    assert counted == len(resnet.trainable_weights)


def test_a_pair_computes_exactly_what_its_two_sub_models_compute(keras):
    from distrain.costmodel.compute import step_functions
    from distrain.costmodel.model_cuts import submodels
    from distrain.train.models import build_model
    model = build_model("cnn", (8, 8, 1), 4)
    functions = step_functions(model, batch_size=8, num_classes=4)
    names = [n for n, _ in submodels(model)] + ["loss"]
    assert [k for k in functions if k.startswith("layer:")] == [f"layer:{n}" for n in names]
    assert [k for k in functions if k.startswith("pair:")] == [f"pair:{n}" for n in names[::2]
                                                               if n != names[-1]]
    for first, second in zip(names[::2], names[1::2]):
        merged = functions[f"pair:{first}"]()
        assert len(merged) == 2
        for alone, together in zip((functions[f"layer:{first}"](),
                                    functions[f"layer:{second}"]()), merged):
            assert len(alone[0]) == len(together) > 0
            for a, b in zip(alone[0], together):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)


def test_predict_runs_without_training_or_mpi(keras):
    from distrain.train.models import build_model
    model = build_model("cnn", (8, 8, 1), 4)
    before = [np.asarray(v).copy() for v in model.weights]
    prediction = costmodel.predict(model, batch_size=8, num_classes=4,
                                   optimizer=keras.optimizers.SGD(0.1), repeats=3)
    assert prediction.phases["compute"] > 0 and prediction.phases["apply"] > 0
    # One rank, no communication model: the allreduce is the host's share alone.
    assert prediction.host > 0 and prediction.phases["allreduce"] == prediction.host
    assert prediction.wait == 0
    assert [n for n, _ in prediction.submodels][-1] == "loss"
    assert prediction.call_overhead > 0
    assert prediction.phases["compute"] == pytest.approx(
        prediction.call_overhead + sum(s for _, s in prediction.submodels)
        + prediction.interaction)
    # The whole model was timed: the interaction is its time less the rest, not its default
    # (signed: the whole model may be faster than its parts' sum).
    assert prediction.interaction != 0
    for old, new in zip(before, model.weights):  # timing left the model as it was
        np.testing.assert_array_equal(old, np.asarray(new))
    # Rounds: at least `repeats`, more to fill `min_seconds`, as many as `agree` says.
    assert len(prediction.rounds) > 3  # 0.5 s of rounds of a tiny model
    quick = costmodel.predict(model, batch_size=8, num_classes=4, repeats=3, min_seconds=0)
    assert len(quick.rounds) == 3
    asked = []
    agreed = costmodel.predict(model, batch_size=8, num_classes=4, repeats=3, min_seconds=0,
                               agree=lambda n: asked.append(n) or 7)
    assert asked == [3] and len(agreed.rounds) == 7
    # With overlap, the allreduce is what the bucket schedule leaves past backward; every
    # gradient belongs to a sub-model that has variables, in forward order.
    comm = costmodel.CommModel(size=2, alpha=1e-5, beta=1e-9)
    overlapped = costmodel.predict(model, batch_size=8, num_classes=4, repeats=3,
                                   min_seconds=0, comm=comm, buckets=(64, 256))
    names = [n for n, _ in overlapped.submodels]
    assert len(overlapped.owners) == len(model.trainable_variables)
    assert overlapped.owners == sorted(overlapped.owners) and names[-1] == "loss"
    assert all(overlapped.owners[i] < len(names) - 1 for i in range(len(overlapped.owners)))
    from distrain.costmodel.exposed_allreduce import exposed_allreduce
    assert overlapped.phases["allreduce"] == pytest.approx(overlapped.wait + exposed_allreduce(
        [t for _, t in overlapped.submodels], overlapped.owners, overlapped.gradient_shapes,
        overlapped.gradient_dtypes, comm, 64, 256))
    assert overlapped.recommended_bucket_bytes() >= 1 << 16


def test_an_embeddings_gradient_is_predicted_as_gathered_rows(keras):
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(500, 8)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    comm = costmodel.CommModel(size=2, alpha=1e-5, beta=1e-9, call_overhead=1e-4)
    prediction = costmodel.predict(model, batch_size=4, num_classes=3, repeats=3,
                                   min_seconds=0, comm=comm,
                                   optimizer=keras.optimizers.Adam(0.01))
    assert prediction.sparse == {0: 24}  # 4 samples x 6 tokens
    dense = prediction.gradient_shapes[1:]
    assert prediction.allreduce_at(4) == pytest.approx(
        comm.sparse_time(24, 8 * 4, 4)
        + comm.allreduce_time(dense, prediction.gradient_dtypes[1:], size=4,
                              host=prediction.host))
    assert prediction.phases["apply"] > 0


@pytest.mark.timeout(240)
def test_bench_costmodel_predicts_every_phase_under_mpirun_with_2_ranks(tmp_path):
    import json
    from conftest import run_mpi
    result = run_mpi(2, ["-m", "distrain.bench", "costmodel", "--models", "mlp,cnn",
                         "--steps", "3", "--warmup", "1", "--repeats", "2", "--json"],
                     timeout=220, DISTRAIN_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["repeats"] == 2 and [r["model"] for r in report["rows"]] == ["mlp", "cnn"]
    for row in report["rows"]:
        assert row["ranks"] == 2 and len(row["run_errors_pct"]) == 2
        for run, error in zip(row["runs_ms"], row["run_errors_pct"]):  # each run's own
            assert error == pytest.approx(100 * (run["predicted"]["total"] - run["measured"][
                "total"]) / run["measured"]["total"], abs=0.2)
        for table in (row["predicted_ms"], row["measured_ms"]):
            assert set(table) == {"data", "compute", "allreduce", "apply", "total"}
            assert table["total"] > 0 and table["compute"] > 0
        predicted = row["predicted_ms"]
        assert predicted["total"] == pytest.approx(
            sum(predicted[k] for k in ("data", "compute", "allreduce", "apply")), abs=0.01)
        assert row["error_of_medians_pct"] == pytest.approx(
            100 * (predicted["total"] - row["measured_ms"]["total"])
            / row["measured_ms"]["total"], abs=0.2)
        assert row["median_run_error_pct"] == pytest.approx(
            sorted(row["run_errors_pct"])[0] / 2 + sorted(row["run_errors_pct"])[1] / 2,
            abs=0.11)
        assert all(why for why in row["disturbed_runs"].values())
    # measured by the first run, and again by a run after one whose 3 steps' allreduce
    # was > 50 % off the prediction (it marks the cache stale)
    assert report["calibration"]["source"] in ("cache", "measured")
    assert report["calibration"]["beta_ns_per_byte"] > 0
    # The calibration was measured for this world (2 ranks on one host) and cached.
    assert any(name.endswith("-p2-l2-mpi.json") for name in os.listdir(tmp_path))


def test_overlapped_buckets_leave_exposed_only_what_runs_past_backward():
    from distrain.costmodel.exposed_allreduce import (bucket_schedule, exposed_allreduce,
                                            recommended_bucket_bytes)
    comm = CommModel(size=2, alpha=0.0, beta=1e-9)   # 1 MB of float32 takes 1 ms at 2 ranks
    shapes, dtypes = [(250_000,)] * 3, ["float32"] * 3
    # Three sub-models of 3 ms (2 ms of backward each), one gradient each: backward makes
    # gradient 2 at 2 ms, 1 at 4 ms, 0 at 6 ms; each bucket runs 1 ms after its gradient.
    total, runs = bucket_schedule([0.003] * 3, [0, 1, 2], shapes, dtypes, comm, 1, 1)
    assert total == pytest.approx(0.006)
    assert runs == [pytest.approx((0.002, 0.003)), pytest.approx((0.004, 0.005)),
                    pytest.approx((0.006, 0.007))]
    assert exposed_allreduce([0.003] * 3, [0, 1, 2], shapes, dtypes, comm, 1, 1) == \
        pytest.approx(0.001)
    # A slow link: each bucket takes 5 ms, so they queue and 11 ms run past backward.
    slow = CommModel(size=2, alpha=0.0, beta=5e-9)
    assert exposed_allreduce([0.003] * 3, [0, 1, 2], shapes, dtypes, slow, 1, 1) == \
        pytest.approx(0.013 - 0.002)
    # One bucket holds everything: it starts when backward ends, as without overlap.
    assert exposed_allreduce([0.003] * 3, [0, 1, 2], shapes, dtypes, comm, 1 << 30,
                             1 << 30) == pytest.approx(comm.allreduce_time(shapes, dtypes))
    # The smallest bucket limit that lets every gradient go on its own is recommended.
    assert recommended_bucket_bytes([0.003] * 3, [0, 1, 2], shapes, dtypes, comm, 1) == \
        1 << 16


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_a_cached_calibration_the_run_disagrees_with_is_reported_and_marked_stale(tmp_path):
    import json
    import socket
    from conftest import run_mpi
    from distrain.costmodel.calibrate import VERSION
    from distrain.engine.fusion import ONE_HOST_CHUNK_BYTES
    # A cache claiming a 1 MB/s link: the run's allreduce is far faster than it predicts.
    path = tmp_path / f"calibration-{socket.gethostname()}-p2-l2-mpi.json"
    path.write_text(json.dumps({"version": VERSION, "size": 2, "alpha": 1e-5, "beta": 1e-6,
                                "gamma": 1e-10, "call_overhead": 1e-4, "tensor_overhead": 0,
                                "chunk_bytes": ONE_HOST_CHUNK_BYTES, "measured_at": 0,
                                "load": 0.5}))
    args = ["-m", "distrain.train", "--model", "mlp", "--epochs", "1", "--steps-per-epoch",
            "20", "--report", str(tmp_path / "report.json")]
    result = run_mpi(2, args, timeout=200, DISTRAIN_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "calibration: cached, measured at an unknown time, load 0.50 per core" in \
        result.stdout
    assert "off the measured one (margin 50%): the calibration is measured again next " \
           "run" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["calibration_disagreement"] > 0.5
    assert json.loads(path.read_text())["stale"].startswith("a run's allreduce was predicted")
    again = run_mpi(2, args, timeout=200, DISTRAIN_CACHE_DIR=str(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "calibration: measured for this run" in again.stdout
    # the stale cache was replaced by the new measurement (which this noisy run may in
    # turn have found stale: not asserted), unless that was implausible and not cached
    assert json.loads(path.read_text())["measured_at"] > 0 or \
        "implausible fit, measured twice" in again.stdout


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_bench_costmodel_over_namespace_hosts_measures_the_links_calibration(
        tmp_path, capsys, monkeypatch):
    from distrain.bench import costmodel as bench
    from distrain.bench.netns import requirements_problem
    with pytest.raises(SystemExit) as raised:
        bench.main(["--hosts", "1"])
    assert raised.value.code == 2
    assert bench._without(["--hosts", "2", "--rate=1gbit", "--models", "mlp"],
                          ("--hosts", "--rate")) == ["--models", "mlp"]
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)
    monkeypatch.setenv("DISTRAIN_CACHE_DIR", str(tmp_path))  # the host's cache stays untouched
    code = bench.main(["--hosts", "2", "--rate", "200mbit", "--models", "mlp", "--steps", "3",
                       "--warmup", "1", "--repeats", "1", "--json", "--timeout", "200"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out.strip().split("\n")[-1])
    assert [r["model"] for r in report["rows"]] == ["mlp"] and report["rows"][0]["ranks"] == 2
    # the link's own calibration: measured in this run, kept in a directory of its own
    assert report["calibration"]["source"] == "measured"
    assert report["calibration"]["beta_ns_per_byte"] > 0
    assert os.listdir(tmp_path) == []
    # what TCP streams carried over the link, one way and both ways, held to its 200 Mbit/s
    link = report["link"]
    assert link["rate"] == "200mbit" and len(link["both_ways"]) == 2
    assert all(0 < gbit <= 0.3 for gbit in [link["one_way"], *link["both_ways"]]), link


def test_compression_sends_the_wire_dtypes_bytes_and_is_never_cached():
    import dataclasses
    from distrain.costmodel import calibrate
    plain = CommModel(size=2, alpha=0.0, beta=1e-9, chunk_bytes=1 << 20)
    narrow = dataclasses.replace(plain, wire_dtype="float16")
    shapes, dtypes = [(1000,), (24,)], ["float32", "int32"]
    # one float16 bucket of 1000 elements and the int32 tensor in its own
    assert narrow.allreduce_time(shapes, dtypes, host=0.0) == pytest.approx(
        ring_time(2000, 2, 0.0, 1e-9) + ring_time(96, 2, 0.0, 1e-9))
    assert plain.allreduce_time(shapes, dtypes, host=0.0) == pytest.approx(
        ring_time(4000, 2, 0.0, 1e-9) + ring_time(96, 2, 0.0, 1e-9))
    assert "wire_dtype" not in calibrate._constants(narrow)
