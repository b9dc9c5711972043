"""Studies: storage, the stored study definition, resuming, samplers and the ``tune`` API.

Default storage is one SQLite file per study under ``studies/`` (``OPTIMIZER_STUDIES_DIR`` moves it); any
Optuna storage URL works too (``postgresql://...``), and ``journal:PATH`` selects Optuna's JournalStorage
file backend, which is safe for several processes on one machine.

Storages meant for several worker processes (a database server, a journal file) record a heartbeat for
every running trial; a trial whose worker stopped beating for the grace period is marked failed and
retried with the same parameters (up to ``max_retry`` times). ``OPTIMIZER_HEARTBEAT_INTERVAL``,
``OPTIMIZER_HEARTBEAT_GRACE`` and ``OPTIMIZER_MAX_RETRY`` change the defaults (10 s, 60 s, 3).

The study definition (space, target, mode, aggregate, evaluator profile, corpus fingerprint, trial budget)
is stored with the study. Resuming or joining with a different definition is refused with the list of
what differs, so finished trials are never mixed with trials of another experiment.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..codecs import get_codec
from ..errors import EncodeError, InvalidParameterError, StudyError
from ..evaluator import Evaluator
from ..imageio import Image, ImageSource
from .corpus import Corpus, load_corpus
from .objective import (
    ATTR_AGGREGATES,
    ATTR_BPP,
    ATTR_QUALITY,
    ATTR_SETTINGS,
    ATTR_TOTAL_BYTES,
    MODES,
    Objective,
    directions_for,
    is_feasible,
)
from .space import SearchSpace
from .target import AGGREGATES, Target

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from .presets import Preset

__all__ = [
    "DEFINITION_ATTR",
    "HEARTBEAT_ATTR",
    "PRUNE_ATTR",
    "PreparedStudy",
    "StudyDefinition",
    "TuningResult",
    "complete_trials",
    "default_journal_storage",
    "default_storage",
    "feasible_trials",
    "finished_trials",
    "make_sampler",
    "open_study",
    "pareto_trials",
    "prepare_study",
    "redact_storage",
    "resolve_storage",
    "tune",
]

DEFINITION_ATTR = "optimizer_definition"
BASELINE_ATTR = "optimizer_baseline"
#: study attribute holding the target below which trials are pruned (None: no pruning)
PRUNE_ATTR = "optimizer_prune_target"
#: what savings are reported against: the JPEG most pipelines ship
BASELINE_SETTINGS = {"codec": "jpeg", "params": {"quality": 85, "subsampling": "4:2:0"}}
#: trial system attribute where the journal storage records a running trial's last heartbeat (epoch seconds)
HEARTBEAT_ATTR = "optimizer:heartbeat"
DEFAULT_HEARTBEAT_INTERVAL = 10
DEFAULT_GRACE_PERIOD = 60
DEFAULT_MAX_RETRY = 3
SAMPLERS = ("tpe", "nsga2", "random")
_COMPARED = ("space", "target", "mode", "aggregate", "tradeoff_lambda", "time_objective", "evaluator", "corpus")


def studies_dir() -> Path:
    return Path(os.environ.get("OPTIMIZER_STUDIES_DIR", "studies"))


def _check_study_name(study_name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}", study_name):
        raise InvalidParameterError(
            f"study names use letters, digits, '.', '_' and '-' (up to 121 characters), got {study_name!r}"
        )


def default_storage(study_name: str) -> str:
    """``sqlite:///studies/<name>.db`` (the folder is created)."""
    _check_study_name(study_name)
    folder = studies_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (study_name + '.db')}"


def default_journal_storage(study_name: str) -> str:
    """``journal:studies/<name>.journal``: the default when several local worker processes share a study."""
    _check_study_name(study_name)
    return f"journal:{studies_dir() / (study_name + '.journal')}"


def redact_storage(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (for presets and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _env_int(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameterError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise InvalidParameterError(f"{name} must be >= {minimum}, got {value}")
    return value


def resolve_storage(
    storage: str | optuna.storages.BaseStorage | None,
    study_name: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> Any:
    """An Optuna storage object or URL for ``storage`` (None: the default SQLite file).

    Database servers and ``journal:PATH`` get heartbeats (``heartbeat_interval`` seconds, a running trial
    is failed after ``grace_period`` seconds without one) and retry such failed trials up to ``max_retry``
    times; the defaults come from ``OPTIMIZER_HEARTBEAT_INTERVAL``, ``OPTIMIZER_HEARTBEAT_GRACE`` and
    ``OPTIMIZER_MAX_RETRY``. SQLite is the single-process default and has none.
    """
    import optuna

    if storage is None:
        storage = default_storage(study_name)
    if not isinstance(storage, str):
        return storage
    if storage.startswith("sqlite:"):
        _make_sqlite_folder(storage)
        # A generous busy timeout: several threads (--jobs) write to one SQLite file.
        return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
    interval = heartbeat_interval or _env_int("OPTIMIZER_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL, 1)
    grace = grace_period or _env_int("OPTIMIZER_HEARTBEAT_GRACE", max(DEFAULT_GRACE_PERIOD, 3 * interval), 1)
    if grace <= interval:
        raise InvalidParameterError(
            f"the heartbeat grace period must exceed the heartbeat interval, got grace {grace} s and interval {interval} s"
        )
    retries = max_retry if max_retry is not None else _env_int("OPTIMIZER_MAX_RETRY", DEFAULT_MAX_RETRY, 0)
    retry = _retry_callback(retries)
    if storage.startswith("journal:"):
        from .workers import HeartbeatJournalStorage, journal_backend

        path = Path(storage.removeprefix("journal:"))
        if not path.name:
            raise InvalidParameterError(f"journal storage needs a file path (journal:PATH), got {storage!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(journal_backend(path), interval, grace, retry)
    from .workers import HeartbeatRDBStorage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return HeartbeatRDBStorage(
            storage,
            heartbeat_interval=interval,
            grace_period=grace,
            engine_kwargs={"pool_pre_ping": True},
            **_retry_keyword(retry),
        )


def _make_sqlite_folder(url: str) -> None:
    """Create the folder of a ``sqlite:///path/file.db`` URL (SQLite creates the file, not its folder)."""
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    if url.startswith("sqlite:///") and path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _retry_callback(max_retry: int) -> Any:
    """Optuna's retry callback for heartbeat-stale trials (renamed in Optuna 4.9)."""
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(max_retry=max_retry)


def _retry_keyword(callback: Any) -> dict[str, Any]:
    import inspect

    import optuna

    names = inspect.signature(optuna.storages.RDBStorage).parameters
    key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in names else "failed_trial_callback"
    return {key: callback}


@dataclass(frozen=True)
class StudyDefinition:
    """What a study optimises; stored with the study and compared when resuming or joining."""

    space: dict[str, Any]
    target: str
    mode: str
    aggregate: str
    tradeoff_lambda: float
    time_objective: bool
    evaluator: dict[str, Any]
    corpus: dict[str, Any]
    n_trials: int | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    optimizer_version: str = __version__
    library_versions: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "target": self.target,
            "mode": self.mode,
            "aggregate": self.aggregate,
            "tradeoff_lambda": self.tradeoff_lambda,
            "time_objective": self.time_objective,
            "evaluator": self.evaluator,
            "corpus": self.corpus,
            "n_trials": self.n_trials,
            "created": self.created,
            "optimizer_version": self.optimizer_version,
            "library_versions": self.library_versions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyDefinition:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def comparable(self) -> dict[str, Any]:
        """The parts that must match for trials to be comparable (names of corpus files excluded)."""
        data = self.to_dict()
        out = {k: data[k] for k in _COMPARED}
        out["corpus"] = {"fingerprint": self.corpus.get("fingerprint"), "items": self.corpus.get("items")}
        out["evaluator"] = {k: self.evaluator.get(k) for k in ("weights", "metrics", "metric_versions")}
        return out

    def differences(self, other: StudyDefinition) -> list[str]:
        mine, theirs = self.comparable(), other.comparable()
        return [k for k in _COMPARED if mine[k] != theirs[k]]

    @property
    def space_obj(self) -> SearchSpace:
        return SearchSpace.from_mapping(self.space)

    @property
    def target_obj(self) -> Target:
        return Target.parse(self.target)

    def evaluator_obj(self, device: str | None = None) -> Evaluator:
        return Evaluator(weights=self.evaluator["weights"], metrics=self.evaluator["metrics"], device=device)


def make_sampler(
    name: str,
    mode: str,
    *,
    seed: int | None = None,
    n_startup_trials: int = 10,
    constant_liar: bool = False,
) -> optuna.samplers.BaseSampler:
    """TPE for one objective (with constraints in ``constrained`` mode); TPE or NSGA-II for several.

    ``constant_liar`` makes TPE treat trials running elsewhere as bad results, so workers sharing a study
    do not all sample the same promising region at once.
    """
    import optuna

    name = name.lower()
    if name not in SAMPLERS:
        raise InvalidParameterError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,
                n_startup_trials=n_startup_trials,
                constant_liar=constant_liar,
            )
        if name == "nsga2":
            if mode != "pareto":
                raise InvalidParameterError("the nsga2 sampler is for the pareto mode; use tpe otherwise")
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)


def open_study(
    definition: StudyDefinition,
    *,
    study_name: str,
    storage: Any = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    load_if_exists: bool = True,
) -> optuna.Study:
    """Create the study, or resume it when it exists and its stored definition matches."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    resolved = resolve_storage(storage, study_name)
    directions = directions_for(definition.mode, definition.target_obj, time_objective=definition.time_objective)
    try:
        study = optuna.create_study(
            storage=resolved,
            study_name=study_name,
            directions=directions,
            sampler=sampler,
            load_if_exists=load_if_exists,
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(f"study {study_name!r} already exists in {redact_storage(str(storage))}") from None
    except ValueError as exc:  # directions differ from the stored study
        raise StudyError(f"cannot resume study {study_name!r}: {exc}") from None
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        if study.trials:
            raise StudyError(f"study {study_name!r} exists but was not created by optimizer (no stored definition)")
        study.set_user_attr(DEFINITION_ATTR, definition.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objective_names(definition.mode, definition.target_obj, definition.time_objective))
    else:
        existing = StudyDefinition.from_dict(stored)
        diff = existing.differences(definition)
        if diff:
            raise StudyError(
                f"study {study_name!r} was created with a different {', '.join(diff)}; "
                "use another --study name, or the same images and options to resume it"
            )
        if definition.n_trials is not None and existing.n_trials != definition.n_trials:
            # The budget is the one part a resume may change; workers read it from here.
            study.set_user_attr(DEFINITION_ATTR, {**stored, "n_trials": definition.n_trials})
    return study


def objective_names(mode: str, target: Target, time_objective: bool = False) -> list[str]:
    """Names of a mode's objective values, as the Optuna dashboard shows them."""
    if mode == "constrained":
        return ["total_bytes"]
    if mode == "tradeoff":
        return ["quality_minus_lambda_bpp"]
    return ["total_bytes", f"{target.metric}_quality"] + (["encode_seconds"] if time_objective else [])


def load_study(
    study_name: str,
    storage: Any = None,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> tuple[optuna.Study, StudyDefinition]:
    """Open an existing study and its stored definition (for workers, reports and presets)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage if storage is not None else default_storage(study_name)
    for prefix in ("sqlite:///", "journal:"):
        if isinstance(url, str) and url.startswith(prefix) and not Path(url.removeprefix(prefix)).exists():
            raise StudyError(f"no study named {study_name!r}: {url.removeprefix(prefix)} does not exist")
    resolved = resolve_storage(
        url, study_name, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry
    )
    try:
        study = optuna.load_study(study_name=study_name, storage=resolved, sampler=sampler)
    except KeyError:
        raise StudyError(
            f"no study named {study_name!r} in {redact_storage(str(storage or default_storage(study_name)))}"
        ) from None
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        raise StudyError(f"study {study_name!r} was not created by optimizer (no stored definition)")
    return study, StudyDefinition.from_dict(stored)


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete and pruned trials (the ones that count towards the budget)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials (not pruned, failed or running), in trial order."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials whose aggregate quality meets the study target."""
    return [t for t in complete_trials(study) if is_feasible(t)]


def pareto_trials(study: optuna.Study, target: Target) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated complete trials on (total bytes, aggregate quality in ``target``'s direction), by
    increasing bytes."""
    done = [t for t in complete_trials(study) if ATTR_QUALITY in t.user_attrs]
    sign = 1.0 if target.higher_is_better else -1.0
    points = sorted(done, key=lambda t: (t.user_attrs[ATTR_TOTAL_BYTES], -sign * t.user_attrs[ATTR_QUALITY]))
    front, best = [], -math.inf
    for t in points:
        q = sign * float(t.user_attrs[ATTR_QUALITY])
        if q > best:
            front.append(t)
            best = q
    return front


@dataclass
class TuningResult:
    """A finished (or resumed) study: its best trials, Pareto front, presets and trials table."""

    study: optuna.Study
    definition: StudyDefinition
    storage: str
    presets: Preset | None = None
    preset_error: str | None = None
    baseline: dict[str, Any] | None = None

    def savings(self) -> float | None:
        """Fractional byte saving of the default preset tier against the baseline (JPEG q85 4:2:0)."""
        if not self.presets or not self.baseline:
            return None
        return 1.0 - self.presets.default_tier.expected.total_bytes / self.baseline["total_bytes"]

    @property
    def study_name(self) -> str:
        return self.study.study_name

    @property
    def best_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Constrained: the smallest feasible trial first; tradeoff: the best value; pareto: the front."""
        mode = self.definition.mode
        if mode == "constrained":
            return sorted(feasible_trials(self.study), key=lambda t: t.user_attrs[ATTR_TOTAL_BYTES])[:5]
        if mode == "tradeoff":
            return sorted(complete_trials(self.study), key=lambda t: -t.value)[:5]  # type: ignore[operator]
        return self.pareto_front

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        best = self.best_trials
        return best[0] if best else None

    @property
    def pareto_front(self) -> list[optuna.trial.FrozenTrial]:
        """Non-dominated trials on (bytes, quality) among complete trials, by increasing bytes."""
        return pareto_trials(self.study, self.definition.target_obj)

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial: number, state, settings, bytes, bits per pixel, quality, feasibility, aggregates."""
        import pandas as pd

        rows = []
        for t in self.study.get_trials(deepcopy=False):
            attrs = t.user_attrs
            settings = attrs.get(ATTR_SETTINGS, {})
            row: dict[str, Any] = {
                "number": t.number,
                "state": t.state.name,
                "format": settings.get("codec"),
                "params": settings.get("params"),
                "filter": (settings.get("transform") or {}).get("filter"),
                "sharpen": (settings.get("transform") or {}).get("sharpen_amount"),
                "total_bytes": attrs.get(ATTR_TOTAL_BYTES),
                "bits_per_pixel": attrs.get(ATTR_BPP),
                "quality": attrs.get(ATTR_QUALITY),
                "feasible": is_feasible(t),
                "duration_s": t.duration.total_seconds() if t.duration else None,
            }
            for name, value in (attrs.get(ATTR_AGGREGATES) or {}).items():
                row[f"agg_{name}"] = value
            rows.append(row)
        return pd.DataFrame(rows)


def tune(
    images: Iterable[ImageSource | Image] | str | Path,
    *,
    space: SearchSpace | Mapping[str, Any] | str | Path | None = None,
    target: Target | str = "ssimulacra2:80",
    mode: str = "constrained",
    aggregate: str = "p10",
    profile: str | None = None,
    evaluator: Evaluator | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int = 50,
    timeout: float | None = None,
    n_jobs: int = 1,
    seed: int | None = None,
    sampler: str = "tpe",
    tradeoff_lambda: float = 0.05,
    time_objective: bool = False,
    prune: bool = True,
    tiers: Mapping[str, Target | str] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    corpus: Corpus | None = None,
) -> TuningResult:
    """Search encoder settings for ``images`` and return the study, its best trials and presets.

    ``n_trials`` is the study's total budget of finished (complete or pruned) trials: resuming a study that
    already has 30 of 50 runs 20 more. ``n_jobs`` runs trials in threads on this machine.
    """
    if n_jobs < 1:
        raise InvalidParameterError(f"n_jobs must be >= 1, got {n_jobs}")
    prepared = prepare_study(
        images,
        space=space,
        target=target,
        mode=mode,
        aggregate=aggregate,
        profile=profile,
        evaluator=evaluator,
        storage=storage,
        study_name=study_name,
        n_trials=n_trials,
        seed=seed,
        sampler=sampler,
        tradeoff_lambda=tradeoff_lambda,
        time_objective=time_objective,
        prune=prune,
        corpus=corpus,
        tiers=tiers,
    )
    run_trials(
        prepared.study, prepared.objective, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs, callbacks=callbacks
    )
    return prepared.result(tiers)


@dataclass
class PreparedStudy:
    """A created (or resumed) study with its stored definition, its objective and its storage URL."""

    study: optuna.Study
    definition: StudyDefinition
    objective: Objective
    storage: str

    @property
    def name(self) -> str:
        return self.study.study_name

    def result(self, tiers: Mapping[str, Target | str] | None = None) -> TuningResult:
        """The study's :class:`TuningResult`: presets built from the trials it holds now, and the baseline.

        A study in which no trial met the target still gives a result; ``presets`` is then None and
        ``preset_error`` says why.
        """
        from ..errors import PresetError
        from .presets import build_preset

        result = TuningResult(study=self.study, definition=self.definition, storage=redact_storage(self.storage))
        try:
            result.presets = build_preset(self.study, tiers=tiers, storage=result.storage)
        except PresetError as exc:
            result.preset_error = str(exc)
        result.baseline = self.baseline()
        return result

    def baseline(self) -> dict[str, Any]:
        """Bytes and aggregate quality of JPEG q85 4:2:0 on the corpus, measured once and stored."""
        stored = self.study.user_attrs.get(BASELINE_ATTR)
        if stored is None:
            stored = self.objective.measure_settings(BASELINE_SETTINGS)
            self.study.set_user_attr(BASELINE_ATTR, stored)
        return stored


def prepare_study(
    images: Iterable[ImageSource | Image] | str | Path,
    *,
    space: SearchSpace | Mapping[str, Any] | str | Path | None = None,
    target: Target | str = "ssimulacra2:80",
    mode: str = "constrained",
    aggregate: str = "p10",
    profile: str | None = None,
    evaluator: Evaluator | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int = 50,
    seed: int | None = None,
    sampler: str = "tpe",
    tradeoff_lambda: float = 0.05,
    time_objective: bool = False,
    prune: bool = True,
    corpus: Corpus | None = None,
    default_storage_for: Callable[[str], str] = default_storage,
    constant_liar: bool = False,
    tiers: Mapping[str, Target | str] | None = None,
) -> PreparedStudy:
    """Validate the options, load the corpus, create or resume the study and store its definition.

    The first half of :func:`tune`; worker coordinators use it to create a study that workers then join.
    ``default_storage_for(name)`` gives the storage URL when ``storage`` is None.
    """
    if mode not in MODES:
        raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if aggregate not in AGGREGATES:
        raise InvalidParameterError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if n_trials < 1:
        raise InvalidParameterError(f"n_trials must be >= 1, got {n_trials}")
    search = _as_space(space)
    goal = Target.parse(target)
    if evaluator is None:
        evaluator = Evaluator(profile=profile or "default", metrics=goal.metrics_needed or None)
    elif profile is not None:
        raise InvalidParameterError("give either a profile or an evaluator, not both")
    else:
        goal.check_computed(evaluator.metric_names)
    if corpus is None:
        corpus = load_corpus(images, widths=search.widths, reference_transform=search.reference_transform)
    definition = StudyDefinition(
        space=search.to_dict(),
        target=str(goal),
        mode=mode,
        aggregate=aggregate,
        tradeoff_lambda=tradeoff_lambda,
        time_objective=time_objective,
        evaluator=evaluator.describe(),
        corpus=corpus.describe(),
        n_trials=n_trials,
        library_versions={fmt: get_codec(fmt).library_versions() for fmt in search.formats},
    )
    prune_target = _prune_target(goal, tiers) if prune else None
    name = study_name or f"study-{corpus.fingerprint[:8]}-{search.fingerprint()[:6]}"
    storage_url = storage if storage is not None else default_storage_for(name)
    study = open_study(
        definition,
        study_name=name,
        storage=storage_url,
        sampler=make_sampler(sampler, mode, seed=seed, constant_liar=constant_liar),
    )
    # Workers that join the study read the pruning bar from here (it depends on the tiers, which the
    # stored definition leaves out so that a resume may change them).
    study.set_user_attr(PRUNE_ATTR, str(prune_target) if prune_target is not None else None)
    objective = Objective(
        corpus,
        search,
        goal,
        evaluator,
        mode=mode,
        aggregate_by=aggregate,
        tradeoff_lambda=tradeoff_lambda,
        time_objective=time_objective,
        prune=prune_target is not None,
        prune_target=prune_target,
    )
    return PreparedStudy(study=study, definition=definition, objective=objective, storage=str(storage_url))


def _prune_target(goal: Target, tiers: Mapping[str, Target | str] | None) -> Target | None:
    """The bar below which a trial may be pruned: the loosest of the study target and the extra tiers.

    Extra tiers are chosen from complete trials, so a trial pruned for missing the study target could have
    served a looser tier. With a tier on another metric, nothing can be pruned safely (None).
    """
    targets = [goal, *(Target.parse(t) for t in (tiers or {}).values())]
    if any(t.metric != goal.metric for t in targets):
        return None
    return min(targets, key=lambda t: t.value if t.higher_is_better else -t.value)


def run_trials(
    study: optuna.Study,
    objective: Objective,
    *,
    n_trials: int,
    timeout: float | None = None,
    n_jobs: int = 1,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> int:
    """Run trials until the study holds ``n_trials`` finished ones (or ``timeout``); returns how many ran.

    Encoder failures mark a trial failed with the reason and the study goes on; a round in which every
    trial fails stops with :class:`StudyError` rather than looping.
    """
    import time

    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    objective.scorers  # noqa: B018 - prepare references before the clock starts (errors surface now)
    deadline = time.monotonic() + timeout if timeout else None
    budget = MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    ran = 0
    while True:
        done = len(finished_trials(study))
        remaining = n_trials - done
        if remaining <= 0:
            break
        left = deadline - time.monotonic() if deadline else None
        if left is not None and left <= 0:
            break
        before = done
        total_before = len(study.trials)
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=left,
            n_jobs=n_jobs,
            catch=(EncodeError,),
            callbacks=[budget, *callbacks],
            gc_after_trial=False,
            show_progress_bar=False,
        )
        started = len(study.trials) - total_before
        ran += started
        if started == 0:
            break  # the timeout ran out before another trial could start
        if len(finished_trials(study)) == before:
            failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            reason = failed[-1].user_attrs.get("error") if failed else "unknown"
            raise StudyError(f"every trial of the last round failed; last error: {reason}")
    return ran


def _as_space(space: SearchSpace | Mapping[str, Any] | str | Path | None) -> SearchSpace:
    if space is None:
        return SearchSpace()
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        return SearchSpace.from_mapping(space)
    return SearchSpace.from_file(space)
