"""Hostile inputs through every command: how many runs, which exit codes, how many exit 5 or tracebacks.

    python benchmarks/bench_hostile.py [--write]

Builds the hostile-file corpus (``tests/hostile_corpus.py``: truncated, corrupt, huge, odd-mode and special
files) and the broken-study corpus (``tests/study_corpus.py``: damaged SQLite files, bad stored data, bad
URLs), then runs each entry through every command that reads such a thing, in process through
``optimizer.cli.main`` under a 2 GiB memory budget:

* image files: ``evaluate X X``, ``encode X -f png``, ``compress X``, ``apply preset X``, ``presets show X``
  and ``gate`` with ``X`` as its budget file;
* broken studies: ``report``, ``presets build``, ``tune`` resuming and ``worker``.

A run is **clean** when its exit code is one the entry allows (0 for a valid image, 3 for bad input, 2 for a
malformed URL or a file that is not a budget or a preset), it printed no traceback and, when it failed, one
error line. The table counts runs, exit codes, exit 5 and unclean runs per command; any unclean run is listed.
The test suite holds the same contract (``tests/test_hostile_*.py``); this script gives the totals.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hostile_corpus import ALLOWED, TEST_MEMORY_BUDGET, build_corpus  # noqa: E402
from study_corpus import build_study_corpus  # noqa: E402

from optimizer.cli import main as cli  # noqa: E402


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(argv)
    return code, out.getvalue() + err.getvalue()


def _clean(code: int, output: str, allowed: set[int]) -> str | None:
    """Why a run is not clean, or None."""
    if code not in allowed:
        return f"exit {code}, expected one of {sorted(allowed)}"
    if "Traceback" in output:
        return "a traceback"
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    if code not in (0, 1) and len(errors) != 1:
        return f"{len(errors)} error lines"
    return None


def _tiny_study(root: Path) -> tuple[Path, Path, Path, tuple[str, ...]]:
    """A real two-trial study on two generated images: (images, database, presets, tune options)."""
    import numpy as np
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for seed in (1, 2):
        pixels = (rng.random((48, 64, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(images / f"image{seed}.png")
    db, presets = root / "study.db", root / "presets.json"
    options = ("--formats", "jpeg", "--subsampling", "4:2:0,4:4:4", "--target", "ssim:0.5", "--profile", "fast")
    code = cli(["tune", str(images), *options, "--trials", "2", "--seed", "1", "--study", "tiny",
                "--storage", f"sqlite:///{db}", "--export", str(presets)])  # fmt: skip
    if code != 0:
        raise SystemExit(f"the study the benchmark needs could not be made (exit {code})")
    return images, db, presets, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = parser.parse_args()
    os.environ["OPTIMIZER_MAX_MEMORY"] = TEST_MEMORY_BUDGET
    os.environ["OPTIMIZER_ALLOW_DOWNLOAD"] = "0"
    started = time.perf_counter()
    codes: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    unclean: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        root = Path(tmp)
        os.environ["OPTIMIZER_STUDIES_DIR"] = str(root / "studies")
        images, db, presets, options = _tiny_study(root / "study")
        corpus = build_corpus(root / "corpus")
        good = next(e.path for e in corpus if e.outcome == "valid")
        for n, entry in enumerate(corpus):
            allowed = ALLOWED[entry.outcome]
            out = root / "out" / str(n)
            runs: dict[str, tuple[list[str], set[int]]] = {
                "evaluate": (["evaluate", str(entry.path), str(entry.path)], allowed | {2}),
                "encode": (["encode", str(entry.path), "-f", "png", "-o", str(out / "e.png")], allowed),
                "compress": (
                    ["compress", str(entry.path), "-t", "psnr:30", "--formats", "jpeg", "-d", str(out / "c")],
                    allowed | {1},
                ),
                "apply": (["apply", str(presets), str(entry.path), "-d", str(out / "a")], allowed | {1}),
                "presets show": (["presets", "show", str(entry.path)], {2, 3}),
                "gate": (["gate", str(good.parent), str(good.parent), "--budget", str(entry.path)], {2, 3}),
            }
            if entry.path.is_dir():  # a folder named like an image: `evaluate` compares it with itself as a
                # folder pair (an empty one: exit 0); for the commands that want a file, a usage error
                runs = {k: (a, v | ({0, 2} if k == "evaluate" else {2})) for k, (a, v) in runs.items()}
            for command, (argv, ok) in runs.items():
                code, output = _run(argv)
                codes[command][code] += 1
                why = _clean(code, output, ok)
                if why is not None:
                    unclean.append(f"{command} {entry.name}: {why}: {output.strip()[-200:]!r}")
        broken = build_study_corpus(root / "broken", db, "tiny")
        for entry in broken:
            storage = ["--study", entry.study, "--storage", entry.storage]
            study_runs = {
                "report (broken study)": ["report", *storage, "-o", str(root / "report.html")],
                "presets build (broken study)": ["presets", "build", *storage, "-o", str(root / "built.json")],
                "tune resuming (broken study)": ["tune", str(images), *options, "--trials", "3", *storage],
                "worker (broken study)": ["worker", str(images), *storage],
            }
            for command, argv in study_runs.items():
                code, output = _run(argv)
                codes[command][code] += 1
                expected = {2, entry.code} if command.startswith("worker") else {entry.code}
                why = _clean(code, output, expected)
                if why is not None:
                    unclean.append(f"{command} {entry.name}: {why}: {output.strip()[-200:]!r}")
        kinds = (len(corpus), len(broken))
    text = _render(codes, unclean, kinds, time.perf_counter() - started)
    print(text)
    if args.write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as handle:
            handle.write("\n" + text)


def _render(
    codes: dict[str, collections.Counter[int]], unclean: list[str], kinds: tuple[int, int], seconds: float
) -> str:
    total = sum(sum(c.values()) for c in codes.values())
    fives = sum(c[5] for c in codes.values())
    lines = [
        "## Hostile inputs through every command (`bench_hostile.py`)",
        "",
        f"Command: `python benchmarks/bench_hostile.py --write` ({time.strftime('%Y-%m-%d')}, {seconds:.0f} s). "
        f"{kinds[0]} hostile or odd files (tests/hostile_corpus.py) through six commands, {kinds[1]} broken study "
        "storages (tests/study_corpus.py) through four, in process, memory budget 2 GiB.",
        "",
        "| command | runs | exit codes | exit 5 | unclean |",
        "|---|---|---|---|---|",
    ]
    for command, counter in codes.items():
        spread = ", ".join(f"{code}: {count}" for code, count in sorted(counter.items()))
        bad = sum(1 for u in unclean if u.startswith(command + " "))
        lines.append(f"| {command} | {sum(counter.values())} | {spread} | {counter[5]} | {bad} |")
    lines += ["", f"**{total} runs, {fives} exited 5, {len(unclean)} unclean** (exit code not allowed, a traceback, "
              "or other than one error line)."]  # fmt: skip
    lines += [f"- {u}" for u in unclean[:20]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
