"""Trials per minute with 1 and 2 local worker processes on the same study definition, in one run.

Each configuration gets a fresh study (same corpus, space, target and profile) on a JournalStorage file,
its workers start together (``optimizer worker``, one CPU thread each) and stop at a common deadline; the
budget is far beyond what fits, so only the deadline stops them. Every trial encodes and scores: the
objective's memo of settings already measured is switched off in these workers, so that trials do not get
cheaper as TPE converges and repeats itself. Two rates per run:

* steady: finished trials / (last finish - first start), from the trials' own timestamps in the storage,
  i.e. without interpreter and model start-up;
* wall: finished trials / (deadline - spawn time), start-up included;

and the workers' CPU seconds per finished trial (less the start-up, measured with a worker that joins and
stops at once), which shows what sharing the study costs independently of
other load on the machine.

Configurations alternate (1, 2, 1, 2, ...) over ``--rounds`` and the medians are reported, because timings
on shared machines drift. The output is a markdown section for ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_workers.py [--seconds 120] [--rounds 1] [--images 4] [--profile default]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A worker whose objective measures every trial: the objective's per-process memo of settings it has
# already measured is replaced by one that never remembers, so that the cost of a trial does not fall as
# TPE converges and repeats itself (which would measure the sampler, not the workers).
_WORKER = """
import sys
from optimizer.tuning import objective as objective_module

class _Forgetful(dict):
    def get(self, key, default=None):
        return default
    def __setitem__(self, key, value):
        pass

_init = objective_module.Objective.__init__
def _init_without_memo(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self._memo = _Forgetful()
objective_module.Objective.__init__ = _init_without_memo

import optimizer.cli.worker_cmd
from optimizer.cli import main
sys.exit(main(["worker", *sys.argv[1:]]))
"""

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", REPO.parent / "shared" / "datasets"))


def _run_config(workers: int, images: list[str], args: argparse.Namespace, scratch: Path, tag: str) -> dict[str, float]:
    import optuna
    from optuna.trial import TrialState

    from optimizer.tuning.study import TuneConfig, prepare_study

    storage = f"journal:{scratch / f'{tag}.journal'}"
    space = {"formats": args.formats.split(",")}
    prepare_study(
        images,
        TuneConfig(
            space=space, target=args.target, profile=args.profile, storage=storage, study_name=tag, n_trials=1_000_000
        ),
    )
    env = dict(
        os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OPTIMIZER_STORAGE=storage
    )
    # A worker that joins and stops at once: its CPU time is the start-up cost, taken off the totals below.
    worker = [sys.executable, "-c", _WORKER]
    dry = subprocess.Popen(
        [*worker, "--study", tag, "--threads", "1", "--timeout", "0", "--quiet", "--", *images],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, status, usage = os.wait4(dry.pid, 0)
    dry.returncode = os.waitstatus_to_exitcode(status)
    startup_cpu = usage.ru_utime + usage.ru_stime
    spawned = time.time()
    deadline = spawned + args.seconds
    logs = [scratch / f"{tag}-{i}.log" for i in range(workers)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        *worker,
                        "--study",
                        tag,
                        "--threads",
                        "1",
                        "--seed",
                        str(i),
                        "--deadline",
                        f"{deadline:.3f}",
                        "--quiet",
                        "--",
                        *images,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    cpu = 0.0
    for proc, log in zip(procs, logs):
        _, status, usage = os.wait4(proc.pid, 0)  # the worker's own CPU time, start-up included
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        if proc.returncode != 0:
            raise SystemExit(f"worker failed ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
    from optimizer.tuning.storage import resolve_storage

    study = optuna.load_study(study_name=tag, storage=resolve_storage(storage, tag))
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    first = min(t.datetime_start.timestamp() for t in done)
    last = max(t.datetime_complete.timestamp() for t in done)
    within = [t for t in done if t.datetime_complete.timestamp() <= deadline]
    return {
        "trials": len(done),
        "steady": len(done) / ((last - first) / 60.0),
        "wall": len(within) / ((deadline - spawned) / 60.0),
        "startup": first - spawned,
        "mean_trial_s": statistics.mean(t.duration.total_seconds() for t in done),
        "cpu_per_trial_s": max(0.0, cpu - workers * startup_cpu) / len(done),
        "cores_used": cpu / max(1e-9, time.time() - spawned),
        "load": os.getloadavg()[0],
    }


def _wait_for_quiet(max_load: float, max_wait: float) -> None:
    until = time.monotonic() + max_wait
    while os.getloadavg()[0] >= max_load and time.monotonic() < until:
        time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="run length per configuration")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of 1 and 2 workers")
    parser.add_argument("--images", type=int, default=4, help="Kodak images in the corpus (768x512)")
    parser.add_argument("--formats", default="avif,webp,jpeg")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--target", default="ssimulacra2:80")
    parser.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before each configuration, wait (up to --max-wait s) until the 1-minute load average is below this",
    )
    parser.add_argument("--max-wait", type=float, default=600.0)
    args = parser.parse_args()

    kodak = sorted((DATASETS / "kodak").glob("kodim*.png"))[: args.images]
    if len(kodak) < args.images:
        raise SystemExit(f"need {args.images} Kodak images under {DATASETS / 'kodak'}")
    images = [str(p) for p in kodak]
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        for round_ in range(args.rounds):
            for workers in (1, 2):
                if args.max_load is not None:
                    _wait_for_quiet(args.max_load, args.max_wait)
                r = _run_config(workers, images, args, Path(tmp), f"w{workers}-r{round_}")
                results[workers].append(r)
                print(
                    f"# round {round_}, {workers} worker(s): {r['trials']} trials, steady {r['steady']:.1f}/min, "
                    f"wall {r['wall']:.1f}/min, start-up {r['startup']:.1f} s, mean trial {r['mean_trial_s']:.2f} s, "
                    f"CPU per trial {r['cpu_per_trial_s']:.2f} s, load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                )
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in results.items()}
    speed_steady = med[2]["steady"] / med[1]["steady"]
    speed_wall = med[2]["wall"] / med[1]["wall"]
    rounds = "; ".join(
        f"{a['steady']:.1f} -> {b['steady']:.1f} = {b['steady'] / a['steady']:.2f}x (load {a['load']:.1f} / {b['load']:.1f})"
        for a, b in zip(results[1], results[2])
    )
    cpu_ratio = med[2]["cpu_per_trial_s"] / med[1]["cpu_per_trial_s"] - 1.0
    bound = 2.0 * med[1]["cpu_per_trial_s"] / med[2]["cpu_per_trial_s"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"""## Scale-out: trials per minute with local workers (`benchmarks/bench_workers.py`)

Corpus: {args.images} Kodak images (768x512), formats {args.formats}, profile `{args.profile}`, target
`{args.target}` (p10), constrained mode with pruning, TPE (constant liar); JournalStorage file; each worker
one CPU thread; {args.seconds:.0f} s per configuration, {args.rounds} round(s) alternating 1 and 2 workers
(medians). Machine: {cores} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}.
"Cores the workers got" is their CPU time over the run's wall time; where it stays well under the number of
workers, other processes held the CPU and the trials-per-minute speed-up says more about them than about us.

| workers | finished trials | trials/min (steady) | trials/min (wall, start-up included) | mean trial (s) | CPU s per trial | cores the workers got | load average |
|---:|---:|---:|---:|---:|---:|---:|---:|
| 1 | {med[1]["trials"]:.0f} | {med[1]["steady"]:.1f} | {med[1]["wall"]:.1f} | {med[1]["mean_trial_s"]:.2f} | {med[1]["cpu_per_trial_s"]:.2f} | {med[1]["cores_used"]:.2f} | {med[1]["load"]:.1f} |
| 2 | {med[2]["trials"]:.0f} | {med[2]["steady"]:.1f} | {med[2]["wall"]:.1f} | {med[2]["mean_trial_s"]:.2f} | {med[2]["cpu_per_trial_s"]:.2f} | {med[2]["cores_used"]:.2f} | {med[2]["load"]:.1f} |

Per round (steady trials/min, 1 worker -> 2 workers, load average): {rounds}.

Speed-up with 2 workers: **{speed_steady:.2f}x** steady, {speed_wall:.2f}x wall (target: at least 1.7x on 2 cores).
CPU seconds per trial (the workers' own CPU time less one measured start-up each, over finished trials) change by
{cpu_ratio:+.0%} from 1 to 2 workers: the cost of sharing the study. On an otherwise idle machine the
speed-up is bounded by cores x (CPU per trial with 1 worker / CPU per trial with 2) = {bound:.2f}x.
""")


if __name__ == "__main__":
    main()
