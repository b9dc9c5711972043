"""Studies: the tuning options, creating or resuming a study, running its trials, and the ``tune`` API.

A study is an Optuna study whose definition (space, target, mode, aggregate, evaluator, corpus fingerprint,
trial budget: :class:`~optimizer.tuning.records.StudyDefinition`) is stored with it. Resuming or joining
with a different definition is refused with the list of what differs, so finished trials are never mixed
with trials of another experiment. Where studies live is :mod:`optimizer.tuning.storage`; what a trial
measures is :mod:`optimizer.tuning.objective`; several worker processes are :mod:`optimizer.tuning.workers`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._compat import renamed
from ..codecs import get_codec
from ..errors import EncodeError, InvalidParameterError, NoPresetError, StudyError
from ..evaluator import Evaluator
from ..imageio import Image, ImageSource
from ..jsonio import number_from_json
from ..statistics import Aggregate
from .baseline import equal_quality
from .config import DEFAULT_TRIALS, SAMPLERS, Sampler, TuneConfig, as_space
from .corpus import Corpus, load_corpus
from .objective import Mode, Objective, directions_for
from .records import (
    BASELINE_ATTR,
    DEFINITION_ATTR,
    PRUNE_ATTR,
    TIERS_ATTR,
    WARM_START_ATTR,
    StudyDefinition,
    check_records,
    finished_trials,
    stored_definition,
)
from .results import TuningResult
from .search import SettingsSearch, enqueue_next, settings_search
from .settings import baseline_settings
from .space import SearchSpace
from .storage import (
    default_storage,
    fail_orphaned_trials,
    is_database_server,
    reading_storage,
    redact_storage,
    resolve_storage,
    storage_location,
)
from .target import Target
from .warm_start import warm_start_hints

if TYPE_CHECKING:
    import optuna


__all__ = [
    "DEFAULT_TRIALS",
    "SAMPLERS",
    "PreparedStudy",
    "Sampler",
    "TuneConfig",
    "TuningResult",
    "load_study",
    "make_sampler",
    "open_stored_study",
    "open_study",
    "prepare_study",
    "run_study",
    "run_trials",
    "tune",
]


def make_sampler(
    name: str,
    mode: str,
    *,
    seed: int | None = None,
    n_startup_trials: int = 10,
    constant_liar: bool = False,
) -> optuna.samplers.BaseSampler:
    """TPE for one objective (with constraints in ``constrained`` mode); TPE or NSGA-II for several.

    Args:
        name: ``tpe``, ``nsga2`` (pareto mode only) or ``random``.
        mode: The study mode.
        seed: Seed for reproducible sampling.
        n_startup_trials: Random trials before TPE models the results.
        constant_liar: TPE treats trials running elsewhere as bad results, so workers sharing a study do
            not all sample the same promising region at once.

    Returns:
        An Optuna sampler.
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


# --------------------------------------------------------------------------------------------------
# Creating, resuming and opening studies


def open_study(
    definition: StudyDefinition,
    *,
    study_name: str,
    storage: Any = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    load_if_exists: bool = True,
) -> optuna.Study:
    """Create the study, or resume it when it exists and its stored definition matches.

    A storage that cannot be read (a corrupt file, a malformed record in the study) is a
    :class:`~optimizer.errors.StudyStorageError` naming the file or the URL.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    location = storage_location(storage if storage is not None else default_storage(study_name))
    resolved = resolve_storage(storage, study_name)
    directions = directions_for(definition.mode, definition.target_obj, time_objective=definition.time_objective)
    with reading_storage(location, server=is_database_server(storage)):
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
        except ValueError as exc:  # Optuna before 5.1: directions differ from the stored study
            if "direction" not in str(exc):
                raise
            raise StudyError(f"cannot resume study {study_name!r}: {exc}") from None
        existing = check_records(study)
    if existing is None:
        if study.trials:
            raise StudyError(f"study {study_name!r} exists but was not created by optimizer (no stored definition)")
        study.set_user_attr(DEFINITION_ATTR, definition.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objective_names(definition.mode, definition.target_obj, definition.time_objective))
    else:
        diff = existing.differences(definition)
        if diff:
            raise StudyError(
                f"study {study_name!r} was created with a different {', '.join(diff)}; "
                "use another --study name, or the same images and options to resume it"
            )
        if definition.n_trials is not None and existing.n_trials != definition.n_trials:
            # The budget is the one part a resume may change; workers read it from here.
            study.set_user_attr(DEFINITION_ATTR, {**study.user_attrs[DEFINITION_ATTR], "n_trials": definition.n_trials})
    return study


def objective_names(mode: str, target: Target, time_objective: bool = False) -> list[str]:
    """Names of a mode's objective values, as the Optuna dashboard shows them."""
    if mode == "constrained":
        return ["total_bytes"]
    if mode == "tradeoff":
        return ["quality_minus_lambda_bpp"]
    return ["total_bytes", f"{target.metric}_quality"] + (["encode_seconds"] if time_objective else [])


def open_stored_study(
    study_name: str,
    storage: Any = None,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> tuple[optuna.Study, StudyDefinition]:
    """Open an existing study and its stored definition (for workers, reports and presets).

    Every record of the study is read once here (:func:`~optimizer.tuning.records.check_records`): a
    storage that cannot be read, or a study whose definition or trials are malformed, is a
    :class:`~optimizer.errors.StudyStorageError` naming the file (or the URL) and the reason, before any
    work starts. A study that is not there is a :class:`~optimizer.errors.StudyError`.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage if storage is not None else default_storage(study_name)
    for prefix in ("sqlite:///", "journal:"):
        if isinstance(url, str) and url.startswith(prefix) and not Path(storage_location(url)).exists():
            raise StudyError(f"no study named {study_name!r}: {storage_location(url)} does not exist")
    location = storage_location(url)
    resolved = resolve_storage(
        url, study_name, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry
    )
    with reading_storage(location, server=is_database_server(url)):
        try:
            study = optuna.load_study(study_name=study_name, storage=resolved, sampler=sampler)
        except KeyError:
            raise StudyError(f"no study named {study_name!r} in {location}") from None
        definition = check_records(study)
    if definition is None:
        raise StudyError(f"study {study_name!r} in {location} was not created by optimizer (no stored definition)")
    return study, definition


def load_study(study_name: str, storage: str | None = None) -> TuningResult:
    """An existing study as :func:`tune` returns it: its trials, presets and baseline.

    Args:
        study_name: The study's name.
        storage: Its Optuna storage URL (None: ``sqlite:///studies/NAME.db``).

    Returns:
        The study's :class:`TuningResult` (``presets`` is None and ``preset_error`` says why when no trial
        met the target; ``baseline`` is None when it was never measured).
    """
    study, definition = open_stored_study(study_name, storage)
    url = storage if storage is not None else default_storage(study_name)
    return TuningResult.of(study, definition, storage=url)


# --------------------------------------------------------------------------------------------------
# Preparing and running


@dataclass
class PreparedStudy:
    """A created (or resumed) study with its stored definition, its objective and its storage URL."""

    study: optuna.Study
    definition: StudyDefinition
    objective: Objective
    storage: str
    tiers: Mapping[str, Target] = field(default_factory=dict)
    search: SettingsSearch | None = None

    @property
    def name(self) -> str:
        return self.study.study_name

    def result(self) -> TuningResult:
        """The study's :class:`TuningResult`, its baseline measured (once per study, and at the default
        tier's quality) if need be.

        A study in which no trial met the target still gives a result; ``presets`` is then None and
        ``preset_error`` says why.
        """
        self.baseline()
        result = TuningResult.of(self.study, self.definition, storage=self.storage, tiers=self.tiers)
        if result.presets is not None and result.presets.tiers:
            quality = result.presets.default_tier.expected.quality
            if math.isfinite(quality):
                result.baseline = self.baseline(at_quality=quality)
        result.exhausted = self.exhausted()
        return result

    def baseline(self, *, at_quality: float | None = None) -> dict[str, Any]:
        """Bytes and aggregate quality of the baseline encoding on the corpus, measured once and stored;
        with ``at_quality``, also the JPEG bytes at that aggregate (:mod:`optimizer.tuning.baseline`)."""
        stored: dict[str, Any] | None = self.study.user_attrs.get(BASELINE_ATTR)
        settings = baseline_settings()
        if stored is None or stored.get("settings") != settings.to_dict():
            stored = self.objective.measure_settings(settings)
            self.study.set_user_attr(BASELINE_ATTR, stored)
        if at_quality is not None:
            known = (stored.get("equal_quality") or {}).get("for_quality")
            if known is None or number_from_json(known) != at_quality:
                metric = self.definition.target_obj.metric
                stored = {**stored, "equal_quality": equal_quality(self.objective.meter, settings, at_quality, metric)}
                self.study.set_user_attr(BASELINE_ATTR, stored)
        return stored

    def exhausted(self) -> bool:
        """Whether every combination of the search space has been tried (more trials would repeat)."""
        if self.search is None:
            return False
        return self.search.next_params([t.params for t in self.study.get_trials(deepcopy=False)]) is None


def prepare_study(
    images: Iterable[ImageSource | Image] | str | Path,
    config: TuneConfig,
    *,
    evaluator: Evaluator | None = None,
    corpus: Corpus | None = None,
    default_storage_for: Callable[[str], str] = default_storage,
    constant_liar: bool = False,
) -> PreparedStudy:
    """Load the corpus, create or resume the study and store its definition: the first half of :func:`tune`.

    Worker coordinators use it to create a study that workers then join. ``default_storage_for(name)``
    gives the storage URL when ``config.storage`` is None. ``evaluator`` replaces the one the profile gives
    (it must compute the target's metric); ``corpus`` an already loaded corpus of ``images``.
    """
    goal = config.target
    if evaluator is None:
        evaluator = config.evaluator()
    elif config.profile is not None:
        raise InvalidParameterError("give either a profile or an evaluator, not both")
    else:
        goal.check_computed(evaluator.metric_names)
    search = config.space
    if corpus is None:
        corpus = load_corpus(images, widths=search.widths, reference_transform=search.reference_transform)
    definition = StudyDefinition(
        space=search.to_dict(),
        target=str(goal),
        mode=config.mode,
        aggregate=config.aggregate,
        tradeoff_lambda=config.tradeoff_lambda,
        time_objective=config.time_objective,
        evaluator=evaluator.describe(),
        corpus=corpus.describe(),
        n_trials=config.n_trials,
        library_versions={fmt: get_codec(fmt).library_versions() for fmt in search.formats},
    )
    prune_target = config.prune_target
    name = config.study_name or f"study-{corpus.fingerprint[:8]}-{search.fingerprint()[:6]}"
    storage_url = config.storage if config.storage is not None else default_storage_for(name)
    study = open_study(
        definition,
        study_name=name,
        storage=storage_url,
        sampler=make_sampler(config.sampler, config.mode, seed=config.seed, constant_liar=constant_liar),
    )
    # A process killed mid-trial left its trial running (SQLite has no heartbeats): fail and retry it.
    fail_orphaned_trials(study)
    # Workers that join the study read the pruning bar from here (it depends on the tiers, which the
    # stored definition leaves out so that a resume may change them).
    study.set_user_attr(PRUNE_ATTR, str(prune_target) if prune_target is not None else None)
    tier_targets = [t for t in config.tiers.values() if t != goal]
    study.set_user_attr(TIERS_ATTR, [str(t) for t in tier_targets])
    if config.warm_start is not None and not study.trials:
        source, source_definition = open_stored_study(config.warm_start, config.warm_start_storage)
        hints = warm_start_hints(config.warm_start, source, source_definition, config.space)
        study.set_user_attr(WARM_START_ATTR, hints)
    objective = Objective.from_definition(
        definition, corpus, evaluator=evaluator, prune_target=prune_target, tier_targets=tier_targets
    )
    return PreparedStudy(
        study=study,
        definition=definition,
        objective=objective,
        storage=str(storage_url),
        tiers=config.tiers,
        search=settings_search(study, definition, config.seed),
    )


def run_trials(
    study: optuna.Study,
    objective: Objective,
    *,
    n_trials: int,
    timeout: float | None = None,
    n_jobs: int = 1,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    search: SettingsSearch | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run trials until the study holds ``n_trials`` finished ones, ``timeout`` passes, or ``search`` has
    tried every combination of the space (more trials would only repeat measurements); returns how many ran.

    With a ``search`` (the constrained and pareto modes), each trial's settings are queued by it
    (:mod:`optimizer.tuning.search`); otherwise the study's sampler chooses them. Encoder failures mark a
    trial failed with the reason and the study goes on; a round in which every trial fails stops with
    :class:`StudyError` rather than looping.
    """
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if n_jobs < 1:
        raise InvalidParameterError(f"n_jobs must be >= 1, got {n_jobs}")
    objective.scorers  # noqa: B018 - prepare references before the clock starts (errors surface now)
    deadline = clock() + timeout if timeout else None
    budget = MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    definition = stored_definition(study)
    ran = 0
    while True:
        done = len(finished_trials(study))
        remaining = n_trials - done
        if remaining <= 0:
            break
        left = deadline - clock() if deadline else None
        if left is not None and left <= 0:
            break
        batch = remaining if search is None else min(remaining, n_jobs)
        if search is not None and definition is not None:
            waiting = _queued(study)  # retries of trials whose process died run first
            batch = min(batch, waiting) if waiting else enqueue_next(study, search, definition, batch)
            if batch == 0:
                break  # every combination has been tried
        before = done
        total_before = len(study.trials)
        study.optimize(
            objective,
            n_trials=batch,
            timeout=left,
            n_jobs=min(n_jobs, batch),
            catch=(EncodeError,),
            callbacks=[budget, *callbacks],
            gc_after_trial=False,
            show_progress_bar=False,
        )
        started = len(study.trials) - total_before
        ran += started
        if started == 0 and search is None:
            break  # the timeout ran out before another trial could start
        if len(finished_trials(study)) == before and not _queued(study):
            failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if search is not None and failed and len(failed) < len(study.trials):
                continue  # these settings failed to encode; the search moves on to others
            reason = failed[-1].user_attrs.get("error") if failed else "unknown"
            raise StudyError(f"every trial of the last round failed; last error: {reason}")
    return ran


def _queued(study: optuna.Study) -> int:
    """How many trials wait in the study's queue."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def run_study(
    images: Iterable[ImageSource | Image] | str | Path,
    config: TuneConfig,
    *,
    evaluator: Evaluator | None = None,
    corpus: Corpus | None = None,
    timeout: float | None = None,
    n_jobs: int = 1,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> TuningResult:
    """:func:`tune` for a ready :class:`TuneConfig` (what the CLI calls)."""
    prepared = prepare_study(images, config, evaluator=evaluator, corpus=corpus)
    run_trials(
        prepared.study,
        prepared.objective,
        n_trials=config.n_trials,
        timeout=timeout,
        n_jobs=n_jobs,
        callbacks=callbacks,
        search=prepared.search,
    )
    return prepared.result()


def tune(
    images: Iterable[ImageSource | Image] | str | Path,
    *,
    space: SearchSpace | Mapping[str, Any] | str | Path | None = None,
    formats: Sequence[str] | str | None = None,
    quality: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
    target: Target | str = "ssimulacra2:80",
    mode: Mode = "constrained",
    aggregate: Aggregate = "p10",
    profile: str | None = None,
    evaluator: Evaluator | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    trials: int = DEFAULT_TRIALS,
    timeout: float | None = None,
    jobs: int = 1,
    seed: int | None = None,
    sampler: Sampler = "tpe",
    tradeoff_lambda: float = 0.05,
    time_objective: bool = False,
    prune: bool = True,
    tiers: Mapping[str, Target | str] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    corpus: Corpus | None = None,
    warm_start: str | None = None,
    warm_start_storage: str | None = None,
    require_preset: bool = True,
    n_trials: int | None = None,
    n_jobs: int | None = None,
) -> TuningResult:
    """Search encoder settings for ``images`` and return the study, its best trials and presets.

    The keywords are the ``optimizer tune`` options with the same names and defaults.

    Args:
        images: Image files, folders, in-memory images, or one folder path.
        space: The search space (see :class:`SearchSpace`; default: every installed format).
        formats: Search only these formats (``["avif", "webp"]`` or ``"avif,webp"``), as ``--formats``.
        quality: A quality range ``(low, high)`` on every format's axis, or one per format, as ``--quality``.
        target: The quality bar, ``METRIC:VALUE``.
        mode: ``constrained``, ``tradeoff`` or ``pareto`` (see :class:`TuneConfig`).
        aggregate: ``mean``, ``p10`` (the worst-10 % edge) or ``worst`` over the corpus.
        profile: Evaluator profile (``default`` when neither it nor ``evaluator`` is given).
        evaluator: An :class:`Evaluator` to score with instead of a profile's.
        storage: Optuna storage URL; None stores the study in ``studies/NAME.db`` (SQLite).
        study_name: The study's name; an existing study of that name and definition is resumed.
        trials: The study's total budget of finished (complete or pruned) trials: resuming a study that
            holds 30 of 50 runs 20 more.
        timeout: Stop starting trials after this many seconds.
        jobs: Trials run in threads of this process.
        seed: Seed for a reproducible search.
        sampler: ``tpe``, ``nsga2`` (pareto mode) or ``random``.
        tradeoff_lambda: Trade-off mode: normalised quality lost per bit per pixel.
        time_objective: Pareto mode: encode time as a third objective.
        prune: Stop constrained trials whose target is out of reach.
        tiers: Extra preset tiers (``{"high": "ssimulacra2:90"}``), constrained mode.
        callbacks: Optuna callbacks called after each trial.
        corpus: An already loaded :class:`Corpus` of ``images``.
        warm_start: Another study's name, as ``--warm-start``: a new study tries its best settings first and
            starts each format's quality search where that study found its answer.
        warm_start_storage: That study's storage URL (None: ``studies/NAME.db``).
        require_preset: Raise :class:`NoPresetError` (exit code 1 on the command line) when no trial met
            the target; False returns the result with ``presets`` None and ``preset_error`` saying why.
        n_trials: Deprecated spelling of ``trials``.
        n_jobs: Deprecated spelling of ``jobs``.

    Returns:
        The :class:`TuningResult`: study, presets and the baseline.

    Raises:
        NoPresetError: No trial met the target (with ``require_preset``); its ``result`` is the study's.
    """
    trials = renamed(trials, n_trials, old="n_trials", new="trials", default=DEFAULT_TRIALS)
    jobs = renamed(jobs, n_jobs, old="n_jobs", new="jobs", default=1)
    searched = as_space(space)
    if formats is not None or quality is not None:
        names = [f.strip() for f in formats.split(",") if f.strip()] if isinstance(formats, str) else formats
        searched = searched.with_overrides(formats=names or None, quality=quality)
    config = TuneConfig(
        space=searched,
        target=Target.parse(target),
        mode=mode,
        aggregate=aggregate,
        profile=profile,
        tradeoff_lambda=tradeoff_lambda,
        time_objective=time_objective,
        prune=prune,
        tiers={str(k): Target.parse(v) for k, v in (tiers or {}).items()},
        n_trials=trials,
        sampler=sampler,
        seed=seed,
        storage=storage,
        study_name=study_name,
        warm_start=warm_start,
        warm_start_storage=warm_start_storage,
    )
    result = run_study(
        images, config, evaluator=evaluator, corpus=corpus, timeout=timeout, n_jobs=jobs, callbacks=callbacks
    )
    if require_preset and (result.presets is None or not result.presets.tiers):
        reason = result.preset_error or "no trial met the target"
        raise NoPresetError(f"no preset: {reason}", result=result)
    return result
