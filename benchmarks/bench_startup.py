"""Start-up cost of ``optimizer evaluate A B`` on one pair, against ``python -c "import torch"``.

Scoring one pair is mostly start-up: the interpreter, torch (every default metric runs on it) and the
package. The baseline is the floor nothing can go under while the metrics need torch: importing torch
alone. Each command runs in a fresh process; the rounds alternate the commands so that machine noise hits
them alike; wall time and peak resident memory (``wait4``'s ``ru_maxrss``) are medians over the rounds,
and the ratios to the baseline are what count. The modules the evaluate process imported are checked
against those the default profile must not need.

Run: ``python benchmarks/bench_startup.py [--rounds 7] [--write]`` (``--write`` appends the table to
``benchmarks/RESULTS.md``).
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
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", ROOT.parent / "shared" / "datasets"))
#: Libraries the default profile on one pair must not import (heavy, and needed only by other features).
NOT_NEEDED = ("torchvision", "lpips", "scipy", "pandas", "matplotlib", "optuna", "skimage", "sklearn", "sqlalchemy")


def _run(argv: list[str], extra_env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {stderr[-500:]}")
    return seconds, usage.ru_maxrss / 1024.0  # Linux reports KiB


def _imported(pair: tuple[Path, Path]) -> list[str]:
    """Top-level modules of NOT_NEEDED that ``optimizer evaluate A B`` imports."""
    code = (
        "import sys\nfrom optimizer.cli import main\n"
        f"main(['evaluate', {str(pair[0])!r}, {str(pair[1])!r}])\n"
        f"print('IMPORTED:' + ','.join(m for m in {NOT_NEEDED!r} if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    marked = [line for line in proc.stdout.splitlines() if line.startswith("IMPORTED:")]
    if proc.returncode != 0 or not marked:
        raise SystemExit(f"the import check failed ({proc.returncode}): {proc.stderr[-500:]}")
    return [m for m in marked[-1].removeprefix("IMPORTED:").split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="append the results to benchmarks/RESULTS.md")
    args = parser.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "a.png"
        distorted = Path(tmp) / "b.jpg"
        source = Image.open(DATASETS / "kodak" / "kodim01.png").convert("RGB")
        source.save(reference)
        source.save(distorted, quality=75)
        evaluate = [sys.executable, "-m", "optimizer", "evaluate", str(reference), str(distorted)]
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], {}),
            'python -c "import torch"': ([sys.executable, "-c", "import torch"], {}),
            "optimizer evaluate A B": (evaluate, {}),
            "OMP_NUM_THREADS=1 optimizer evaluate A B": (evaluate, {"OMP_NUM_THREADS": "1"}),
        }
        _run(*commands['python -c "import torch"'])  # warm the file cache once
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (argv, env) in commands.items():
                samples[name].append(_run(argv, env))
        imported = _imported((reference, distorted))
    base_s = statistics.median(s for s, _ in samples['python -c "import torch"'])
    base_m = statistics.median(m for _, m in samples['python -c "import torch"'])
    lines = [
        "| command | wall (median) | peak RSS (median) | wall / import torch | RSS / import torch |",
        "|---|---|---|---|---|",
    ]
    for name, values in samples.items():
        seconds = statistics.median(s for s, _ in values)
        mib = statistics.median(m for _, m in values)
        lines.append(f"| `{name}` | {seconds:.2f} s | {mib:.0f} MiB | {seconds / base_s:.2f} | {mib / base_m:.2f} |")
    table = "\n".join(lines)
    verdict = "none" if not imported else ", ".join(imported)
    print(table)
    print(f"imported of {', '.join(NOT_NEEDED)}: {verdict}")
    if args.write:
        section = (
            "\n## Start-up: `optimizer evaluate A B` on one pair (`bench_startup.py`)\n\n"
            f"Command: `python benchmarks/bench_startup.py --rounds {args.rounds} --write` ({date.today()}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}). One Kodak pair "
            "(768x512 PNG against JPEG q75), default profile (SSIMULACRA 2, MS-SSIM, SSIM, PSNR); a fresh process "
            f"per run, the commands alternated over {args.rounds} rounds, medians; load average at the end "
            f"{os.getloadavg()[0]:.1f}. The last row runs torch on one thread.\n\n"
            + table
            + f"\n\nModules of {', '.join(NOT_NEEDED)} the evaluate process imported: {verdict}.\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write(section)


if __name__ == "__main__":
    main()
