"""The hostile-input contract for studies: every broken storage (tests/study_corpus.py) gives a clean outcome.

Every command that reads a study (``report``, ``presets build``, ``tune`` resuming, ``worker``) refuses each
broken storage with one error line naming the file (or the URL, password redacted) and the reason: exit 3
for a storage or study that cannot be read or reached, 2 for a URL that is not one; never 5, never a
traceback. The Python API raises the package's errors at the same depth (``resolve_storage``,
``open_stored_study``, the record readers).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import TinyStudy
from study_corpus import BrokenStorage, build_study_corpus

from optimizer.cli import main
from optimizer.errors import InvalidParameterError, StudyError, StudyStorageError
from optimizer.tuning.records import StudyDefinition
from optimizer.tuning.storage import resolve_storage
from optimizer.tuning.study import load_study, open_stored_study


@pytest.fixture(scope="module")
def broken(tiny_study: TinyStudy, tmp_path_factory: pytest.TempPathFactory) -> list[BrokenStorage]:
    return build_study_corpus(tmp_path_factory.mktemp("broken-studies"), tiny_study.db, tiny_study.name)


def test_the_corpus_is_broad(broken: list[BrokenStorage]) -> None:
    names = {b.name for b in broken}
    assert len(broken) >= 20
    assert {"sqlite-truncated", "sqlite-bitflip", "sqlite-text-file", "definition-not-json", "sqlite-folder"} <= names
    assert {"trial-bytes-not-a-number", "trial-param-of-1e308", "unknown-scheme", "malformed-port"} <= names
    assert {b.code for b in broken} == {2, 3}


def _commands(entry: BrokenStorage, study: TinyStudy, out: Path) -> dict[str, list[str]]:
    storage = ["--study", entry.study, "--storage", entry.storage]
    return {
        "report": ["report", *storage, "-o", str(out / "report.html")],
        "presets build": ["presets", "build", *storage, "-o", str(out / "presets.json")],
        "tune": ["tune", str(study.images), *study.tune_options, "--trials", "3", *storage],
        "worker": ["worker", str(study.images), *storage],
    }


def _expected(entry: BrokenStorage, command: str) -> int:
    if command == "worker" and entry.storage.startswith("sqlite:"):
        return 2  # workers refuse SQLite (not shared by processes) before reading it
    return entry.code


@pytest.mark.slow
def test_every_study_command_over_the_corpus(
    broken: list[BrokenStorage], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    for entry in broken:
        for command, args in _commands(entry, tiny_study, tmp_path).items():
            code = main(args)
            err = capsys.readouterr().err
            expected = _expected(entry, command)
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            problems = []
            if code != expected:
                problems.append(f"exit {code}, expected {expected}")
            if "Traceback" in err or len(errors) != 1:
                problems.append(f"{len(errors)} error lines")
            elif expected == entry.code and entry.shown not in errors[0]:
                problems.append(f"the error does not name {entry.shown!r}")
            if entry.secret and entry.secret in err:
                problems.append("the password is printed")
            failures += [f"{entry.name} / {command}: {p}: {err.strip()[-300:]!r}" for p in problems]
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "presets.json").exists()


def test_the_valid_study_still_reads(tiny_study: TinyStudy, tmp_path: Path) -> None:
    """The control: the same commands succeed on the study the corpus was made from."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(tiny_study.db, copy)
    entry = BrokenStorage("valid", f"sqlite:///{copy}", tiny_study.name, str(copy), 0)
    commands = _commands(entry, tiny_study, tmp_path)
    assert main(commands["report"]) == 0
    assert main(commands["presets build"]) == 0
    assert main(commands["tune"]) == 0


def test_the_api_raises_the_package_errors(broken: list[BrokenStorage]) -> None:
    for entry in broken:
        expected = StudyStorageError if entry.code == 3 else InvalidParameterError
        with pytest.raises(expected) as caught:
            open_stored_study(entry.study, entry.storage)
        assert entry.shown in str(caught.value), entry.name
        with pytest.raises(expected):
            load_study(entry.study, entry.storage)


def test_storage_errors_name_their_source() -> None:
    error = StudyStorageError("trial 3: its 'quality' must be a number, got 'x'")
    assert str(error.at("studies/s.db")) == "studies/s.db: trial 3: its 'quality' must be a number, got 'x'"
    assert error.at("a").at("b").source == "a"
    assert isinstance(error, StudyError)  # callers that catch StudyError still do


@pytest.mark.parametrize(
    "url,message",
    [
        ("foo://x", "unknown scheme 'foo'"),
        ("sqlite//no-colon.db", "is not a storage URL"),
        ("postgresql://u:hunter2@h:port/db", "'postgresql://u:***@h:port/db' is not a valid URL"),
    ],
)
def test_resolve_storage_refuses_what_is_not_a_url(url: str, message: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        resolve_storage(url, "s")
    assert message in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"space": None}, "space must be a mapping"),
        ({"tradeoff_lambda": True}, "tradeoff_lambda must be a number"),
        ({"n_trials": 2.5}, "n_trials must be a whole number"),
        ({"target": "ssim"}, "target cannot be read: targets are written METRIC:VALUE"),
        ({"space": {"formats": ["nope"]}}, "space cannot be read"),
    ],
)
def test_a_stored_definition_is_checked(tiny_study: TinyStudy, change: dict[str, object], message: str) -> None:
    _, definition = open_stored_study(tiny_study.name, tiny_study.storage)
    data = {**definition.to_dict(), **change}
    with pytest.raises(StudyStorageError, match=message):
        StudyDefinition.from_dict(data)
    assert StudyDefinition.from_dict({**definition.to_dict(), "n_trials": None}).n_trials is None
