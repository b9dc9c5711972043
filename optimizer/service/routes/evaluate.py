"""``/evaluate/single`` and ``/evaluate/batch``: scores of processed images against their originals."""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Optional

from fastapi import APIRouter, Query, Request

from ..admission import Ticket, header_pixels
from ..archives import InputIssue
from ..config import ServiceConfig
from ..errors import ServiceError
from ..jobs import ScoringPlan, evaluate_batch, evaluate_single, read_archive
from ..schemas import BatchResponse, PairResponse
from ..state import StateDep
from ..uploads import Form, Upload
from ._forms import only, param, upload
from ._responses import ERRORS

__all__ = ["router"]

router = APIRouter(tags=["evaluate"])

_PAIR_FIELD = re.compile(r"^(original|processed)_([0-9]{1,6})$")


@router.post(
    "/evaluate/single",
    operation_id="evaluate_single_route_evaluate_single_post",
    response_model=PairResponse,
    responses=ERRORS,
    summary="Score one processed image against its original",
)
async def single(
    request: Request,
    state: StateDep,
    profile: Optional[str] = Query(
        None, description="Profile whose weights make the composite (default: the server's first profile)."
    ),
    metrics: Optional[str] = Query(
        None, description="Comma-separated metrics to compute (equal weights unless a profile is named too)."
    ),
) -> dict[str, Any]:
    """Every metric of one pair, its composite and level, sizes and bytes."""
    async with state.work(request, max_parts=8, file_fields={"original", "processed"}.__contains__) as work:
        form = work.form
        only(form, {"original", "processed"}, {"profile", "metrics"})
        original, processed = upload(form, "original"), upload(form, "processed")
        models, _ = state.require_ready()
        rules = state.rules
        plan = models.plan(
            rules.profile(param(form, "profile", profile)), rules.metric_list(param(form, "metrics", metrics))
        )
        await work.admit_images(plan.source.profile, [(original, processed)])
        payload, result = await work.run(evaluate_single, plan, original, processed, state.config.max_pixels)
    state.telemetry.observe_result(plan.profile, result.normalised, result.composite)
    return payload


@router.post(
    "/evaluate/batch",
    operation_id="evaluate_batch_route_evaluate_batch_post",
    response_model=BatchResponse,
    responses=ERRORS,
    summary="Score many pairs: original_N/processed_N fields, or one zip",
)
async def batch(
    request: Request,
    state: StateDep,
    profile: Optional[str] = Query(None, description="Profile whose weights make the composite."),
    metrics: Optional[str] = Query(None, description="Comma-separated metrics to compute."),
) -> dict[str, Any]:
    """Per-pair results, the pairs left out with reasons, and a summary; a failing pair never fails the batch."""
    config = state.config
    async with state.work(request, max_parts=2 * config.max_batch_pairs + 4, file_fields=_batch_file) as work:
        form = work.form
        models, _ = state.require_ready()
        rules = state.rules
        plan = models.plan(
            rules.profile(param(form, "profile", profile)), rules.metric_list(param(form, "metrics", metrics))
        )
        pairs, issues, archive = _batch_inputs(form, config)
        await work.admit_images(plan.source.profile, [(original, processed) for _, original, processed in pairs])
        deadline = time.monotonic() + config.request_timeout
        cancelled = threading.Event()
        body, results = await work.run(
            _batch_job,
            plan,
            config,
            pairs,
            archive,
            issues,
            work.ticket,
            cancelled,
            deadline,
            timeout=2 * config.request_timeout + 5.0,
            cancelled=cancelled,
        )
    for result in results:
        state.telemetry.observe_result(plan.profile, result.normalised, result.composite)
    return body


def _batch_file(name: str) -> bool:
    return name == "archive" or _PAIR_FIELD.match(name) is not None


def _batch_inputs(
    form: Form, config: ServiceConfig
) -> tuple[list[tuple[str, Upload, Upload]], list[InputIssue], Upload | None]:
    """The explicit pairs and the fields left unpaired, or the archive; 422/413 for unusable forms."""
    extra_fields = sorted(set(form.fields) - {"profile", "metrics"})
    if extra_fields:
        raise ServiceError(
            422,
            "unexpected_field",
            f"unexpected field(s) {', '.join(map(repr, extra_fields))}; files go in original_N/processed_N or archive",
            field=extra_fields[0],
        )
    archive = form.files.get("archive")
    named = {name: found for name, found in form.files.items() if name != "archive"}
    if archive is not None:
        if named:
            raise ServiceError(
                422,
                "unexpected_field",
                "give either original_N/processed_N fields or one archive, not both",
                field=sorted(named)[0],
            )
        return [], [], archive
    if not named:
        raise ServiceError(
            422,
            "missing_field",
            "no pairs: send original_0/processed_0, original_1/processed_1, ... or one zip in the field 'archive'",
            field="original_0",
        )
    sides: dict[str, dict[int, Upload]] = {"original": {}, "processed": {}}
    for name, found in named.items():
        match = _PAIR_FIELD.match(name)
        if match is None:
            raise ServiceError(
                422,
                "unexpected_field",
                f"unexpected file field {name!r}; pairs are named original_N and processed_N (N = 0, 1, ...)",
                field=name,
            )
        sides[match.group(1)][int(match.group(2))] = found
    indices = sorted(sides["original"].keys() & sides["processed"].keys())
    if len(indices) > config.max_batch_pairs:
        raise ServiceError(
            413,
            "too_many_pairs",
            f"{len(indices)} pairs, over the limit of {config.max_batch_pairs} per batch",
            limit=config.max_batch_pairs,
        )
    pairs = [(str(i), sides["original"][i], sides["processed"][i]) for i in indices]
    issues = []
    for side, other in (("original", "processed"), ("processed", "original")):
        for i in sorted(sides[side].keys() - sides[other].keys()):
            issues.append(InputIssue(sides[side][i].label, f"no {other}_{i} for {side}_{i}", "unpaired"))
    return pairs, issues, None


def _batch_job(
    plan: ScoringPlan,
    config: ServiceConfig,
    pairs: list[tuple[str, Upload, Upload]],
    archive: Upload | None,
    issues: list[InputIssue],
    ticket: Ticket,
    cancelled: threading.Event,
    deadline: float,
) -> tuple[dict[str, Any], list[Any]]:
    """The batch, stopping (the rest listed as timed out) once ``deadline`` passes.

    An archive's pairs are known only once it is read, here: their memory is reserved then (413/503 for the
    whole request, as for explicit pairs).
    """
    if archive is not None:
        pairs, archive_issues = read_archive(archive, config)
        issues = issues + archive_issues
        sizes = [header_pixels(side.data) for _, original, processed in pairs for side in (original, processed)]
        ticket.hold_images(plan.source.profile, sizes, max_pixels=config.max_pixels)
    watcher = threading.Timer(max(0.0, deadline - time.monotonic()), cancelled.set)
    watcher.daemon = True
    watcher.start()
    try:
        body, results = evaluate_batch(plan, config, pairs=pairs, issues=issues, cancelled=cancelled)
        return body, list(results)
    finally:
        watcher.cancel()
