"""What a study gives back: its best trials, Pareto front, presets, baseline and a table of its trials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PresetError
from ..jsonio import dumps, json_safe, number_from_json
from .records import (
    ATTR_AGGREGATES,
    ATTR_BPP,
    ATTR_QUALITY,
    ATTR_SETTINGS,
    ATTR_TOTAL_BYTES,
    BASELINE_ATTR,
    StudyDefinition,
    complete_trials,
    feasible_trials,
    is_feasible,
    pareto_trials,
    study_counts,
    trial_aggregates,
    trial_number,
    trial_points,
)
from .storage import redact_storage
from .tiers import build_preset

if TYPE_CHECKING:
    from collections.abc import Mapping

    import optuna
    import pandas as pd

    from .presets import Preset
    from .target import Target

__all__ = ["TuningResult"]


@dataclass
class TuningResult:
    """A finished (or resumed) study: its best trials, Pareto front, presets, baseline and trials table.

    ``presets`` is None when no trial met the target, and ``preset_error`` says why; ``baseline`` holds the
    bytes and quality of :func:`~optimizer.tuning.settings.baseline_settings` on the corpus when measured.
    """

    study: optuna.Study
    definition: StudyDefinition
    storage: str
    presets: Preset | None = None
    preset_error: str | None = None
    baseline: dict[str, Any] | None = None
    #: every combination of the search space was tried: more trials would only repeat measurements
    exhausted: bool = False

    @classmethod
    def of(
        cls,
        study: optuna.Study,
        definition: StudyDefinition,
        *,
        storage: str = "",
        tiers: Mapping[str, Target | str] | None = None,
    ) -> TuningResult:
        """The result of ``study`` as its trials stand now: presets built from them, the stored baseline."""
        result = cls(study=study, definition=definition, storage=redact_storage(storage))
        try:
            result.presets = build_preset(study, tiers=tiers, storage=result.storage or None)
        except PresetError as exc:
            result.preset_error = str(exc)
        result.baseline = study.user_attrs.get(BASELINE_ATTR)
        return result

    def savings(self) -> float | None:
        """Fractional byte saving of the default preset tier against the baseline as is (JPEG quality 85,
        4:2:0, optimised progressive), whatever quality each reaches; negative when the preset is larger."""
        if not self.presets or not self.presets.tiers or not self.baseline:
            return None
        return 1.0 - self.presets.default_tier.expected.total_bytes / float(self.baseline["total_bytes"])

    def equal_quality(self) -> dict[str, Any] | None:
        """The JPEG that reaches the default tier's aggregate quality (:mod:`optimizer.tuning.baseline`):
        its fractional ``jpeg_quality``, ``total_bytes`` and whether JPEG ``reached`` it at all."""
        if not self.presets or not self.presets.tiers or not self.baseline:
            return None
        equal = self.baseline.get("equal_quality")
        if not equal or number_from_json(equal["for_quality"]) != self.presets.default_tier.expected.quality:
            return None
        return dict(equal)

    def savings_at_equal_quality(self) -> float | None:
        """Fractional byte saving of the default preset tier against JPEG at the same aggregate quality
        (negative when the preset is larger); a lower bound when JPEG cannot reach that quality at all."""
        equal = self.equal_quality()
        if equal is None or not self.presets:
            return None
        return 1.0 - self.presets.default_tier.expected.total_bytes / float(equal["total_bytes"])

    def headline(self) -> str | None:
        """One sentence on the default tier against the baseline, at equal quality and as is."""
        saving, equal = self.savings_at_equal_quality(), self.equal_quality()
        raw = self.savings()
        if raw is None or not self.presets or not self.baseline:
            return None
        tier = self.presets.default_tier
        metric = self.definition.target_obj.metric
        how = self.definition.aggregate
        parts = []
        if saving is not None and equal is not None:
            need = f"quality {equal['jpeg_quality']:g}" if equal["reached"] else "more than quality 100"
            parts.append(
                f"{_relative(saving)} than JPEG at equal quality (JPEG needs {need}, "
                f"{int(equal['total_bytes']):,} bytes, for {how} {metric} {tier.expected.quality:.2f})"
            )
        parts.append(
            f"{_relative(raw)} than JPEG q85 (4:2:0, optimised progressive: {int(self.baseline['total_bytes']):,} "
            f"bytes at {how} {metric} {number_from_json(self.baseline['quality']):.2f})"
        )
        return f"{tier.name} ({tier.expected.total_bytes:,} bytes): " + "; ".join(parts)

    @property
    def study_name(self) -> str:
        return self.study.study_name

    @property
    def best_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Constrained: the smallest feasible trials first; tradeoff: the best values; pareto: the front."""
        mode = self.definition.mode
        if mode == "constrained":
            return sorted(feasible_trials(self.study), key=lambda t: t.user_attrs[ATTR_TOTAL_BYTES])[:5]
        if mode == "tradeoff":
            return sorted(complete_trials(self.study), key=lambda t: -float(t.values[0]))[:5]
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
                "bits_per_pixel": trial_number(t, ATTR_BPP) if ATTR_BPP in attrs else None,
                "quality": trial_number(t, ATTR_QUALITY) if ATTR_QUALITY in attrs else None,
                "feasible": is_feasible(t),
                "duration_s": t.duration.total_seconds() if t.duration else None,
            }
            if ATTR_AGGREGATES in attrs:
                for name, value in trial_aggregates(t).items():
                    row[f"agg_{name}"] = value
            rows.append(row)
        return pd.DataFrame(rows)

    def points_dataframe(self) -> pd.DataFrame:
        """One row per measured point: each complete trial's answer and its other complete probes, so the
        rate-quality curves of the settings tried. Columns as :meth:`trials_dataframe` (``state`` is the
        trial's) plus ``answer`` (the trial's result) and ``setting`` (the label of the point's settings)."""
        import pandas as pd

        rows = []
        target = self.definition.target_obj
        for t in self.study.get_trials(deepcopy=False):
            for point in trial_points(t):
                row: dict[str, Any] = {
                    "number": t.number,
                    "state": t.state.name,
                    "format": point.settings.codec,
                    "setting": point.settings.label(),
                    "answer": point.answer,
                    "total_bytes": point.total_bytes,
                    "bits_per_pixel": point.bits_per_pixel,
                    "quality": point.aggregates.get(target.metric, point.quality),
                    "feasible": t.state.name == "COMPLETE"
                    and target.is_met(point.aggregates.get(target.metric, point.quality)),
                }
                for name, value in point.aggregates.items():
                    row[f"agg_{name}"] = value
                rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """The study in plain JSON data: name, storage, definition, trial counts, best trial, presets,
        baseline and savings (non-finite numbers as strings, see :mod:`optimizer.jsonio`)."""
        counts = study_counts(self.study)
        best = self.best_trial
        data = {
            "study": self.study_name,
            "storage": self.storage,
            "definition": self.definition.to_dict(),
            "trials": {
                "finished": counts.finished,
                "complete": counts.complete,
                "pruned": counts.pruned,
                "failed": counts.failed,
                "feasible": len(feasible_trials(self.study)),
            },
            "best_trial": None
            if best is None
            else {
                "number": best.number,
                "settings": best.user_attrs.get(ATTR_SETTINGS),
                "total_bytes": best.user_attrs.get(ATTR_TOTAL_BYTES),
                "quality": trial_number(best, ATTR_QUALITY),
            },
            "presets": self.presets.to_dict() if self.presets is not None else None,
            "preset_error": self.preset_error,
            "baseline": self.baseline,
            "savings": self.savings(),
            "savings_at_equal_quality": self.savings_at_equal_quality(),
            "exhausted": self.exhausted,
        }
        safe: dict[str, Any] = json_safe(data)
        return safe

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """:meth:`to_dict` as JSON text, also written (atomically) to ``path`` when given."""
        from .._files import write_atomic

        text = dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_atomic(path, text + "\n")
        return text


def _relative(saving: float) -> str:
    """``24% smaller`` or ``12% larger``: the size of the difference, its direction in words."""
    return f"{abs(saving):.0%} {'smaller' if saving >= 0 else 'larger'}"
