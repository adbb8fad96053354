"""A rank for distrain-run's tests: no TensorFlow, no MPI calls, just the behaviour asked for.

Options:
    --pid-dir DIR     write DIR/<rank>.pid with this process's pid at start
    --fail-rank R     rank R exits with --code after --delay seconds (-1: none)
    --code C          the failing rank's exit code (default 3); -N: it kills itself with signal N
    --delay S         seconds before the failing rank exits (default 0.3)
    --sleep S         seconds every other rank then sleeps (default 0)
    --bar             rank 0 draws a progress bar with \\r before its last line
    --print-env NAME  print NAME=value for each NAME (repeatable)
    --fail-once FILE  fail (as --fail-rank) only if FILE does not exist; create it first
"""
import argparse
import os
import sys
import time

rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
p = argparse.ArgumentParser()
p.add_argument("--pid-dir")
p.add_argument("--fail-rank", type=int, default=-1)
p.add_argument("--code", type=int, default=3)
p.add_argument("--delay", type=float, default=0.3)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--bar", action="store_true")
p.add_argument("--print-env", action="append", default=[])
p.add_argument("--fail-once")
args = p.parse_args()
if args.pid_dir:
    with open(os.path.join(args.pid_dir, f"{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
print(f"hello from rank {rank}", flush=True)
for name in args.print_env:
    print(f"{name}={os.environ.get(name, '<unset>')}", flush=True)
if args.bar and rank == 0:
    for step in range(1, 4):
        sys.stdout.write(f"\rstep {step}/3")
        sys.stdout.flush()
        time.sleep(0.05)
    sys.stdout.write("\n")
    sys.stdout.flush()
fail = rank == args.fail_rank
if fail and args.fail_once:
    fail = not os.path.exists(args.fail_once)
    if fail:
        open(args.fail_once, "w").close()
if fail:
    time.sleep(args.delay)
    print(f"rank {rank} failing on purpose", file=sys.stderr, flush=True)
    if args.code < 0:
        os.kill(os.getpid(), -args.code)
    sys.exit(args.code)
time.sleep(args.sleep)
