"""``run(config)``: the training program from rank setup to the final report."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from distrain import collectives, ops
from distrain import environment as env
from distrain.errors import UsageError
from distrain.keras_compat import optimizer_variables
from distrain.timing.timer import StepTimer
from distrain.train import checkpoint, data as datasets, resume as resuming
from distrain.train.config import TrainConfig
from distrain.train.lr_schedule import Schedule
from distrain.train.models import build_model
from distrain.train.position import Position, position_of, rank_batch
from distrain.train.progress import Printer
from distrain.overlap import bucket_sizes, overlap_enabled
from distrain.train.rank_setup import configure_tensorflow, quiet_tensorflow, rank_threads
from distrain.train.step import TrainStep

__all__ = ["run", "TrainResult", "DivergenceError"]


class DivergenceError(RuntimeError):
    """Ranks hold different weights where data-parallel training keeps them identical."""


@dataclasses.dataclass
class TrainResult:
    """What a run did, on this rank."""

    steps: int
    loss: float
    accuracy: float
    test_accuracy: float | None
    weights_digest: str
    timer: StepTimer
    resumed_from: int | None = None
    prediction: object = None  # a distrain.costmodel.Prediction when the cost model ran
    gradient_bytes: int = 0    # the bytes of one rank's gradients, as allreduced (no wire cast)
    gradient_specs: tuple = ()  # (shape, dtype name) of each gradient, in the variables' order


def _agree(action):
    """Runs ``action`` on every rank; if any rank raises UsageError, every rank raises it.

    Problems that only some ranks see (rank 0's checkpoint directory) then end every rank
    the same way, instead of leaving the others waiting in the next collective.
    """
    try:
        value, problem = action(), None
    except UsageError as exc:
        value, problem = None, str(exc)
    if collectives.size() > 1:
        problems = collectives.allgather_object(problem)
        problem = next((p for p in problems if p), None)
    if problem:
        raise UsageError(problem)
    return value


def _build(config: TrainConfig, data):
    import keras
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(config.model, data.input_shape, data.num_classes)
    opt_class = keras.optimizers.SGD if config.optimizer == "sgd" else keras.optimizers.Adam
    kwargs = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
    optimizer = opt_class(learning_rate=config.learning_rate, **kwargs)
    optimizer.build(model.trainable_variables)
    return model, optimizer




def _save(config, model, optimizer, position, schedule, size, printer):
    path = checkpoint.save(config.checkpoint_dir, position.step, position.epoch,
                           [np.asarray(v) for v in model.weights],
                           [np.asarray(v) for v in optimizer_variables(optimizer)],
                           resuming.header(config, position, size, schedule),
                           keep=config.keep_checkpoints)
    printer.line(f"checkpoint saved at step {position.step}: {path}")


def _check_consistency(model, step: int) -> None:
    digest = checkpoint.weights_digest(np.asarray(v) for v in model.trainable_variables)
    digests = collectives.allgather_object(digest)
    diverged = [r for r, d in enumerate(digests) if d != digests[0]]
    if diverged:
        raise DivergenceError(
            f"weights diverged at step {step}: rank{'s' if len(diverged) > 1 else ''} "
            f"{', '.join(map(str, diverged))} differ{'' if len(diverged) > 1 else 's'} from "
            f"rank 0; look for rank-dependent updates to trainable variables")


def run(config: TrainConfig) -> TrainResult:
    """Trains ``config.model`` on ``config.dataset`` on every rank of the job.

    Args:
        config: the run's configuration.

    Returns:
        This rank's :class:`TrainResult`.

    Raises:
        UsageError: bad input, raised on every rank alike.
        DivergenceError: ``--check-consistency`` found ranks with different weights.
    """
    world = env.detect_world()
    quiet_tensorflow()
    threads = rank_threads(config.threads, world.local_size)
    overlap = (overlap_enabled() if config.overlap is None else config.overlap) and \
        world.size > 1
    device = configure_tensorflow(threads, world.local_rank, config.seed + world.rank)
    collectives.init(None if config.backend == "auto" else config.backend)
    rank, size = collectives.rank(), collectives.size()
    printer = Printer(rank, config.verbose, config.quiet)
    config = _agree(lambda: dataclasses.replace(
        config, batch_size=rank_batch(config.batch_size, config.global_batch, size)))
    elastic = _take_resize_requests(config, printer)
    data = _agree(lambda: datasets.open_source(config.dataset, config.seed, config.batch_size,
                                               rank, size, config.image_size,
                                               config.synthetic_samples))
    summary = _agree(data.summary)  # this rank's shard, read once
    summaries = collectives.allgather_object(summary) if size > 1 else [summary]
    steps = _agree(lambda: data.settle(summaries, config.batch_size, size,
                                       config.steps_per_epoch))
    model, optimizer = _agree(lambda: _build(config, data))
    if config.checkpoint_dir:
        _agree(lambda: checkpoint.check_writable(config.checkpoint_dir) if rank == 0 else None)
    per_step = config.global_batch_size(size)
    schedule = Schedule(config.learning_rate, size, config.scale_lr and not config.global_batch,
                        int(config.warmup_epochs * steps))
    fresh = steps * per_step           # the samples of an epoch begun at this size
    position = Position(0, 0, 0, fresh)
    resume = resuming.should_resume(config, rank)
    if resume:
        meta = _agree(lambda: resuming.restore(config, model, optimizer, size)
                      if rank == 0 else None)
        meta = collectives.allgather_object(meta)[0] if size > 1 else meta
        position = position_of(meta, steps, per_step).normalised(per_step, fresh)
        changed = schedule.resume(meta, position.step, int(meta.get("size", size)),
                                  config.resize_warmup_steps)
    collectives.broadcast_variables(list(model.weights) + optimizer_variables(optimizer),
                                    root_rank=0)
    digest = checkpoint.weights_digest(np.asarray(v) for v in model.weights)
    printer.line(f"distrain: {size} rank(s), backend {collectives.backend_name()}, "
                 f"{device}; model {config.model} ({model.count_params():,} parameters), "
                 f"dataset {data.name}, global batch {per_step}, {steps} steps/epoch")
    if resume:
        printer.line(resuming.resumed_line(meta, position, size, per_step, changed, digest))

    prediction = _predict(config, model, optimizer, data, overlap) if config.cost_model \
        else None
    timer = StepTimer()
    train_step = TrainStep(model, optimizer, ops.Compression.by_name(config.compression),
                           timer, overlap)
    start_step, step, epoch = position.step, position.step, position.epoch
    loss = accuracy = float("nan")
    current_lr = saved = None
    while epoch < config.epochs:
        offset, budget = position.epoch_samples, position.epoch_budget
        first, remaining = -(-offset // per_step), position.steps_left(per_step)
        printer.start_epoch(epoch, config.epochs, first + remaining)
        sums = np.zeros(3)  # loss x samples, correct, samples
        began = time.perf_counter()
        batches = data.batches(epoch, config.seed, config.batch_size, rank, size, remaining,
                               offset=offset)
        for index in range(remaining):
            lr = schedule.at(step)
            if lr != current_lr:
                optimizer.learning_rate.assign(lr)
                current_lr = lr
            with timer.step(step):
                step_loss, correct, samples = train_step(step, batches)
            step_loss, correct = float(step_loss), float(correct)
            step += 1
            offset += per_step
            sums += (step_loss * samples, correct, samples)
            printer.update(first + index + 1, step_loss, correct / samples, lr)
            if config.check_consistency and step % config.check_consistency == 0:
                _check_consistency(model, step)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                here = Position(step, epoch, offset, budget).normalised(per_step, fresh)
                _boundary(config, model, optimizer, here, schedule, size, printer, elastic)
                saved = step
            last = epoch + 1 == config.epochs and index + 1 == remaining
            if config.report_every and step % config.report_every == 0 and not last:
                _report(config, timer, prediction, size, printer, final=False)
        totals = collectives.allreduce(sums, op=ops.Sum, name="epoch metrics")
        if totals[2]:
            loss, accuracy = totals[0] / totals[2], totals[1] / totals[2]
        printer.end_epoch(epoch, loss, accuracy, time.perf_counter() - began,
                          int(totals[2]), size)
        epoch += 1
        position = Position(step, epoch, 0, fresh)
        if elastic and not config.checkpoint_every and epoch < config.epochs:
            _boundary(config, model, optimizer, position, schedule, size, printer, elastic)
            saved = step
    if rank == 0 and config.checkpoint_dir and step > start_step and saved != step:
        _save(config, model, optimizer, position, schedule, size, printer)
    test_accuracy = _evaluate(model, data, rank, size, config.batch_size)
    if test_accuracy is not None:
        printer.line(f"test accuracy {test_accuracy:.4f}")
    if timer.steps or size > 1:
        _report(config, timer, prediction, size, printer, final=True)
    return TrainResult(step, loss, accuracy, test_accuracy,
                       checkpoint.weights_digest(np.asarray(v) for v in model.weights), timer,
                       start_step if resume else None, prediction,
                       sum(np.asarray(v).nbytes for v in model.trainable_variables),
                       tuple((tuple(v.shape), np.asarray(v).dtype.name)
                             for v in model.trainable_variables))


def _take_resize_requests(config, printer) -> bool:
    """In an elastic job with checkpoints, listen for distrain-run's resize requests; without
    checkpoints say what a relaunch would cost."""
    from distrain.elastic import requests
    if not requests.elastic_job():
        return False
    if not config.checkpoint_dir:
        printer.line("distrain.train: warning: an elastic job without --checkpoint-dir starts "
                     "again from step 0 after every failure, and cannot grow")
        return False
    return requests.listen()


def _boundary(config, model, optimizer, position, schedule, size, printer, elastic) -> None:
    """A checkpoint boundary: rank 0 saves; in an elastic job every rank then learns whether
    distrain-run asked for a resize, and if so the run stops here (the checkpoint is on disk
    before any rank leaves)."""
    if collectives.rank() == 0:
        _save(config, model, optimizer, position, schedule, size, printer)
    if elastic:
        from distrain.elastic import HostsUpdatedInterrupt, requests
        if requests.agreed():
            collectives.barrier()
            raise HostsUpdatedInterrupt(f"stopping at step {position.step} for a resize; "
                                        f"the checkpoint is saved")




def _report(config, timer, prediction, size, printer, final: bool) -> None:
    """Gathers every rank's timing on rank 0, prints it, and writes the files asked for;
    a final report whose allreduce disagrees with the calibration marks the cache stale."""
    import socket
    from distrain.timing.report import format_report, gather_report, write_json
    from distrain.timing.trust import calibration_disagreement
    trace = final and config.timeline is not None
    report = gather_report(timer, collectives.rank(), socket.gethostname(), config.timing_warmup,
                           config.global_batch_size(size), prediction,
                           trace_steps=None if trace else 0)
    if report is None:
        return
    printer.line(format_report(report))
    if not final:
        return
    error = calibration_disagreement(report)
    if error is not None and report.prediction.calibration.get("path"):
        from distrain.costmodel.calibrate import mark_stale
        mark_stale(report.prediction.calibration["path"],
                   f"a run's allreduce was predicted {error:+.0%} off")
    if config.report:
        write_json(report, config.report)
        printer.line(f"timing report written to {config.report}")
    if config.timeline:
        from distrain.timing.trace import write_trace
        write_trace(report, config.timeline)
        printer.line(f"timeline written to {config.timeline} (open in ui.perfetto.dev)")
    if config.plot:
        from distrain.timing.plot import plot
        plot(report, config.plot)
        printer.line(f"plot written to {config.plot}")


def _predict(config, model, optimizer, data, overlap: bool):
    """Every rank times the cost model's terms; the median across ranks is the prediction
    (with overlap, of the step that reduces buckets during backward)."""
    from distrain import costmodel
    from distrain.costmodel.calibrate import load_or_calibrate
    wire_dtype = ops.Compression.by_name(config.compression).wire_dtype
    comm = dataclasses.replace(load_or_calibrate(config.calibrate), wire_dtype=wire_dtype)
    mine = costmodel.predict(
        model, config.batch_size, data.num_classes, optimizer, data.sample(config.batch_size),
        comm, sync=collectives.barrier,
        agree=lambda rounds: collectives.allreduce(np.int64(rounds), op=ops.Max,
                                                   name="cost model rounds"),
        buckets=bucket_sizes() if overlap else None)
    return costmodel.combine(collectives.allgather_object(mine))


def _evaluate(model, data, rank: int, size: int, batch_size: int) -> float | None:
    shard = data.eval_shard(rank, size)
    if shard is None:
        return None
    x, y = shard
    correct = 0
    if len(x):
        logits = model.predict(x, batch_size=max(batch_size, 256), verbose=0)
        correct = int(np.sum(np.argmax(logits, axis=-1) == y))
    totals = collectives.allreduce(np.array([correct, len(x)], np.int64), op=ops.Sum,
                                   name="test accuracy")
    return float(totals[0] / totals[1]) if totals[1] else None
