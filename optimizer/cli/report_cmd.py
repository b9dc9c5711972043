"""``optimizer report``: one self-contained HTML page of a study, to choose a preset by looking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from ._app import EXIT_USAGE, app, fail
from ._grammar import expand_paths
from ._output import console, err_console


@app.command("report")
def report_command(
    study: Annotated[str, typer.Option("--study", help="Name of the study to report on.")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="HTML file to write (default: STUDY-report.html).")
    ] = None,
    storage: Annotated[
        Optional[str], typer.Option(help="Optuna storage URL (default: the SQLite file under studies/).")
    ] = None,
    presets: Annotated[
        Optional[Path], typer.Option(help="Preset file whose tiers to show (default: tiers built from the study).")
    ] = None,
    images: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--images",
            metavar="PATH",
            help="The study's images (files or folders; repeat the option for several) for the crops; verified "
            "against the study's corpus fingerprint.",
        ),
    ] = None,
    crops: Annotated[int, typer.Option(min=1, help="Hardest images shown per tier.")] = 3,
    crop_size: Annotated[int, typer.Option("--crop-size", min=16, help="Side of each crop in pixels.")] = 160,
    damage_map: Annotated[
        Literal["ssim", "difference"], typer.Option("--map", help="Damage map beside each crop.")
    ] = "ssim",
    importance: Annotated[
        Literal["fanova", "ped-anova", "mdi"], typer.Option(help="Importance method (fanova needs scikit-learn).")
    ] = "fanova",
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="With --images: savings against JPEG quality 85.")
    ] = True,
) -> None:
    """Write an HTML report of a study: rate-quality, Pareto front, importances, tiers and crops.

    \b
    Examples:
      optimizer report --study demo
      optimizer report --study demo --images 'photos/*.jpg' --crops 5 -o demo.html
      optimizer report --study shop --storage postgresql://user:pass@db/optuna --importance ped-anova
    """
    from ..report import build_report
    from ..tuning.storage import redact_storage, studies_dir
    from ..tuning.study import load_study

    if storage is None:
        # Opening a missing SQLite file would create an empty one: say where the study was looked for instead.
        default = studies_dir() / f"{study}.db"
        if not default.exists():  # a folder there is refused by the storage layer (bad input, exit 3)
            fail(f"no study database at {default}; pass --storage URL (e.g. sqlite:///path/to/{study}.db)", EXIT_USAGE)
        storage = f"sqlite:///{default}"
    else:
        for prefix in ("sqlite:///", "journal:"):
            if storage.startswith(prefix) and storage != "sqlite:///:memory:":
                path = Path(storage.removeprefix(prefix))
                if not path.exists():
                    fail(f"no study storage at {path} (from --storage {redact_storage(storage)})", EXIT_USAGE)
    result = load_study(study, storage)
    report = build_report(
        result,
        presets=presets if presets is not None else "auto",
        images=expand_paths(images) if images else None,
        count=crops,
        crop=crop_size,
        damage_map=damage_map,
        baseline=baseline,
        importance=importance,
        storage=storage,
    )
    target = output if output is not None else Path(f"{study}-report.html")
    report.save(target)
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {_escape(note)}", highlight=False)
    size = target.stat().st_size
    tiers = ", ".join(report.tiers) or "none"
    crops_text = "with crops" if report.crops else "without crops"
    console.print(f"report written to {target} ({size / 1024:.0f} KiB; tiers: {tiers}; {crops_text})", highlight=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
