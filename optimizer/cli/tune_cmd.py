"""``optimizer tune``: run (or resume) a tuning study and export presets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ._app import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, app, fail
from ._grammar import expand_paths
from ._output import ProgressReporter, console, note
from ._parsing import parse_quality_range, split_list

if TYPE_CHECKING:
    import optuna

    from ..tuning.study import TuneConfig, TuningResult


def parse_range(text: str | None, name: str) -> tuple[float, float] | None:
    """``"30-90"`` or ``"30:90"`` -> ``(30.0, 90.0)``; a single number gives a fixed value."""
    if not text:
        return None
    for sep in ("-", ":", ","):
        if sep in text.strip().lstrip("-"):
            lo, hi = text.split(sep, 1)
            try:
                return float(lo), float(hi)
            except ValueError:
                break
    try:
        value = float(text)
    except ValueError:
        fail(f"--{name} takes LOW-HIGH or a single number, got {text!r}")
    return value, value


def parse_tiers(text: str | None) -> dict[str, str] | None:
    """``"high=ssimulacra2:85,low=ssimulacra2:65"`` -> ``{"high": "ssimulacra2:85", ...}``."""
    if not text:
        return None
    tiers: dict[str, str] = {}
    for item in split_list(text):
        name, sep, target = item.partition("=")
        if not sep:
            fail(f"--tiers items are NAME=METRIC:VALUE, got {item!r}")
        tiers[name.strip()] = target.strip()
    return tiers


def _int_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in split_list(text)]
    except ValueError:
        fail(f"expected a comma-separated list of integers, got {text!r}")


@app.command("tune")
def tune_command(
    images: Annotated[
        Optional[list[Path]], typer.Argument(metavar="IMAGES...", help="Images or folders to tune on.")
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Tune on demo photographs shipped with scikit-image.")] = False,
    formats: Annotated[
        Optional[str], typer.Option(metavar="A,B", help="Comma-separated formats, e.g. avif,webp,jpeg.")
    ] = None,
    target: Annotated[
        str, typer.Option(metavar="METRIC:VALUE", help="Quality target, e.g. ssimulacra2:80 or composite:0.8.")
    ] = "ssimulacra2:80",
    mode: Annotated[
        Literal["constrained", "tradeoff", "pareto"], typer.Option(help="What the study optimises.")
    ] = "constrained",
    aggregate: Annotated[
        Literal["mean", "p10", "worst"],
        typer.Option(help="How per-image quality aggregates over the images (p10: the worst-10% edge)."),
    ] = "p10",
    profile: Annotated[str, typer.Option(help="Evaluator profile for the composite and recorded metrics.")] = "default",
    trials: Annotated[int, typer.Option(min=1, help="Total finished trials the study should hold.")] = 40,
    timeout: Annotated[Optional[float], typer.Option(help="Stop after this many seconds.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage URL (default: SQLite under studies/).")] = None,
    study: Annotated[
        Optional[str], typer.Option(help="Study name; an existing study with this name is resumed.")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Trials run in parallel (threads) on this machine.")
    ] = 1,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worker processes sharing the study (journal:studies/NAME.journal unless --storage is a database); "
            "0: create the study and wait for `optimizer worker` processes started elsewhere.",
        ),
    ] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Seed for a reproducible search.")] = None,
    export: Annotated[Optional[Path], typer.Option(help="Write the presets JSON here.")] = None,
    space: Annotated[Optional[Path], typer.Option(help="Search space file (.toml, .yaml, .json).")] = None,
    quality: Annotated[
        Optional[str],
        typer.Option(
            metavar="LOW-HIGH", help="Quality range LOW-HIGH on every format's axis, or FORMAT=LOW-HIGH,... per format."
        ),
    ] = None,
    subsampling: Annotated[Optional[str], typer.Option(help="Chroma subsamplings to try, e.g. 4:2:0,4:4:4.")] = None,
    speed: Annotated[Optional[str], typer.Option(help="AVIF speeds to try, e.g. 6 or 4,6,8.")] = None,
    effort: Annotated[Optional[str], typer.Option(help="JPEG XL efforts to try.")] = None,
    widths: Annotated[Optional[str], typer.Option(help="Target widths (responsive sizes), e.g. 640,1280.")] = None,
    filters: Annotated[Optional[str], typer.Option(help="Resize filters to try (with --widths).")] = None,
    sharpen: Annotated[Optional[str], typer.Option(help="Sharpening amount range LOW-HIGH after resizing.")] = None,
    sampler: Annotated[
        Literal["tpe", "nsga2", "random"],
        typer.Option(help="Optuna sampler for the trade-off mode (the others search settings themselves)."),
    ] = "tpe",
    tradeoff_lambda: Annotated[
        float, typer.Option("--lambda", help="Trade-off mode: quality lost per bit per pixel.")
    ] = 0.05,
    time_objective: Annotated[
        bool, typer.Option("--time-objective", help="Pareto mode: encode time as a third objective.")
    ] = False,
    tiers: Annotated[Optional[str], typer.Option(metavar="NAME=METRIC:VALUE,...", help="Extra preset tiers.")] = None,
    max_images: Annotated[Optional[int], typer.Option(min=1, help="Use at most this many images.")] = None,
    warm_start: Annotated[
        Optional[str],
        typer.Option(
            help="Learn from another study: its best settings go first, its quality answers start the search."
        ),
    ] = None,
    warm_start_storage: Annotated[
        Optional[str], typer.Option(help="The --warm-start study's storage URL (default: studies/NAME.db).")
    ] = None,
    require_savings: Annotated[
        Optional[float],
        typer.Option(
            min=-100.0,
            max=100.0,
            help="Exit 1 unless the preset is at least this many percent smaller than JPEG at equal quality.",
        ),
    ] = None,
) -> None:
    """Search encoder settings that are as small as possible while meeting the quality target.

    Exit 1 when no preset meets the target (or --export is given and nothing was written), and with
    --require-savings when the preset does not save that much against JPEG at equal quality.

    \b
    Examples:
      optimizer tune --demo
      optimizer tune photos/ --formats avif,webp,jpeg --target ssimulacra2:80 --export presets.json
      optimizer tune 'photos/*.jpg' --quality avif=30-80,jpeg=50-95 --speed 4,6 --require-savings 30
      optimizer tune photos/ --widths 640,1280 --filters lanczos,bicubic --sharpen 0-0.6 --study web
    """
    from ..tuning.corpus import demo_images, expand_sources
    from ..tuning.space import SearchSpace
    from ..tuning.study import TuneConfig, run_study
    from ..tuning.target import Target

    if demo == bool(images):
        fail("give IMAGES (files or folders) or --demo, not both and not neither")
    sources: list[Any] = []
    if demo:
        sources = demo_images()
    else:
        sources = expand_sources(expand_paths(images or []))
        if not sources:
            fail("no image files found in the given paths")
    if max_images:
        sources = sources[:max_images]
    base = SearchSpace.from_file(space) if space else SearchSpace()
    search = base.with_overrides(
        formats=split_list(formats) or None,
        quality=parse_quality_range(quality),
        subsampling=split_list(subsampling) or None,
        speed=_int_list(speed),
        effort=_int_list(effort),
        widths=_int_list(widths),
        filters=split_list(filters) or None,
        sharpen=parse_range(sharpen, "sharpen"),
    )
    study_name = study or ("demo" if demo else None)
    if export is None and demo:
        export = Path("studies") / "demo-presets.json"
    if workers != 1 and jobs > 1:
        fail("--jobs runs threads inside one process; with --workers each worker process runs one trial at a time")
    config = TuneConfig(
        space=search,
        target=Target.parse(target),
        mode=mode,
        aggregate=aggregate,
        profile=profile,
        tradeoff_lambda=tradeoff_lambda,
        time_objective=time_objective,
        tiers={name: Target.parse(value) for name, value in (parse_tiers(tiers) or {}).items()},
        n_trials=trials,
        sampler=sampler,
        seed=seed,
        storage=storage,
        study_name=study_name,
        warm_start=warm_start,
        warm_start_storage=warm_start_storage,
    )
    progress = _Progress(trials)
    try:
        with progress:
            if workers != 1:
                result = _tune_with_workers(sources, config, workers=workers, timeout=timeout, progress=progress)
            else:
                result = run_study(sources, config, timeout=timeout, n_jobs=jobs, callbacks=[progress.callback])
    except KeyboardInterrupt:
        console.print(
            f"interrupted after {progress.seen} trials this run; finished trials are stored. "
            "Run the same command again to resume.",
            highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _print_summary(result)
    if result.presets is None or not result.presets.tiers:
        reason = result.preset_error or "no trial met the target"
        fail(f"no preset{f' written to {export}' if export else ''}: {reason}", EXIT_CHECK_FAILED)
    if export is not None:
        result.presets.save(export)
        console.print(f"presets written to {export}", highlight=False)
    if require_savings is not None:
        saving = result.savings_at_equal_quality()
        if saving is None or saving * 100.0 < require_savings:
            measured = "could not be measured" if saving is None else f"is {saving:.1%}"
            fail(
                f"the saving against JPEG at equal quality {measured}; --require-savings asks for at least "
                f"{require_savings:g}%",
                EXIT_CHECK_FAILED,
            )


def _tune_with_workers(
    sources: list[Any], config: TuneConfig, *, workers: int, timeout: float | None, progress: _Progress
) -> TuningResult:
    """``tune --workers N``: N local worker processes (or, with 0, workers started elsewhere) share the study."""
    from ..tuning.storage import redact_storage
    from ..tuning.workers import tune_workers

    def ready(prepared: Any) -> None:
        where = redact_storage(prepared.storage)
        started = f"{workers} local worker processes started" if workers else "no local workers"
        progress.note(
            f"study {prepared.name} in {where}: {started}; more can join from any machine that reaches the "
            f"storage with: optimizer worker --study {prepared.name} --storage {where} IMAGES..."
        )

    return tune_workers(sources, config, workers=workers, timeout=timeout, progress=progress.update, on_ready=ready)


class _Progress:
    """Trials done, best bytes so far, feasible count: a live line on a terminal, log lines elsewhere."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.seen = 0
        self._first: int | None = None
        self._bar = ProgressReporter("tuning", total=budget, transient=False, interval=0.0)

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.__exit__(*exc)

    def note(self, text: str) -> None:
        """A line printed above the live progress bar."""
        self._bar.note(text)

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.seen += 1
        self.update(study)

    def update(self, study: optuna.Study) -> None:
        """Refresh from the study's storage (polled while worker processes run the trials)."""
        from ..tuning.records import feasible_trials, finished_trials

        done = len(finished_trials(study))
        if self._first is None:
            self._first = done if self.seen == 0 else done - self.seen
        self.seen = max(self.seen, done - self._first)
        feasible = feasible_trials(study)
        best = min((t.user_attrs["total_bytes"] for t in feasible), default=None)
        status = f"feasible {len(feasible)}" + (f", best {best:,} bytes" if best is not None else "")
        self._bar.update(done, detail=status)


def _print_summary(result: TuningResult) -> None:
    from rich.table import Table

    from ..tuning.records import feasible_trials, finished_trials

    definition = result.definition
    done = finished_trials(result.study)
    console.print(
        f"study {result.study_name} ({result.storage}): {len(done)} finished trials, "
        f"{len(feasible_trials(result.study))} feasible; target {definition.target} ({definition.aggregate}), "
        f"mode {definition.mode}",
        highlight=False,
    )
    if result.presets is None or not result.presets.tiers:
        reason = result.preset_error or "no trial met the target"
        console.print(
            f"[yellow]no preset:[/] {reason}; raise --trials, widen the space or lower the target", highlight=False
        )
        return
    table = Table(title="Presets")
    for column in ("tier", "settings", "bits/pixel", "quality", "bytes"):
        table.add_column(column, justify="left" if column in ("tier", "settings") else "right")
    for tier in result.presets.tiers:
        expected = tier.expected
        table.add_row(
            tier.name,
            tier.settings.label(),
            f"{expected.bits_per_pixel:.3f}",
            f"{expected.quality:.3f}",
            f"{expected.total_bytes:,}",
        )
    console.print(table)
    headline, saving = result.headline(), result.savings_at_equal_quality()
    if headline:
        console.print(headline, highlight=False, soft_wrap=True)
    if saving is not None and saving < 0:
        tier = result.presets.default_tier
        note(
            f"the {tier.name} tier is {-saving:.0%} LARGER than JPEG at the same quality: JPEG serves these images "
            "better at this target; widen the space (more formats, slower speeds) or keep JPEG",
            label="warning",
            style="bold red",
            stream=console,
        )
    if result.exhausted:
        console.print(
            f"every setting of the search space was tried ({len(done)} trials): more trials would repeat them",
            highlight=False,
        )
