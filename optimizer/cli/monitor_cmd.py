"""``optimizer monitor`` (follow a folder pair, print alerts) and ``optimizer gate`` (CI budgets)."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from ._app import EXIT_CHECK_FAILED, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, app, fail, fail_batch
from ._grammar import JobsOption, JsonOption, LegacyFormatOption, LegacyWorkersOption, jobs_from, output_style
from ._output import ProgressReporter, console, err_console, escape
from ._parsing import split_list

if TYPE_CHECKING:
    from ..gate import GateReport
    from ..monitor import Alert, MonitorConfig, MonitorStats, QualityMonitor, WatchItem

STATE_NAME = ".optimizer-monitor-state.jsonl"
_FAIL_ON = ("never", "warning", "critical")


def default_monitor_config(window: int = 100) -> MonitorConfig:
    """Used without ``--config``: composite warning below 0.7 (medium quality), critical below 0.5 (low),
    and a warning when the rolling composite drifts 0.05 below the first full window."""
    from ..monitor import DriftRule, MonitorConfig, Threshold

    return MonitorConfig(
        thresholds=(Threshold("composite", warning=0.7, critical=0.5),),
        drift=(DriftRule("composite", warning=0.05),),
        window=window,
    )


class _ConsoleSink:
    """Prints each alert as one coloured line."""

    STYLES = {"warning": "yellow", "critical": "bold red"}

    def emit(self, alert: Alert) -> None:
        from rich.markup import escape

        style = self.STYLES.get(alert.severity, "white")
        console.print(
            f"{alert.timestamp} [{style}]{alert.severity.upper():8}[/] {alert.kind:9} {escape(alert.message)}",
            highlight=False,
        )


@app.command("monitor")
def monitor_command(
    watch: Annotated[
        tuple[Path, Path],
        typer.Option(
            "--watch",
            metavar="REFERENCE DISTORTED",
            help="Follow this folder pair: originals and their processed versions (same relative stem).",
        ),
    ],
    profile: Annotated[Optional[str], typer.Option(help="Composite profile (default, seed, perceptual, fast).")] = None,
    metrics: Annotated[
        Optional[str], typer.Option(help="Comma-separated metrics (equal weights unless --profile, then added to it).")
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option(help="TOML file with thresholds, drift rules, window and cooldown.")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.01, help="Seconds between scans of the folders.")] = 1.0,
    settle: Annotated[float, typer.Option(min=0.0, help="Seconds a file must stay unchanged before it is read.")] = 1.0,
    alerts: Annotated[Optional[Path], typer.Option(help="Append alerts to this JSON-lines file.")] = None,
    state: Annotated[
        Optional[Path],
        typer.Option(
            help=f"JSON-lines record of processed pairs (default: DISTORTED/{STATE_NAME}); a restart "
            "skips them and restores the statistics."
        ),
    ] = None,
    window: Annotated[Optional[int], typer.Option(min=2, help="Rolling window size (overrides the config).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Process what is there now and exit.")] = False,
    fail_on: Annotated[
        Literal["never", "warning", "critical"],
        typer.Option("--fail-on", help="Exit 1 if this run raised an alert this severe."),
    ] = "never",
) -> None:
    """Score new processed images as they appear and print threshold and drift alerts.

    Without --config: composite warning below 0.7, critical below 0.5, and a drift warning when the rolling
    composite falls 0.05 below its first full window. Ctrl-C stops after the current pair; everything already
    read is in the state file, so the next run goes on where this one stopped. Malformed lines in the state
    file are skipped with a warning; a state path that is a folder, or a file that is not a state file, is
    an error (exit 3). An alert that cannot be written to --alerts (a full disk) is kept and retried; what is
    still undelivered at the end is printed on stderr as JSON lines, and the exit code is 3. A pair that
    could not be scored in this run is an error alert, and the run exits 3 when it ends (after the others).

    \b
    Examples:
      optimizer monitor --watch originals/ processed/ --alerts alerts.jsonl
      optimizer monitor --watch originals/ processed/ --once --fail-on critical
      optimizer monitor --watch originals/ processed/ --config monitor.toml --profile fast
    """
    from ..evaluator import Evaluator
    from ..monitor import FolderWatcher, JsonLinesSink, QualityMonitor, load_monitor_config

    orig_dir, processed_dir = watch
    for folder in (orig_dir, processed_dir):
        if not folder.is_dir():
            fail(f"--watch takes two folders; {folder} is not a folder")
    settings = load_monitor_config(config) if config is not None else default_monitor_config()
    if window is not None:
        settings = replace(settings, window=window)
    names = split_list(metrics)
    tracked = list(dict.fromkeys([*names, *settings.metrics]))
    if profile is None and names:  # as in `evaluate`: --metrics alone scores those, with equal weights
        evaluator = Evaluator(metrics=tracked)
    else:
        evaluator = Evaluator(profile=profile or "default", metrics=tracked or None)
    evaluator.load()

    sinks: list[object] = [_ConsoleSink()]
    if alerts is not None:
        sinks.append(JsonLinesSink(alerts))
    run_counts = {"warning": 0, "critical": 0}

    def count(alert: Alert) -> None:
        run_counts[alert.severity] = run_counts.get(alert.severity, 0) + 1

    monitor = QualityMonitor.from_config(settings, sinks=[*sinks, count])  # type: ignore[list-item]
    state_file = state if state is not None else processed_dir / STATE_NAME
    watcher = FolderWatcher(orig_dir, processed_dir, evaluator, monitor=monitor, state_file=state_file, settle=settle)
    console.print(
        f"watching {orig_dir} -> {processed_dir} (profile {evaluator.profile.name}, metrics "
        f"{', '.join(evaluator.metric_names)}); {watcher.replayed} pair(s) restored from {state_file}",
        highlight=False,
    )

    interrupted = False
    unreadable: list[tuple[str, str]] = []

    def collect(items: list[WatchItem]) -> None:
        unreadable.extend((item.processed, item.error) for item in items if item.error is not None)

    stop = threading.Event()
    previous_handler = None
    if not once and threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if once:
            collect(watcher.once())
        else:
            watcher.run(interval=interval, stop_event=stop, on_items=collect)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    _print_stats(monitor.stats(), watcher.processed, watcher.pending)
    console.print(f"state: {state_file}", highlight=False)
    undelivered = _report_undelivered(monitor)
    if interrupted:
        err_console.print("stopped; every pair already read is recorded in the state file", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    if undelivered:
        raise typer.Exit(EXIT_INPUT)
    if unreadable:
        fail_batch(unreadable, watcher.processed, "pairs")
    if fail_on != "never" and any(run_counts[s] for s in _FAIL_ON[_FAIL_ON.index(fail_on) :]):
        raise typer.Exit(EXIT_CHECK_FAILED)
    raise typer.Exit(EXIT_OK)


def _report_undelivered(monitor: QualityMonitor) -> int:
    """Retry alerts a sink failed to take; print what is still undelivered on stderr (JSON lines) and one
    error line naming the sinks and why. Returns how many alerts were undelivered."""
    undelivered = monitor.flush_sinks()
    if not undelivered:
        return 0
    for _, alert in undelivered:
        sys.stderr.write(alert.to_json() + "\n")
    reasons = "; ".join(f"{name}: {reason}" for name, reason in monitor.sink_errors().items())
    err_console.print(
        f"[bold red]error:[/] {len(undelivered)} alert(s) could not be delivered ({escape(reasons)}); "
        "they are printed above on stderr as JSON lines",
        highlight=False,
        soft_wrap=True,
    )
    return len(undelivered)


def _num(value: float | None, digits: str = ".4g") -> str:
    return "-" if value is None else format(value, digits)


def _print_stats(stats: MonitorStats, processed: int, pending: list[str]) -> None:
    from rich.table import Table

    table = Table(title=f"{stats.observed} observation(s), {processed} new this run")
    for column in ("metric", "count", "window mean", "trend/obs", "std", "last", "baseline", "drift"):
        table.add_column(column, justify="left" if column in ("metric", "drift") else "right")
    for name, s in stats.metrics.items():
        table.add_row(
            name,
            str(s.count),
            _num(s.mean),
            _num(s.trend, "+.3g"),
            _num(s.std, ".3g"),
            _num(s.last),
            _num(s.baseline),
            s.drift_state or "ok",
        )
    console.print(table)
    alerts = ", ".join(f"{n} {severity}" for severity, n in stats.alerts.items())
    console.print(
        f"alerts: {alerts} ({stats.suppressed} suppressed by cooldown); unreadable: {stats.errors}", highlight=False
    )
    if pending:
        console.print(f"still being written (left for the next run): {', '.join(pending)}", highlight=False)


# --------------------------------------------------------------------------------------------------


@app.command("gate")
def gate_command(
    orig_dir: Annotated[Path, typer.Argument(metavar="REFERENCE", help="Folder of original images.")],
    processed_dir: Annotated[Path, typer.Argument(metavar="DISTORTED", help="Folder of processed images.")],
    budget: Annotated[Path, typer.Option("--budget", help="TOML file of [[budget]] tables.")],
    profile: Annotated[Optional[str], typer.Option(help="Composite profile (overrides the budget file).")] = None,
    junit: Annotated[
        Optional[Path], typer.Option(help="Write a JUnit XML report here (one test case per budget).")
    ] = None,
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Unpaired or unreadable files do not fail the gate (still listed).")
    ] = False,
    report: Annotated[Optional[Path], typer.Option(help="Write the full JSON report here.")] = None,
    jobs: JobsOption = 1,
    legacy_workers: LegacyWorkersOption = None,
) -> None:
    """Check quality and size budgets on a processed folder: exit 0 when all hold, 1 when any fails.

    Unpaired or unreadable files fail the gate unless --allow-missing (or allow_missing = true in the file);
    an unreadable file makes it exit 3 (after scoring the others and writing the reports).

    \b
    Examples:
      optimizer gate originals/ processed/ --budget budgets.toml
      optimizer gate originals/ processed/ --budget budgets.toml -j 4 --junit gate.xml --report gate.json
      optimizer gate originals/ processed/ --budget budgets.toml --json --allow-missing
    """
    from ..gate import gate_evaluator, load_budgets, run_gate

    output_format = output_style(as_json, legacy_format)
    settings = load_budgets(budget)
    evaluator = gate_evaluator(settings.budgets, profile or settings.profile)
    evaluator.load()
    options = {
        "evaluator": evaluator,
        "allow_missing": True if allow_missing else None,
        "jobs": jobs_from(jobs, legacy_workers),
    }
    if output_format == "table":
        with ProgressReporter("evaluating") as bar:
            result = run_gate(
                settings,
                orig_dir,
                processed_dir,
                **options,  # type: ignore[arg-type]
                progress=bar.update,
            )
    else:
        result = run_gate(settings, orig_dir, processed_dir, **options)  # type: ignore[arg-type]
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        result.to_junit(junit)
    if report is not None:
        result.to_json(report)
    if output_format == "json":
        typer.echo(result.to_json())
    else:
        _print_gate(result)
    if result.batch.failed and not result.allow_missing:
        total = len(result.batch.pairs) + len(result.batch.failed)
        fail_batch([(i.path, i.reason) for i in result.batch.failed], total, "pairs")
    raise typer.Exit(EXIT_OK if result.passed else EXIT_CHECK_FAILED)


def _print_gate(result: GateReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..gate import format_value

    table = Table(
        title=f"quality gate: {len(result.batch.pairs)} pair(s), profile {result.batch.evaluator.get('profile')}"
    )
    for column in ("budget", "value", "limit", "result", "failing images"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for r in result.results:
        ratio = r.budget.max_ratio is not None
        value = "-" if r.value is None else format_value(r.budget.metric, r.value, ratio=ratio)
        shown = ", ".join(f"{escape(k)} ({format_value(r.budget.metric, v, ratio=ratio)})" for k, v in r.failing[:5])
        if len(r.failing) > 5:
            shown += f" +{len(r.failing) - 5} more"
        verdict = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(escape(r.budget.quantity), value, escape(r.budget.limit_text), verdict, shown)
    console.print(table)
    for issue in result.issues:
        style = "yellow" if result.allow_missing else "red"
        console.print(f"[{style}]{issue.kind}:[/] {escape(issue.path)}: {escape(issue.reason)}", highlight=False)
    failed = len(result.failures)
    if result.passed:
        console.print(f"[green]gate passed[/]: {len(result.results)} budget(s) hold", highlight=False)
    else:
        reasons = []
        if failed:
            reasons.append(f"{failed} of {len(result.results)} budget(s) failed")
        if not result.files_ok:
            reasons.append(f"{len(result.issues)} file(s) unpaired or unreadable (--allow-missing to allow)")
        if not result.batch.pairs:
            reasons.append("no pair was scored")
        console.print(f"[bold red]gate failed[/]: {'; '.join(reasons)}", highlight=False)
