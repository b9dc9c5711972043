"""One grammar for every command: examples in every ``--help``, choices shown as choices, the deprecated
spellings still working with a warning, quoted globs expanded, and the Python API named as the CLI."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from PIL import Image as PILImage

from optimizer.cli import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, app, main
from optimizer.errors import InvalidParameterError, NoPresetError


def _commands() -> Iterator[tuple[list[str], Any]]:
    """Every command and group as (path, click command); typer ships its own copy of click."""

    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


COMMANDS = [path for path, _ in _commands() if path]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_ends_with_examples(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    examples = text.split("Examples:", 1)
    assert len(examples) == 2, text
    shown = [line.strip() for line in examples[1].splitlines() if line.strip().startswith("optimizer ")]
    # An example of a subcommand group may show any of its subcommands; a command's examples run that command.
    assert shown and all(line.split()[1 : 1 + len(path[:1])] == path[:1] for line in shown), shown


#: Options with a closed set of values: --help lists the values, and another value is a usage error.
CHOICE_OPTIONS = {
    ("tune",): ("constrained|tradeoff|pareto", "mean|p10|worst", "tpe|nsga2|random"),
    ("worker",): ("tpe|nsga2|random",),
    ("encode",): ("lanczos|bicubic|bilinear|box|hamming|nearest", "srgb|keep"),
    ("monitor",): ("never|warning|critical",),
    ("report",): ("ssim|difference", "fanova|ped-anova|mdi"),
    ("serve",): ("critical|error|warning|info|debug",),
}


@pytest.mark.parametrize("path", sorted(CHOICE_OPTIONS), ids=" ".join)
def test_closed_sets_of_values_are_listed_as_choices(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    for choices in CHOICE_OPTIONS[path]:
        assert f"<{choices}>" in text, choices


def test_resize_filter_choices_are_the_library_filters() -> None:
    from optimizer.cli._parsing import ResizeFilter
    from optimizer.transforms import RESIZE_FILTERS

    assert set(typing.get_args(ResizeFilter)) == set(RESIZE_FILTERS)


def test_the_cli_and_tune_share_their_defaults() -> None:
    import inspect

    from optimizer.tuning.config import DEFAULT_TRIALS
    from optimizer.tuning.study import tune

    command = dict((tuple(p), c) for p, c in _commands())[("tune",)]
    options = {p.name: p.default for p in command.params}
    signature = inspect.signature(tune).parameters
    assert options["trials"] == DEFAULT_TRIALS == signature["trials"].default
    for name in ("formats", "quality", "target", "mode", "aggregate", "jobs", "seed", "sampler", "timeout"):
        assert name in signature, name
    assert options["target"] == signature["target"].default and options["jobs"] == signature["jobs"].default


# --------------------------------------------------------------------------------------------------
# deprecated spellings


@pytest.fixture(scope="module")
def pair(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("grammar")
    reference, distorted = root / "ref", root / "dist"
    for folder in (reference, distorted):
        folder.mkdir()
    image = PILImage.open(kodak_paths[3]).convert("RGB").crop((0, 0, 96, 64))
    image.save(reference / "a.png")
    image.save(reference / "b.png")
    image.save(distorted / "a.jpg", quality=40)
    image.save(distorted / "b.jpg", quality=60)
    return reference, distorted


def test_deprecated_format_and_workers_still_work(pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    reference, distorted = pair
    args = ["evaluate", str(reference), str(distorted), "--metrics", "psnr"]
    assert main([*args, "--format", "json", "--workers", "1"]) == EXIT_OK
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["pairs"]) == 2
    assert "--format json is deprecated" in captured.err and "use --json" in captured.err
    assert "--workers N (parallel items) is deprecated" in captured.err
    assert main([*args, "--json", "-j", "2"]) == EXIT_OK
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["pairs"]) == 2 and "deprecated" not in captured.err
    assert main([*args, "--format", "yaml"]) == EXIT_USAGE
    assert main([*args, "-j", "2", "--workers", "3"]) == EXIT_USAGE


def test_compress_old_spellings_and_quoted_globs(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    reference, _ = pair
    glob = str(reference / "*.png")  # quoted: the shell did not expand it
    new = ["compress", glob, "-t", "psnr:30", "--formats", "jpeg", "--quality", "30-90", "--json"]
    assert main([*new, "-d", str(tmp_path / "new")]) == EXIT_OK
    captured = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.jpg", "b.jpg"]
    assert "deprecated" not in captured.err
    old = ["compress", glob, "-t", "psnr:30", "--formats", "jpeg", "--quality-range", "30-90", "--format", "json"]
    assert main([*old, "-o", str(tmp_path / "old")]) == EXIT_OK
    captured = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["a.jpg", "b.jpg"]
    for spelling in ("--quality-range is deprecated", "-o DIR (an output folder) is deprecated", "--format json"):
        assert spelling in captured.err
    assert json.loads(captured.out)["totals"]["met"] == 2
    assert main([*new, "-d", str(tmp_path / "x"), "--quality-range", "30-90"]) == EXIT_USAGE
    assert main(["compress", str(reference / "*.tif"), "-t", "psnr:30", "-d", str(tmp_path / "y")]) == EXIT_USAGE
    assert "no file matches" in capsys.readouterr().err


def test_apply_positional_out_dir_still_works(small_study, pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    presets = small_study.presets.save(tmp_path / "presets.json")
    reference, _ = pair
    assert (
        main(["apply", str(presets), str(reference / "a.png"), str(reference / "b.png"), "-d", str(tmp_path / "new")])
        == 0
    )
    assert "deprecated" not in capsys.readouterr().err
    assert main(["apply", str(presets), str(reference), str(tmp_path / "old")]) == EXIT_OK
    assert "a last positional OUT_DIR is deprecated" in capsys.readouterr().err
    assert (
        {p.stem for p in (tmp_path / "new").iterdir()} == {p.stem for p in (tmp_path / "old").iterdir()} == {"a", "b"}
    )
    # Two image files and no -d: the second is an input, not an output folder.
    assert main(["apply", str(presets), str(reference / "a.png"), str(reference / "b.png")]) == EXIT_USAGE
    assert "-d/--out-dir" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# parsing


def test_format_params_apply_where_they_exist() -> None:
    from optimizer.cli._parsing import parse_format_params

    parsed = parse_format_params(["quality=70", "avif.speed=8", "jpg.progressive=false"], ["avif", "jpeg"])
    assert parsed == {"avif": {"quality": 70, "speed": 8}, "jpeg": {"quality": 70, "progressive": False}}
    with pytest.raises(InvalidParameterError, match="no format searched here has a setting 'speed'"):
        parse_format_params(["speed=8"], ["jpeg"])
    with pytest.raises(InvalidParameterError, match="only jpeg is written"):
        parse_format_params(["avif.speed=8"], ["jpeg"])
    with pytest.raises(InvalidParameterError, match=r"\[FORMAT.\]NAME=VALUE"):
        parse_format_params(["speed"], ["avif"])


def test_quality_ranges() -> None:
    from optimizer.cli._parsing import parse_quality_range

    assert parse_quality_range("40-95") == (40.0, 95.0)
    assert parse_quality_range("jpeg=40-95, jxl=0.5-3") == {"jpeg": (40.0, 95.0), "jxl": (0.5, 3.0)}
    assert parse_quality_range(None) is None
    for bad in ("40", "jpeg=40", "=40-90", "a-b"):
        with pytest.raises(InvalidParameterError):
            parse_quality_range(bad)


def test_quoted_globs(tmp_path: Path) -> None:
    from optimizer.cli._grammar import expand_paths

    for name in ("b.png", "a.png", "c.jpg", "sub/d.png", "odd[1].png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in expand_paths([tmp_path / "*.png"])]
    assert names == ["a.png", "b.png", "odd[1].png"]
    deep = [p.relative_to(tmp_path).as_posix() for p in expand_paths([f"{tmp_path}/**/*.png"])]
    assert "sub/d.png" in deep
    assert expand_paths([tmp_path / "odd[1].png"]) == [tmp_path / "odd[1].png"]  # an existing name is literal
    assert expand_paths([tmp_path / "missing.png"]) == [tmp_path / "missing.png"]  # not a glob: reported later
    with pytest.raises(InvalidParameterError, match="no file matches"):
        expand_paths([tmp_path / "*.webp"])


# --------------------------------------------------------------------------------------------------
# the Python API


def test_tune_without_a_preset_fails_as_the_cli_does(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    from optimizer.cli._app import exit_code_for
    from optimizer.tuning.study import tune

    reference, _ = pair
    images = sorted(reference.glob("*.png"))
    options = dict(formats="jpeg", quality=(5, 8), target="psnr:60", storage=f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(NoPresetError, match="no preset") as caught:
        tune(images, study_name="a", trials=1, **options)
    assert caught.value.result is not None and caught.value.result.presets is None
    assert exit_code_for(caught.value) == EXIT_CHECK_FAILED
    with pytest.warns(DeprecationWarning, match="n_trials= is deprecated"):
        kept = tune(images, study_name="b", n_trials=1, require_preset=False, **options)
    assert kept.presets is None and kept.preset_error
    assert kept.definition.space["formats"] == ["jpeg"]
    assert kept.definition.space["params"]["jpeg"]["quality"] == [5, 8]


def test_exit_code_of_import_errors() -> None:
    from optimizer.cli._app import EXIT_DEPENDENCY, EXIT_INTERNAL, exit_code_for

    assert exit_code_for(ModuleNotFoundError("No module named 'lpips'", name="lpips")) == EXIT_DEPENDENCY
    assert exit_code_for(ImportError("cannot import name 'x'", name="optimizer.metrics")) == EXIT_INTERNAL
