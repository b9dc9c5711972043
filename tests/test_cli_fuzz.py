"""Property-based fuzz of the command line: random arguments never make a command exit 5 or print a traceback.

For every command (and sub-command) of ``optimizer``, Hypothesis builds argument lists from the command's own
option names and invented ones, flags given values and options left without one, repeated options, and
values that are paths (real images, folders, a preset, a study, a FIFO, missing files), numbers in and out
of range (``1e308``, ``nan``, ``-1``, huge integers), unicode (a non-UTF-8 file name as the OS hands it over
included) and malformed targets, ranges and URLs; most examples perturb a valid command line (a few of its
values replaced, options added) so that they reach each command's own checks, the others are any tokens in
any order. Each list runs in process through ``optimizer.cli.main``;
the exit code must be one of the documented ones and never 5, and nothing may print a traceback. ``--debug``
is left out: it prints tracebacks on purpose.

What is tested here is the parsing and validation of arguments, so the work behind the heavy commands is
stubbed at its API entry (each stub ends the command with exit 0 once the arguments have reached it): the
folder batches (``evaluate_folders``, ``run_gate``, ``apply_preset``, ``compress``), the study runs
(``run_study``, ``tune_workers``, ``join_study``), the monitor's polling loop, FID, the HTTP server and the
report's rendering. Everything before those calls (option parsing, files opened, configurations read,
evaluators built, studies opened) runs for real, in a temporary folder that is also the working directory,
so any output a fuzzed path names lands there. Bounded: 60 examples per command, a per-example deadline,
derandomised so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import typer
from conftest import TinyStudy, textured_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.cli import app, main

#: the exit codes the CLI documents; 5 is a bug
DOCUMENTED = {0, 1, 2, 3, 4, 130}


def _commands() -> dict[tuple[str, ...], Any]:
    """Every leaf command (and group with its own callback) by its path of names. Typer builds them on the
    click it bundles (``typer._click``), so they are told apart by what they have, not by click's classes."""
    root = typer.main.get_command(app)
    found: dict[tuple[str, ...], Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):
            if command.invoke_without_command and path:
                found[path] = command  # `optimizer weights` shows the status itself
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        else:
            found[path] = command

    walk(root, ())
    return found


COMMANDS = _commands()


def _stop(*args: Any, **kwargs: Any) -> Any:
    """The stub of a heavy API entry: the arguments got this far; end the command cleanly."""
    raise typer.Exit(0)


#: module attribute -> why it is stubbed (the work behind a command, not its argument handling)
STUBS = {
    "optimizer.batch.evaluate_folders": "scores folders in worker processes",
    "optimizer.gate.run_gate": "scores folders in worker processes",
    "optimizer.tuning.apply.apply_preset": "encodes folders in worker processes",
    "optimizer.tuning.adaptive.compress": "searches encodings per image",
    "optimizer.tuning.study.run_study": "runs tuning trials",
    "optimizer.tuning.workers.tune_workers": "starts worker processes",
    "optimizer.tuning.workers.join_study": "runs a worker's trials",
    "optimizer.metrics.fid.evaluate_set": "loads the Inception network",
    "optimizer.service.server.run": "serves HTTP until stopped",
    "optimizer.report.build_report": "renders every figure of a study",
    "optimizer.monitor.FolderWatcher.run": "polls folders until stopped",
    "optimizer.monitor.FolderWatcher.once": "scores folders",
}


@pytest.fixture(scope="module")
def sandbox(tiny_study: TinyStudy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A working directory with files for the fuzzed values to name, the heavy entries stubbed, studies and
    weights kept inside it; yields the named paths."""
    import importlib

    root = tmp_path_factory.mktemp("fuzz")
    (root / "orig").mkdir()
    (root / "proc").mkdir()
    (root / "empty").mkdir()
    for folder in ("orig", "proc"):
        textured_image(root / folder / "a.png", 1)
    (root / "text.txt").write_text("not an image\n")
    (root / "budget.toml").write_text('[[budget]]\nmetric = "psnr"\nmin = 0.0\n')
    (root / "space.toml").write_text('formats = ["jpeg"]\n')
    os.mkfifo(root / "fifo.png")
    paths = {
        "image": str(root / "orig" / "a.png"),
        "orig": str(root / "orig"),
        "proc": str(root / "proc"),
        "empty": str(root / "empty"),
        "text": str(root / "text.txt"),
        "budget": str(root / "budget.toml"),
        "space": str(root / "space.toml"),
        "fifo": str(root / "fifo.png"),
        "missing": str(root / "missing.png"),
        "presets": str(tiny_study.presets),
        "study-images": str(tiny_study.images),
        "storage": f"sqlite:///{root / 'copy.db'}",
        "study": tiny_study.name,
    }
    (root / "copy.db").write_bytes(tiny_study.db.read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("OPTIMIZER_STUDIES_DIR", str(root / "studies"))
        patch.setenv("TORCH_HOME", str(root / "torch"))
        patch.setenv("OPTIMIZER_ALLOW_DOWNLOAD", "0")
        patch.setenv("OPTIMIZER_MAX_MEMORY", "2G")
        patch.delenv("OPTIMIZER_STORAGE", raising=False)
        for target in STUBS:
            module, _, name = target.rpartition(".")
            owner: Any = importlib.import_module(module) if not module.endswith("FolderWatcher") else None
            if owner is None:
                owner = importlib.import_module(module.rpartition(".")[0]).FolderWatcher
            patch.setattr(owner, name, _stop)
        yield paths


def _values(paths: dict[str, str]) -> st.SearchStrategy[str]:
    words = st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=0, max_size=12
    )
    return st.one_of(
        st.sampled_from(sorted(paths.values())),
        st.sampled_from(
            [
                "0",
                "-1",
                "1",
                "2",
                "3",
                "100",
                "65536",
                "1e308",
                "-1e308",
                "nan",
                "inf",
                "-inf",
                "1.5",
                "0x10",
                "99999999999999999999999",
                "",
                " ",
                "--",
                "-",
                "true",
                "no",
            ]
        ),  # fmt: skip
        st.sampled_from(
            [
                "ssim:0.9",
                "psnr:",
                ":1",
                "composite:2",
                "nope:1",
                "ssimulacra2:1e308",
                "lpips:-1",
                "jpeg,webp",
                "jpeg,,",
                "avif",
                "nope",
                "30-90",
                "90-30",
                "-5-5",
                "a-b",
                "1e308-1e309",
                "high=ssim:0.9",
                "=",
                "a=b=c",
                "foo://x",
                "sqlite:///",
                "journal:",
                "postgresql://u:p@h:port/db",
                "4:2:0,9:9:9",
                "quality=50",
                "webp=10-20",
                "caf\udce9.png",
                "2025-13-45T99:00",
                "table",
                "json",
                "cwebp",
            ]
        ),  # fmt: skip
        words,
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )


def _bases(paths: dict[str, str]) -> dict[tuple[str, ...], list[str]]:
    """A valid command line per command: the fuzz perturbs these, so that most examples get past the first
    option and into each command's own checks (random lists alone stop at click's usage errors)."""
    study = ["--study", paths["study"], "--storage", paths["storage"]]
    return {
        ("codecs",): [],
        ("encode",): [paths["image"], "-f", "webp", "-o", "out.webp"],
        ("compress",): [paths["orig"], "--target", "ssim:0.9", "-d", "compressed"],
        ("evaluate",): [paths["image"], paths["image"], "--metrics", "psnr"],
        ("evaluate-set",): [paths["orig"], paths["proc"]],
        ("monitor",): ["--watch", paths["orig"], paths["proc"], "--once"],
        ("gate",): [paths["orig"], paths["proc"], "--budget", paths["budget"]],
        ("apply",): [paths["presets"], paths["orig"], "applied"],
        ("report",): [*study, "-o", "report.html"],
        ("serve",): [],
        ("tune",): [paths["study-images"], "--trials", "1"],
        ("worker",): [paths["study-images"], "--study", "tiny", "--storage", "journal:worker.journal"],
        ("weights",): [],
        ("weights", "import"): [paths["text"]],
        ("presets", "show"): [paths["presets"]],
        ("presets", "export"): [paths["presets"], "--to", "pillow"],
        ("presets", "build"): [*study, "-o", "built.json"],
    }


def _argv(command: Any, path: tuple[str, ...], paths: dict[str, str]) -> st.SearchStrategy[list[str]]:
    options = [p for p in command.params if p.param_type_name == "option" and "--debug" not in p.opts]
    names = sorted({name for p in options for name in (*p.opts, *p.secondary_opts)} - {"--help"})
    takes_value = {name: p.nargs for p in options if not p.is_flag for name in p.opts}
    value = _values(paths)
    invented = st.sampled_from(["--nope", "-z", "--formats=jpeg", "--trials=-3", "--=", "---x"])
    option_name = st.one_of(st.sampled_from(names), invented) if names else invented
    base = _bases(paths)[path]

    @st.composite
    def perturbed(draw: st.DrawFn) -> list[str]:
        """The command's valid line, some of its values replaced, options added (repeated ones included)."""
        argv = [draw(value) if draw(st.integers(0, 7)) == 0 else token for token in base]
        for _ in range(draw(st.integers(0, 3))):
            name = draw(option_name)
            nargs = takes_value.get(name, 0)
            if name not in takes_value and draw(st.integers(0, 9)) == 0:
                nargs = 1  # a value given to a flag
            elif nargs and draw(st.integers(0, 9)) == 0:
                nargs = 0  # an option left without its value
            at = draw(st.integers(0, len(argv)))
            argv[at:at] = [name, *(draw(value) for _ in range(max(nargs, 0)))]
        return [*path, *argv]

    @st.composite
    def scrambled(draw: st.DrawFn) -> list[str]:
        """Any tokens at all: names of the command's options and invented ones, values, in any order."""
        tokens = [draw(st.one_of(option_name, value)) for _ in range(draw(st.integers(0, 8)))]
        return [*path, *tokens]

    return st.one_of(perturbed(), perturbed(), perturbed(), perturbed(), scrambled())


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: "-".join(p))
def test_no_arguments_make_a_command_exit_5(path: tuple[str, ...], sandbox: dict[str, str]) -> None:
    command = COMMANDS[path]

    @settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
        deadline=timedelta(seconds=20),
        derandomize=os.environ.get("FUZZ_RANDOM") is None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(argv=_argv(command, path, sandbox))
    def check(argv: list[str]) -> None:
        code, output = _run(argv)
        assert code in DOCUMENTED and code != 5, f"{argv!r} exited {code}: {output[-600:]}"
        assert "Traceback" not in output, f"{argv!r} printed a traceback: {output[-1500:]}"

    check()


def test_every_command_is_fuzzed() -> None:
    """New commands join the fuzz by themselves; this guards the walk that finds them."""
    names = {" ".join(p) for p in COMMANDS}
    assert {"evaluate", "encode", "compress", "tune", "worker", "report", "apply", "gate", "monitor", "serve"} <= names
    assert {"presets show", "presets export", "presets build", "weights", "weights import", "codecs"} <= names


def test_a_stub_stops_the_command_cleanly(sandbox: dict[str, str]) -> None:
    """The stubs end a command with exit 0 once its arguments reach the work (so a fuzz example that exits 0
    got through the parsing), and the real parsing still refuses what it should."""
    assert _run(["tune", sandbox["study-images"], "--trials", "2"])[0] == 0
    assert _run(["tune", sandbox["study-images"], "--trials", "0"])[0] == 2
    assert _run(["gate", sandbox["orig"], sandbox["proc"], "--budget", sandbox["budget"]])[0] == 0
    assert _run(["gate", sandbox["orig"], sandbox["proc"], "--budget", sandbox["fifo"]])[0] == 2
