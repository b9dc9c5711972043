"""Warm starts (``tune --warm-start STUDY``): what another study teaches a new one, as hints the new study
stores and its search (:mod:`optimizer.tuning.search`) and objective read: that study's best settings, carried
into the new space's parameters whatever that study searched, and where each format's quality answer was."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .records import StudyDefinition, is_feasible, trial_settings
from .search import SettingsSearch, ranked_trials
from .space import SearchSpace

if TYPE_CHECKING:
    import optuna

__all__ = ["warm_start_hints"]


def warm_start_hints(
    study_name: str, source: optuna.Study, definition: StudyDefinition, space: SearchSpace
) -> dict[str, Any]:
    """What another study teaches a new one: its best settings (those this space allows), tried first, and
    per format where its quality answer was.

    Args:
        study_name: The other study's name (recorded as the hints' source).
        source: The other study, opened.
        definition: Its stored definition.
        space: The new study's search space.

    Returns:
        ``{"source", "first", "starts"}``: JSON-ready, stored in the new study's user attributes.
    """
    search = SettingsSearch(space)
    ranked = ranked_trials(source, definition.mode, definition.target_obj)
    first: list[dict[str, Any]] = []
    for trial in ranked:
        settings = trial_settings(trial)
        params = space.params_for(settings) if settings is not None else None
        if params is not None and search.accepts(params) and params not in first:
            first.append(params)
        if len(first) == 3:
            break
    starts: dict[str, dict[str, Any]] = {}
    for trial in ranked:  # best first: each format starts where its best feasible answer was
        settings = trial_settings(trial) if is_feasible(trial) else None
        if settings is None or settings.codec in starts:
            continue
        axis = space.quality_axis(settings.codec) if settings.codec in space.formats else None
        if axis is None or axis.param not in settings.params:
            continue
        starts[settings.codec] = {"value": settings.params[axis.param], "slope": None}
    return {"source": study_name, "first": first, "starts": starts}
