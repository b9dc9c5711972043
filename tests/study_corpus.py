"""A corpus of broken study storages, built from one real study, for every command that reads a study.

:func:`build_study_corpus` copies a valid SQLite study (made by ``tune``) and damages each copy in one way:
the file itself (truncated, bit-flipped pages, text, a schema from an unknown Optuna), what Optuna stores
(a stored definition that is not JSON, not a mapping, or lacks keys; a trial attribute that is not a
number; a parameter of 1e308), where the URL points (a folder, a journal with a corrupt line) and the URL
itself (an unknown scheme, a malformed URL), and a database server nobody listens to. Each :class:`BrokenStorage` says what the one error line must
name (the file, or the URL with its password redacted) and the exit code a correct command gives: 3 for a
storage or study that cannot be read (or reached), 2 for a URL that is not one.

Everything is built from the given study; building takes well under a second. Used by
``tests/test_hostile_studies.py`` and ``benchmarks/bench_hostile.py``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BrokenStorage", "build_study_corpus"]

#: Optuna's SQLite page size: bytes between the b-tree page headers that :func:`_flip_pages` damages
_PAGE = 4096


@dataclass(frozen=True)
class BrokenStorage:
    """One broken storage: the ``--storage`` value, the ``--study`` name, what the error must name, the exit
    code, and a secret (a password in the URL) that must never be printed."""

    name: str
    storage: str
    study: str
    shown: str
    code: int
    secret: str | None = None


def _sql(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with sqlite3.connect(path) as connection:
        for statement, args in statements:
            connection.execute(statement, args)
    connection.close()


def _definition(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as connection:
        (text,) = connection.execute(
            "SELECT value_json FROM study_user_attributes WHERE key = 'optimizer_definition'"
        ).fetchone()
    connection.close()
    loaded: dict[str, object] = json.loads(text)
    return loaded


def _set_definition(value_json: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        _sql(
            path, ("UPDATE study_user_attributes SET value_json = ? WHERE key = 'optimizer_definition'", (value_json,))
        )

    return damage


def _definition_without(*keys: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        kept = {k: v for k, v in _definition(path).items() if k not in keys}
        _set_definition(json.dumps(kept))(path)

    return damage


def _definition_with(**values: object) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        _set_definition(json.dumps({**_definition(path), **values}))(path)

    return damage


def _set_trial_attr(key: str, value_json: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        _sql(path, ("UPDATE trial_user_attributes SET value_json = ? WHERE key = ?", (value_json, key)))

    return damage


def _settings_param(name: str, value: object) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with sqlite3.connect(path) as connection:
            rows = connection.execute(
                "SELECT trial_user_attribute_id, value_json FROM trial_user_attributes WHERE key = 'settings'"
            ).fetchall()
            for row_id, text in rows:
                settings = json.loads(text)
                settings["params"][name] = value
                connection.execute(
                    "UPDATE trial_user_attributes SET value_json = ? WHERE trial_user_attribute_id = ?",
                    (json.dumps(settings), row_id),
                )
        connection.close()

    return damage


def _param_value(value: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        _sql(path, ("UPDATE trial_params SET param_value = ?", (value,)))

    return damage


def _unknown_schema(path: Path) -> None:
    _sql(path, ("UPDATE alembic_version SET version_num = ?", ("v99.0.0.z",)))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_pages(path: Path) -> None:
    """Flip the first bytes of every b-tree page after the first (their page type and cell counts): any
    query that touches a table then reads a malformed page, whatever the study's contents."""
    data = bytearray(path.read_bytes())
    for start in range(_PAGE, len(data), _PAGE):
        for i in range(start, min(start + 8, len(data))):
            data[i] ^= 0xA5
    path.write_bytes(bytes(data))


def _text(path: Path) -> None:
    path.write_text("This is not a database: a text file saved under a study's name.\n" * 20)


def _sqlite_cases() -> dict[str, Callable[[Path], None]]:
    """name -> damage done to a copy of the study's SQLite file."""
    return {
        "sqlite-truncated": _truncate,
        "sqlite-bitflip": _flip_pages,
        "sqlite-text-file": _text,
        "sqlite-unknown-schema-version": _unknown_schema,
        "definition-not-json": _set_definition("{not json"),
        "definition-not-a-mapping": _set_definition("[1, 2, 3]"),
        "definition-a-string": _set_definition('"constrained"'),
        "definition-missing-keys": _definition_without("space", "target", "evaluator"),
        "definition-space-not-a-mapping": _definition_with(space="jpeg"),
        "definition-target-not-a-target": _definition_with(target=42),
        "definition-budget-not-a-number": _definition_with(n_trials="many"),
        "trial-bytes-not-a-number": _set_trial_attr("total_bytes", '"lots"'),
        "trial-quality-not-a-number": _set_trial_attr("quality", '{"a": 1}'),
        "trial-aggregates-not-a-mapping": _set_trial_attr("aggregates", "[0.5]"),
        "trial-settings-not-a-mapping": _set_trial_attr("settings", '"jpeg"'),
        "trial-probes-not-a-list": _set_trial_attr("probes", "7"),
        "trial-setting-of-1e308": _settings_param("quality", 1e308),
        "trial-param-of-1e308": _param_value(1e308),
    }


def build_study_corpus(folder: Path, valid_db: Path, study: str) -> list[BrokenStorage]:
    """Write the broken storages into ``folder`` (created) from a valid SQLite study.

    Args:
        folder: Where to write (a fresh temporary folder).
        valid_db: A SQLite file holding a study made by ``optimizer tune``.
        study: That study's name.

    Returns:
        One :class:`BrokenStorage` per kind of damage.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, damage in _sqlite_cases().items():
        path = folder / f"{name}.db"
        shutil.copyfile(valid_db, path)
        damage(path)
        out.append(BrokenStorage(name, f"sqlite:///{path}", study, str(path), 3))
    directory = folder / "folder.db"
    directory.mkdir()
    out.append(BrokenStorage("sqlite-folder", f"sqlite:///{directory}", study, str(directory), 3))
    out.append(_corrupt_journal(folder, valid_db, study))
    journal_dir = folder / "folder.journal"
    journal_dir.mkdir()
    out.append(BrokenStorage("journal-folder", f"journal:{journal_dir}", study, str(journal_dir), 3))
    secret = "s3cret-pw"
    out += [
        BrokenStorage("unknown-scheme", "foo://x", study, "foo://x", 2),
        BrokenStorage("not-a-url", "just some words", study, "just some words", 2),
        BrokenStorage(
            "malformed-port",
            f"postgresql://user:{secret}@localhost:port/db",
            study,
            "postgresql://user:***@localhost:port/db",
            2,
            secret,
        ),
        BrokenStorage(
            "server-unreachable",
            f"postgresql://user:{secret}@127.0.0.1:1/db",
            study,
            "postgresql://user:***@127.0.0.1:1/db",
            3,
            secret,
        ),
        BrokenStorage(
            "unknown-driver",
            f"postgresql+nodriver://user:{secret}@localhost/db",
            study,
            "postgresql+nodriver://user:***@localhost/db",
            2,
            secret,
        ),
    ]
    names = [b.name for b in out]
    assert len(names) == len(set(names)), "corpus names must be unique"
    return out


def _corrupt_journal(folder: Path, valid_db: Path, study: str) -> BrokenStorage:
    """The study copied into a journal file, with a line in the middle that is not JSON."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = folder / "corrupt.journal"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.copy_study(
        from_study_name=study,
        from_storage=f"sqlite:///{valid_db}",
        to_storage=JournalStorage(JournalFileBackend(str(path))),
    )
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(len(lines) // 2, b'{"op_code": 5, "worker_id": "x", "trial_id": \n')
    path.write_bytes(b"".join(lines))
    return BrokenStorage("journal-corrupt-line", f"journal:{path}", study, str(path), 3)
