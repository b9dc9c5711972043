"""The CI quality gate: quality and size budgets over a folder of processed images.

A budget file (TOML) lists what a build must hold; every key but ``metric`` and one limit is optional::

    profile = "default"        # composite profile (the ``--profile`` flag overrides it)
    allow_missing = false      # see below (``--allow-missing`` sets it)

    [[budget]]
    metric = "composite"       # "composite", any registered metric, "bytes" or "bits_per_pixel"
    stat = "p10"               # mean | median | p10 | p90 | min | max | worst (| total, bytes only)
    min = 0.85                 # and/or max = ...
    name = "composite floor"   # optional label (JUnit test case name)

    [[budget]]
    metric = "lpips"
    stat = "max"
    max = 0.2

    [[budget]]
    metric = "bytes"           # stat defaults to "total": the processed bytes of all images
    max_ratio = 0.6            # of the originals' bytes (or max = 5_000_000)

Statistics are taken over the scored pairs in the metric's own units by :mod:`optimizer.statistics`,
the same module the batch summary, the monitor and tuning use, so a name means the same everywhere.
Quantiles follow the direction: ``p10`` is the worst-10 % edge (the 10th percentile of a score, the 90th
of a distance, bytes or bits per pixel), ``p90`` the best-10 % edge; ``worst`` is the minimum of a score
and the maximum of a distance; ``min`` and ``max`` are plain numeric. ``mean`` averages the finite values
(an identical pair's infinite PSNR carries no number). ``bytes``
accepts every statistic over per-image sizes plus ``total``; with ``max_ratio`` the statistic is taken
over processed / original byte ratios (``total``: all processed bytes over all original bytes).

A failing budget names its failing images: those whose own value breaks the budget's limit (below the
``min`` of a score, above the ``max`` of a distance, above their ``max_ratio``; for a ``total`` byte
budget, above their equal share ``max / n``).

Unpaired or unreadable files fail the gate unless ``allow_missing`` is set: a build that silently lost
images must not pass on the ones that are left. With ``allow_missing`` they are still listed. A gate
with no scored pair always fails. The metrics computed are those the budgets name plus, when a budget
uses the composite or a profile is given, the profile's; a gate with only byte budgets still decodes every
pair with the cheap ``fast`` profile, so unreadable files are caught.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._compat import renamed
from ._files import read_toml, write_atomic
from .errors import ConfigError, InvalidParameterError, UnknownNameError
from .evaluator import Evaluator
from .jsonio import json_number
from .metrics.registry import get_spec, metric_names
from .statistics import STATISTICS, statistic

if TYPE_CHECKING:
    from .batch import BatchReport, PairIssue, PairResult

__all__ = [
    "BYTES",
    "BITS_PER_PIXEL",
    "Budget",
    "BudgetResult",
    "check_budget",
    "GATE_STATS",
    "GateConfig",
    "GateReport",
    "gate_evaluator",
    "load_budgets",
    "parse_budgets",
    "run_gate",
]

COMPOSITE = "composite"
BYTES = "bytes"
BITS_PER_PIXEL = "bits_per_pixel"
GATE_STATS: tuple[str, ...] = (*STATISTICS, "total")
_BUDGET_KEYS = ("name", "metric", "stat", "min", "max", "max_ratio")
_TOP_KEYS = ("profile", "allow_missing", "budget")
_SHOWN_FAILING = 5


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidParameterError(f"{what} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Budget:
    """One limit on one statistic of a metric, the composite, ``bytes`` or ``bits_per_pixel``.

    ``stat`` defaults to ``total`` for ``bytes`` and ``mean`` otherwise.
    """

    metric: str
    stat: str | None = None
    min: float | None = None
    max: float | None = None
    max_ratio: float | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise InvalidParameterError(f"a budget needs a metric name, got {self.metric!r}")
        if self.metric not in (COMPOSITE, BYTES, BITS_PER_PIXEL):
            try:
                get_spec(self.metric)
            except UnknownNameError:
                known = [COMPOSITE, BYTES, BITS_PER_PIXEL, *metric_names()]
                raise UnknownNameError("budget metric", self.metric, known) from None
        stat = self.stat if self.stat is not None else ("total" if self.metric == BYTES else "mean")
        if stat not in GATE_STATS:
            raise InvalidParameterError(f"budget stat must be one of {', '.join(GATE_STATS)}, got {stat!r}")
        if stat == "total" and self.metric != BYTES:
            raise InvalidParameterError(f"stat 'total' applies to bytes only, got it for {self.metric!r}")
        object.__setattr__(self, "stat", stat)
        low = _number(self.min, f"budget {self.metric}.min")
        high = _number(self.max, f"budget {self.metric}.max")
        ratio = _number(self.max_ratio, f"budget {self.metric}.max_ratio")
        if ratio is not None:
            if self.metric != BYTES:
                raise InvalidParameterError(f"max_ratio applies to bytes only, got it for {self.metric!r}")
            if low is not None or high is not None:
                raise InvalidParameterError("a bytes budget takes max_ratio or min/max, not both")
            if ratio <= 0:
                raise InvalidParameterError(f"max_ratio must be > 0, got {ratio:g}")
        elif low is None and high is None:
            extra = " (or max_ratio)" if self.metric == BYTES else ""
            raise InvalidParameterError(f"budget on {self.metric!r} needs a min or a max{extra}")
        if low is not None and high is not None and low > high:
            raise InvalidParameterError(f"budget on {self.metric!r}: min {low:g} is above max {high:g}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise InvalidParameterError(f"budget name must be a non-empty string, got {self.name!r}")

    @property
    def higher_is_better(self) -> bool:
        if self.metric == COMPOSITE:
            return True
        if self.metric in (BYTES, BITS_PER_PIXEL):
            return False
        return get_spec(self.metric).higher_is_better

    @property
    def limit_text(self) -> str:
        if self.max_ratio is not None:
            return f"<= {self.max_ratio:.1%} of originals"
        parts = []
        if self.min is not None:
            parts.append(f">= {format_value(self.metric, self.min)}")
        if self.max is not None:
            parts.append(f"<= {format_value(self.metric, self.max)}")
        return " and ".join(parts)

    @property
    def quantity(self) -> str:
        """What is measured, e.g. ``composite p10`` or ``bytes ratio total`` (the name when given)."""
        if self.name:
            return self.name
        quantity = f"{self.metric} ratio" if self.max_ratio is not None else self.metric
        return f"{quantity} {self.stat}"

    @property
    def label(self) -> str:
        """What is measured and its limit: the JUnit test case name (the name when given)."""
        return self.name or f"{self.quantity} {self.limit_text}"

    def holds(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.max_ratio is not None:
            return value <= self.max_ratio
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in _BUDGET_KEYS}
        return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class GateConfig:
    """A parsed budget file."""

    budgets: tuple[Budget, ...]
    profile: str | None = None
    allow_missing: bool = False

    @property
    def metrics(self) -> list[str]:
        """Registered metrics the budgets need."""
        return list(dict.fromkeys(b.metric for b in self.budgets if b.metric not in (COMPOSITE, BYTES, BITS_PER_PIXEL)))


def parse_budgets(data: Mapping[str, Any], *, source: str = "budget file") -> GateConfig:
    """Validate a parsed budget mapping; every problem is a :class:`ConfigError` naming ``source``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_TOP_KEYS)}")
    entries = data.get("budget")
    if not entries:
        raise ConfigError(f"{source}: no budgets; add at least one [[budget]] table")
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError(f"{source}: 'budget' must be an array of tables ([[budget]])")
    budgets = []
    for number, entry in enumerate(entries, 1):
        where = f"{source}: budget #{number}"
        bad = sorted(set(entry) - set(_BUDGET_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}; known: {', '.join(_BUDGET_KEYS)}")
        if "metric" not in entry:
            raise ConfigError(f"{where}: 'metric' is required")
        try:
            budgets.append(Budget(**dict(entry)))
        except (InvalidParameterError, UnknownNameError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    labels = [b.label for b in budgets]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigError(f"{source}: duplicate budgets {', '.join(duplicates)} (give them distinct names)")
    profile = data.get("profile")
    if profile is not None:
        if not isinstance(profile, str):
            raise ConfigError(f"{source}: profile must be a name, got {profile!r}")
        from .evaluator import get_profile

        try:
            get_profile(profile)
        except UnknownNameError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    allow_missing = data.get("allow_missing", False)
    if not isinstance(allow_missing, bool):
        raise ConfigError(f"{source}: allow_missing must be true or false, got {allow_missing!r}")
    return GateConfig(tuple(budgets), profile, allow_missing)


def load_budgets(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate a budget file (TOML)."""
    return parse_budgets(read_toml(path, "budget file"), source=str(path))


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BudgetResult:
    """A budget, the value measured, whether it holds, and the images that break it (worst first)."""

    budget: Budget
    value: float | None
    passed: bool
    failing: tuple[tuple[str, float], ...] = ()
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.to_dict(),
            "label": self.budget.label,
            "stat": self.budget.stat,
            "value": None if self.value is None else json_number(self.value),
            "limit": self.budget.limit_text,
            "passed": self.passed,
            "failing": [{"key": k, "value": json_number(v)} for k, v in self.failing],
            "message": self.message,
        }


@dataclass
class GateReport:
    """Every budget's outcome, the files left out, and the batch the values came from."""

    results: list[BudgetResult]
    batch: BatchReport
    allow_missing: bool = False
    reference_dir: str = ""
    distorted_dir: str = ""
    seconds: float = 0.0
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def issues(self) -> list[PairIssue]:
        return list(self.batch.issues)

    @property
    def files_ok(self) -> bool:
        """Whether the files left out (unpaired, unreadable) let the gate pass."""
        return self.allow_missing or not self.batch.issues

    @property
    def failures(self) -> list[BudgetResult]:
        return [r for r in self.results if not r.passed]

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.failures and self.files_ok and bool(self.batch.pairs)

    def files_message(self) -> str:
        if not self.batch.issues:
            return f"{len(self.batch.pairs)} pair(s) scored; no file left out"
        listed = "; ".join(f"{i.path} ({i.kind}: {i.reason})" for i in self.batch.issues)
        verdict = "allowed by allow_missing" if self.allow_missing else "the gate fails (use --allow-missing to allow)"
        return f"{len(self.batch.issues)} file(s) left out, {verdict}: {listed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "passed": self.passed,
            "reference_dir": self.reference_dir,
            "distorted_dir": self.distorted_dir,
            "pairs": len(self.batch.pairs),
            "allow_missing": self.allow_missing,
            "files_ok": self.files_ok,
            "issues": [i.to_dict() for i in self.batch.issues],
            "budgets": [r.to_dict() for r in self.results],
            "evaluator": self.batch.evaluator,
            "seconds": self.seconds,
            "per_image": [p.to_dict() for p in self.batch.pairs],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    def to_junit(self, path: str | os.PathLike[str] | None = None) -> str:
        """JUnit XML: one test case per budget plus one for the files left out; failures name images."""
        import xml.etree.ElementTree as ET

        cases: list[tuple[str, str, str | None, str]] = []  # name, classname, failure message, details
        for r in self.results:
            details = r.message
            if r.failing:
                details += "\nfailing images:\n" + "\n".join(
                    f"  {k}: {format_value(r.budget.metric, v, ratio=r.budget.max_ratio is not None)}"
                    for k, v in r.failing
                )
            cases.append((r.budget.label, "optimizer.gate.budget", None if r.passed else r.message, details))
        files_failed = not self.files_ok or not self.batch.pairs
        files_text = self.files_message() if self.batch.pairs else "no pair was scored"
        cases.append(
            ("files paired and readable", "optimizer.gate.files", files_text if files_failed else None, files_text)
        )
        failures = sum(1 for c in cases if c[2] is not None)
        suites = ET.Element(
            "testsuites",
            name="optimizer gate",
            tests=str(len(cases)),
            failures=str(failures),
            errors="0",
            time=f"{self.seconds:.3f}",
        )
        suite = ET.SubElement(
            suites,
            "testsuite",
            name="optimizer.gate",
            tests=str(len(cases)),
            failures=str(failures),
            errors="0",
            skipped="0",
            time=f"{self.seconds:.3f}",
            timestamp=self.created,
        )
        properties = ET.SubElement(suite, "properties")
        for key, value in (
            ("reference_dir", self.reference_dir),
            ("distorted_dir", self.distorted_dir),
            ("pairs", str(len(self.batch.pairs))),
            ("profile", str(self.batch.evaluator.get("profile"))),
            ("allow_missing", str(self.allow_missing).lower()),
        ):
            ET.SubElement(properties, "property", name=key, value=value)
        for name, classname, failure, details in cases:
            case = ET.SubElement(suite, "testcase", name=name, classname=classname, time="0")
            if failure is not None:
                element = ET.SubElement(case, "failure", message=_xml_safe(failure), type="BudgetFailed")
                element.text = _xml_safe(details)
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _xml_safe(details)
        ET.indent(suites)
        text = ET.tostring(suites, encoding="unicode", xml_declaration=False)
        document = '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"
        if path is not None:
            write_atomic(path, document)
        return document


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot hold (control characters from odd file names)."""
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)


def format_value(metric: str, value: float, *, ratio: bool = False) -> str:
    if ratio:
        return f"{value:.1%}"
    if metric == BYTES and math.isfinite(value):
        return f"{value:,.0f}"
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------------------
# Checking


def _per_image(budget: Budget, pair: PairResult) -> float:
    if budget.metric == COMPOSITE:
        return pair.result.composite
    if budget.metric == BYTES:
        return pair.byte_ratio if budget.max_ratio is not None else float(pair.distorted_bytes)
    if budget.metric == BITS_PER_PIXEL:
        return pair.bits_per_pixel
    return float(pair.result.scores[budget.metric])


def _statistic(budget: Budget, pairs: Sequence[PairResult], values: Sequence[float]) -> float:
    if budget.stat == "total":
        if budget.max_ratio is not None:
            originals = sum(p.reference_bytes for p in pairs)
            return sum(p.distorted_bytes for p in pairs) / originals if originals else math.nan
        return float(sum(values))
    return statistic(values, str(budget.stat), higher_is_better=budget.higher_is_better)


def check_budget(budget: Budget, pairs: Sequence[PairResult]) -> BudgetResult:
    """Measure one budget over scored pairs and name the images that break it."""
    if not pairs:
        return BudgetResult(budget, None, False, (), f"{budget.label}: no scored pair to measure")
    values = [_per_image(budget, p) for p in pairs]
    value = _statistic(budget, pairs, values)
    ratio = budget.max_ratio is not None
    shown = format_value(budget.metric, value, ratio=ratio)
    quantity = f"{budget.metric} ratio" if ratio else budget.metric
    if budget.holds(value):
        return BudgetResult(budget, value, True, (), f"{quantity} {budget.stat} = {shown} ({budget.limit_text}): ok")
    low, high = budget.min, budget.max_ratio if ratio else budget.max
    if budget.stat == "total" and not ratio:
        share = len(pairs)
        low = None if low is None else low / share
        high = None if high is None else high / share
    failing = [
        (p.key, v)
        for p, v in zip(pairs, values)
        if math.isnan(v) or (low is not None and v < low) or (high is not None and v > high)
    ]
    failing.sort(key=lambda kv: (not math.isnan(kv[1]), kv[1] if budget.higher_is_better else -kv[1]))
    message = f"{quantity} {budget.stat} = {shown}, needs {budget.limit_text}"
    if math.isnan(value):
        message = f"{quantity} {budget.stat} is not a number (a metric failed on some image), needs {budget.limit_text}"
    if failing:
        if budget.stat == "total" and not ratio:
            what = "over their equal share"
        elif low is not None and high is not None:
            what = "outside the limits"
        else:
            what = "below the min" if low is not None else "above the max"
        names = ", ".join(k for k, _ in failing[:_SHOWN_FAILING])
        more = f" and {len(failing) - _SHOWN_FAILING} more" if len(failing) > _SHOWN_FAILING else ""
        message += f"; {len(failing)} image(s) {what}: {names}{more}"
    return BudgetResult(budget, value, False, tuple(failing), message)


def gate_evaluator(budgets: Iterable[Budget], profile: str | None = None) -> Evaluator:
    """The evaluator a gate needs: the budgets' metrics, plus the profile's when it is given or a budget
    uses the composite; ``fast`` for byte-only gates (images are still decoded)."""
    budgets = list(budgets)
    needed = list(dict.fromkeys(b.metric for b in budgets if b.metric not in (COMPOSITE, BYTES, BITS_PER_PIXEL)))
    uses_composite = any(b.metric == COMPOSITE for b in budgets)
    if profile is not None or uses_composite:
        return Evaluator(profile or "default", metrics=needed or None)
    if needed:
        return Evaluator(metrics=needed)
    return Evaluator("fast")


def run_gate(
    budgets: Sequence[Budget] | GateConfig | str | os.PathLike[str],
    reference_dir: str | os.PathLike[str],
    distorted_dir: str | os.PathLike[str],
    *,
    evaluator: Evaluator | None = None,
    profile: str | None = None,
    allow_missing: bool | None = None,
    jobs: int = 1,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GateReport:
    """Evaluate two folders and check every budget.

    Args:
        budgets: A list of :class:`Budget`, a :class:`GateConfig`, or the path of a budget file (TOML).
        reference_dir: The folder of originals.
        distorted_dir: The folder of processed images (paired by relative path and stem).
        evaluator: An evaluator that computes every metric the budgets name (default: built from them).
        profile: Composite profile (default: the budget file's).
        allow_missing: Let unpaired or unreadable files pass (default: the budget file's setting).
        jobs: Pairs scored in parallel processes.
        workers: Deprecated spelling of ``jobs``.
        progress: Called as ``progress(done, total)`` after each pair.

    Returns:
        The :class:`GateReport`; ``passed`` says whether every budget holds.
    """
    import time

    from .batch import evaluate_folders

    if isinstance(budgets, (str, os.PathLike)):
        config = load_budgets(budgets)
    elif isinstance(budgets, GateConfig):
        config = budgets
    else:
        config = GateConfig(tuple(budgets))
        if not config.budgets:
            raise InvalidParameterError("run_gate needs at least one budget")
        for b in config.budgets:
            if not isinstance(b, Budget):
                raise InvalidParameterError(f"budgets must be Budget objects, got {type(b).__name__}")
    if evaluator is not None and profile is not None:
        raise InvalidParameterError("give either an evaluator or a profile, not both")
    if evaluator is None:
        evaluator = gate_evaluator(config.budgets, profile or config.profile)
    else:
        missing = [m for m in config.metrics if m not in evaluator.metric_names]
        if missing:
            raise InvalidParameterError(
                f"the evaluator does not compute {', '.join(missing)}, which the budgets need; "
                f"it computes {', '.join(evaluator.metric_names)}"
            )
    started = time.perf_counter()
    jobs = renamed(jobs, workers, old="workers", new="jobs", default=1)
    batch = evaluate_folders(reference_dir, distorted_dir, evaluator=evaluator, jobs=jobs, progress=progress)
    results = [check_budget(b, batch.pairs) for b in config.budgets]
    return GateReport(
        results=results,
        batch=batch,
        allow_missing=config.allow_missing if allow_missing is None else allow_missing,
        reference_dir=str(reference_dir),
        distorted_dir=str(distorted_dir),
        seconds=time.perf_counter() - started,
    )
