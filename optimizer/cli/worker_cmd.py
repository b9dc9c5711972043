"""``optimizer worker``: join an existing study and run its trials until the budget or a deadline.

Start as many as you like, on any machines that reach the storage; each reads the study definition from
the storage and needs only the study name, the storage URL and the images. SIGTERM (``docker stop``) lets
the running trial finish and then stops; a second SIGTERM or Ctrl-C stops at once (the trial is marked
failed and another worker runs a new one).
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ._app import EXIT_OK, app, fail
from ._grammar import expand_paths
from ._output import console

if TYPE_CHECKING:
    import optuna


def parse_deadline(text: str | None) -> float | None:
    """``--deadline``: Unix time in seconds, or an ISO 8601 date-time (local time unless it has an offset)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        fail(f"--deadline takes Unix seconds or an ISO 8601 date-time such as 2025-06-01T18:00, got {text!r}")


@app.command("worker")
def worker_command(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGES...", help="The study's images (files or folders).")],
    study: Annotated[str, typer.Option(help="Name of the study to join (created by `optimizer tune`).")],
    storage: Annotated[
        str,
        typer.Option(
            envvar="OPTIMIZER_STORAGE", help="Shared storage: postgresql://USER:PASS@HOST/DB or journal:PATH."
        ),
    ],
    space: Annotated[Optional[Path], typer.Option(help="Search space file; refused unless it is the study's.")] = None,
    timeout: Annotated[
        Optional[float], typer.Option(min=0, help="Stop starting trials after this many seconds.")
    ] = None,
    deadline: Annotated[
        Optional[str], typer.Option(help="Stop starting trials at this time (Unix seconds or ISO 8601).")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=0, help="Wait up to this many seconds for the storage and the study to exist.")
    ] = 0.0,
    sampler: Annotated[
        Literal["tpe", "nsga2", "random"],
        typer.Option(help="Optuna sampler for the trade-off mode (the others search settings themselves)."),
    ] = "tpe",
    seed: Annotated[Optional[int], typer.Option(help="Sampler seed (give each worker its own).")] = None,
    threads: Annotated[
        Optional[int], typer.Option(min=1, help="CPU threads for this worker's metrics and encoders.")
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="Torch device for the metrics (cpu, cuda).")] = None,
    heartbeat: Annotated[
        Optional[int], typer.Option(min=1, help="Seconds between heartbeats of a running trial.")
    ] = None,
    grace: Annotated[
        Optional[int], typer.Option(min=1, help="Seconds without a heartbeat before a trial is failed and retried.")
    ] = None,
    max_retry: Annotated[Optional[int], typer.Option(min=0, help="Retries of a trial whose worker died.")] = None,
    export: Annotated[Optional[Path], typer.Option(help="When stopped, write the study's presets JSON here.")] = None,
    tiers: Annotated[Optional[str], typer.Option(help="Preset tiers for --export, NAME=METRIC:VALUE,...")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final summary.")] = False,
) -> int:
    """Join a study in a shared storage and run trials until its trial budget or a deadline is reached.

    \b
    Examples:
      optimizer worker photos/ --study shop --storage postgresql://user:pass@db/optuna
      OPTIMIZER_STORAGE=journal:/shared/shop.log optimizer worker 'photos/*.jpg' --study shop --deadline 2026-12-07T06:00
      optimizer worker photos/ --study shop --timeout 3600 --threads 4 --export shop-presets.json
    """
    from ..tuning.corpus import expand_sources
    from ..tuning.storage import redact_storage
    from ..tuning.workers import join_study, limit_threads, run_worker

    if timeout is not None and deadline is not None:
        fail("give --timeout or --deadline, not both")
    stop_at = parse_deadline(deadline)
    sources = expand_sources(expand_paths(images))
    if not sources:
        fail("no image files found in the given paths")
    if threads is not None:
        limit_threads(threads)
    joined = join_study(
        study,
        storage,
        sources,
        space=space,
        sampler=sampler,
        seed=seed,
        device=device,
        wait=wait,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        max_retry=max_retry,
    )
    if timeout is not None:
        stop_at = time.time() + timeout
    shown = redact_storage(storage)
    definition = joined.definition
    console.print(
        f"joined study {study} ({shown}): budget {joined.budget} trials, target {definition.target} "
        f"({definition.aggregate}), mode {definition.mode}, {len(sources)} images",
        highlight=False,
    )
    joined.objective.threads = threads
    _ = joined.objective.scorers  # reference-side work before the first trial (errors surface now)
    stop = threading.Event()
    callbacks = [] if quiet else [_trial_line]
    with _graceful_sigterm(stop):
        report = run_worker(
            joined.study, joined.objective, deadline=stop_at, stop=stop, callbacks=callbacks, search=joined.search
        )
    reasons = {
        "budget": "the study reached its budget",
        "deadline": "the deadline passed",
        "stopped": "asked to stop",
        "exhausted": "every setting of the search space has been tried",
    }
    console.print(
        f"worker stopped: {reasons.get(report.stopped, report.stopped)}; this worker ran {report.ran} trials "
        f"({report.complete} complete, {report.pruned} pruned, {report.failed} failed"
        + (f", {report.surplus} beyond the budget" if report.surplus else "")
        + (f", {report.discarded} discarded after a missed heartbeat" if report.discarded else "")
        + ")",
        highlight=False,
    )
    if export is not None:
        from ..tuning.tiers import build_preset
        from .tune_cmd import parse_tiers

        presets = build_preset(joined.study, tiers=parse_tiers(tiers), storage=shown)
        export.parent.mkdir(parents=True, exist_ok=True)
        presets.save(export)
        console.print(f"presets written to {export}", highlight=False)
    return EXIT_OK


def _trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    attrs = trial.user_attrs
    if attrs.get("surplus"):
        return
    text = f"trial {trial.number} {trial.state.name.lower()}"
    if "total_bytes" in attrs:
        text += f": {attrs['total_bytes']:,} bytes, quality {attrs.get('quality', float('nan')):.4g}"
    if trial.state.name == "FAIL":
        text += f" ({attrs.get('error', 'failed')})"
    console.print(text, highlight=False)


class _graceful_sigterm:
    """First SIGTERM: finish the running trial, then stop. Second: stop now (KeyboardInterrupt)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()

    def __enter__(self) -> _graceful_sigterm:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
