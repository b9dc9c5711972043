"""Joining a study from a worker: read its stored definition, check the images and metrics, build the objective.

A worker needs only the study name, the storage URL and the images: :func:`join_study` reads the
definition stored with the study, checks that the images are the study's corpus (by fingerprint), that a
given search space is the study's and that this installation computes the same metrics, and builds the
study's objective. Running the trials is :func:`optimizer.tuning.workers.run_worker`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..errors import InvalidParameterError, StorageUnreachableError, StudyError
from ..imageio import Image, ImageSource
from .config import as_space
from .corpus import expand_sources, load_corpus
from .objective import Objective
from .records import DEFINITION_ATTR, PRUNE_ATTR, TIERS_ATTR, StudyDefinition
from .search import settings_search
from .space import SearchSpace
from .storage import connection_errors, redact_storage, resolve_storage
from .study import PreparedStudy, make_sampler, open_stored_study
from .target import Target

__all__ = ["JoinedStudy", "join_study", "study_budget"]

_CONNECT_RETRY_S = 2.0


def study_budget(study: optuna.Study, fallback: int | None) -> int:
    """The study's stored trial budget (re-read each time: a resumed coordinator may raise it)."""
    stored = study.user_attrs.get(DEFINITION_ATTR) or {}
    budget = stored.get("n_trials", fallback)
    if budget is None:
        raise StudyError(f"study {study.study_name!r} has no trial budget (n_trials) in its stored definition")
    return int(budget)


@dataclass
class JoinedStudy(PreparedStudy):
    """A study joined by a worker: its stored definition and an objective built from it."""

    @property
    def budget(self) -> int:
        return study_budget(self.study, self.definition.n_trials)


def join_study(
    study_name: str,
    storage: str,
    images: Iterable[ImageSource | Image] | str | Path,
    *,
    space: SearchSpace | Mapping[str, Any] | str | Path | None = None,
    sampler: str = "tpe",
    seed: int | None = None,
    device: str | None = None,
    wait: float = 0.0,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> JoinedStudy:
    """Open an existing study and build its objective from the stored definition and ``images``.

    Refuses (:class:`StudyError`, saying what differs) images whose corpus fingerprint differs from the
    study's, a ``space`` (when given) other than the study's, and metric versions other than the study's.
    ``wait`` seconds: keep retrying while the storage is unreachable or the study does not exist yet
    (workers started before the database or the coordinator).
    """
    if not study_name:
        raise InvalidParameterError("a worker needs the study name (--study)")
    if not storage or storage.startswith("sqlite:"):
        raise InvalidParameterError(
            "workers need a storage several processes can share: a database URL (postgresql://...) or "
            f"journal:PATH; got {redact_storage(storage or '(none)')!r}"
        )
    study, definition = _load_when_ready(
        study_name,
        storage,
        wait=wait,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    search = definition.space_obj
    if space is not None:
        _check_space(study_name, definition, space)
    sources = _ordered_sources(images, definition.corpus.get("names") or [])
    corpus = load_corpus(sources, widths=search.widths, reference_transform=search.reference_transform)
    _check_corpus(study_name, definition, corpus)
    evaluator = definition.evaluator_obj(device)
    _check_evaluator(study_name, definition, evaluator.describe())
    study.sampler = make_sampler(sampler, definition.mode, seed=seed, constant_liar=True)
    prune_bar = study.user_attrs.get(PRUNE_ATTR, definition.target)  # the coordinator's bar (tiers included)
    prune_target = Target.parse(prune_bar) if prune_bar is not None else None
    tiers = [Target.parse(t) for t in study.user_attrs.get(TIERS_ATTR) or []]
    objective = Objective.from_definition(
        definition, corpus, evaluator=evaluator, prune_target=prune_target, tier_targets=tiers
    )
    order = settings_search(study, definition, seed)
    return JoinedStudy(study=study, definition=definition, objective=objective, storage=storage, search=order)


def _load_when_ready(
    study_name: str, storage: str, *, wait: float, **storage_options: Any
) -> tuple[optuna.Study, StudyDefinition]:
    until = time.monotonic() + max(0.0, wait)
    shown = redact_storage(storage)
    while True:
        unreachable = False
        try:
            resolved = resolve_storage(storage, study_name, **storage_options)
            if study_name in optuna.study.get_all_study_names(resolved):
                return open_stored_study(study_name, resolved)
            problem = f"no study named {study_name!r} in {shown}"
        except connection_errors() as exc:
            unreachable = True
            reason = exc.reason if isinstance(exc, StorageUnreachableError) else _first_line(exc)
            problem = f"cannot reach storage {shown}: {reason}"
        if time.monotonic() >= until:
            hint = "; create it with `optimizer tune ... --storage URL --study NAME`" if not unreachable else ""
            waited = f" (waited {wait:g} s)" if wait > 0 else ""
            if unreachable:
                raise StorageUnreachableError(problem + waited)
            raise StudyError(problem + hint + waited)
        time.sleep(min(_CONNECT_RETRY_S, max(0.05, until - time.monotonic())))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _ordered_sources(images: Iterable[ImageSource | Image] | str | Path, names: Sequence[str]) -> Any:
    """Paths reordered to the study's corpus order, so every worker scores (and prunes) in one order."""
    sources = expand_sources(images)
    if names and all(isinstance(s, (str, Path)) for s in sources):
        rank = {name: i for i, name in enumerate(names)}
        sources.sort(key=lambda s: rank.get(Path(s).name, len(rank)))  # type: ignore[arg-type]  # paths only
    return sources


def _check_corpus(study_name: str, definition: StudyDefinition, corpus: Any) -> None:
    stored = definition.corpus
    if corpus.fingerprint == stored.get("fingerprint"):
        return
    theirs, mine = set(stored.get("names") or []), set(corpus.names)
    details = []
    if mine - theirs:
        details.append("not in the study: " + _few(sorted(mine - theirs)))
    if theirs - mine:
        details.append("missing: " + _few(sorted(theirs - mine)))
    if not details:
        details.append("same file names, different pixels")
    raise StudyError(
        f"cannot join study {study_name!r}: a different corpus. The study was created with "
        f"{stored.get('images')} images (fingerprint {stored.get('fingerprint')}); these {len(corpus.names)} "
        f"images give fingerprint {corpus.fingerprint} ({'; '.join(details)})"
    )


def _check_space(
    study_name: str, definition: StudyDefinition, space: SearchSpace | Mapping[str, Any] | str | Path
) -> None:
    stored = definition.space_obj.to_dict()
    mine = as_space(space).to_dict()
    if stored == mine:
        return
    diffs = [f"{key}: study {a!r}, given {b!r}" for key, a, b in _dict_differences(stored, mine)]
    raise StudyError(f"cannot join study {study_name!r}: a different search space ({'; '.join(diffs[:6])})")


def _check_evaluator(study_name: str, definition: StudyDefinition, mine: Mapping[str, Any]) -> None:
    stored = definition.evaluator
    diffs = [
        f"{key}: study {a!r}, this worker {b!r}"
        for key, a, b in _dict_differences(
            {k: stored.get(k) for k in ("metrics", "metric_versions")},
            {k: mine.get(k) for k in ("metrics", "metric_versions")},
        )
    ]
    if diffs:
        raise StudyError(
            f"cannot join study {study_name!r}: different metrics ({'; '.join(diffs[:6])}); install the same optimizer version"
        )


def _dict_differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            out.extend(_dict_differences(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _few(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
