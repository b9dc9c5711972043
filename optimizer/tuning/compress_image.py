"""One image through ``compress``: search each format (on a proxy when the image is large), confirm at full size.

Internal to :func:`optimizer.tuning.adaptive.compress`.

Small images are searched at full size: every probe is a candidate file. A large image (at least
``run.proxy_min_pixels``) is searched on its proxy (:mod:`optimizer.tuning.proxy`), aiming above the bar by
the gap the proxy is known to read high; the answers are then confirmed at full size, best first:

1. Each format's answer has a full-size size: known once encoded, else predicted from the proxy's bytes. The
   smallest is taken; an answer not yet encoded at full size is encoded first (so a format whose proxy
   bytes are far larger is never encoded at full size at all).
2. It is **checked**: written to a temporary file, read back, decoded and scored at full size
   (:class:`~optimizer.tuning.compress_writer.ImageWriter`). That score is also the gap measurement.
3. A pass whose step below is predicted to pass too (the proxy there, corrected by the gap just measured)
   gets one try lower; a fail searches the proxy again aiming higher by the gap measured, never below a
   setting that failed. The checked file that passes with the fewest bytes takes its name.

So a typical large image costs one full-size encode per format still in the running and one full-size score.
Lossless candidates (PNG, WebP lossless) take part like any format, with one setting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..evaluator import ReferenceScorer
from ..imageio import Image, load_image
from ..imageio.limits import check_memory, scoring_memory
from ..transforms import Transform
from .compress_memory import channel_first, return_freed_memory
from .compress_report import CompressResult, FormatOutcome
from .compress_writer import Checked, ImageWriter
from .format_search import CompressRun, FormatAxis, FormatSearch, sort_margin
from .outputs import OutputJob
from .proxy import Proxy, build_proxy
from .rootfind import passes

__all__ = ["compress_image", "lossless_worth_trying", "reference_and_input"]

#: After a pass at full size, the step below is tried only when predicted to pass by this share of the
#: prior gap (:data:`~optimizer.tuning.proxy.PRIOR_GAP`) or more: 0.18 SSIMULACRA 2 points. On the benchmark
#: photos the prediction (the proxy's score there minus the gap just measured) was within 0.16 points of
#: the truth, and one AVIF step near 80 is worth 2-5% of the bytes.
_TRY_LOWER_ROOM = 0.15
#: At most this many full-size checks per format on a proxy-searched image before its search walks up one
#: setting at a time.
_MAX_GUIDED_CHECKS = 3
#: Lossless candidates are tried when the image has at most this many distinct colours (screenshots,
#: graphics, palettes)...
LOSSLESS_MAX_COLOURS = 4096
#: ...or, up to this many colours (photographs have more: Kodak's have 13-150 thousand at 0.4 MP, the
#: proxies of 16 MP photos more still), when the fastest lossless WebP encode of the search image (method 0,
#: about 7% larger than method 4, at a tenth of its time) is no larger than this factor times the best lossy
#: file.
_LOSSLESS_TEST_COLOURS = 1 << 17
_LOSSLESS_BYTES_FACTOR = 1.5


def reference_and_input(image: Image, transform: Transform | None) -> tuple[Image, Image]:
    """(scoring reference, encoder input). A resize's reference uses a fixed high-quality filter (Lanczos in
    the transform's light), as ``tune`` and ``apply`` build theirs; when the transform asks for exactly that
    resize and nothing else, the two are one image."""
    if transform is None or transform.is_identity:
        return image, image
    if not transform.resizes:
        return image, transform.apply(image)
    fixed = Transform(
        width=transform.width,
        height=transform.height,
        scale=transform.scale,
        filter="lanczos",
        linear_light=transform.linear_light,
    )
    reference = fixed.apply(image)
    if fixed == transform:
        return reference, reference
    return reference, transform.apply(image)


def lossless_worth_trying(image: Image) -> bool:
    """Whether ``image`` has few enough colours for a lossless encoding to be a contender on that alone."""
    return _colours(image) <= LOSSLESS_MAX_COLOURS


def _colours(image: Image) -> int:
    """Distinct 8-bit colours (alpha included)."""
    import numpy as np

    pixels = image.to_uint8()
    flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.uint32)
    packed = flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]
    if flat.shape[1] == 4:
        packed = packed ^ (flat[:, 3] << 24)
    return len(np.unique(packed))


@dataclass
class _Track:
    """One format's way to a checked full-size file."""

    search: FormatSearch
    position: int | None = None  # the full-size candidate under consideration (not yet checked)
    data: bytes | None = None  # its full-size bytes, once encoded
    best: Checked | None = None  # the checked file that passed with the fewest bytes
    best_position: int | None = None
    failed: set[int] = field(default_factory=set)
    passed: set[int] = field(default_factory=set)
    full_encodes: int = 0
    checks: int = 0
    refined: bool = False
    note: str | None = None
    last_value: float | None = None
    predicted_minimal: bool = False

    @property
    def format(self) -> FormatAxis:
        return self.search.format

    @property
    def alive(self) -> bool:
        return self.position is not None or self.best is not None


class _ImageCompression:
    def __init__(self, job: OutputJob, run: CompressRun) -> None:
        self.job = job
        self.run = run
        self.started = time.perf_counter()
        self._full_scorer: ReferenceScorer | None = None
        self.reference: Image | None = None
        self.proxy: Proxy | None = None
        self.tracks: list[_Track] = []

    # -- set-up ---------------------------------------------------------------------------------------

    def full_scorer(self) -> ReferenceScorer:
        if self._full_scorer is None:
            assert self.reference is not None
            self._full_scorer = self.run.evaluator.for_reference(self.reference)
        return self._full_scorer

    def compress(self) -> CompressResult:
        run, job = self.run, self.job
        image = load_image(job.source, name=job.label, color=run.color)
        transform = run.transform_for(image)
        out_size = transform.output_size(image.size) if transform is not None else image.size
        # Refused before any encode (on a proxy the full-size scorer is built only for the first check).
        names = run.evaluator.metric_names
        check_memory(
            scoring_memory(names, *out_size),
            f"scoring a {out_size[0]}x{out_size[1]} image with {', '.join(names)}",
            job.label,
        )
        reference, encoder_input = reference_and_input(image, transform)
        del image
        shared = reference is encoder_input
        self.reference = channel_first(reference)
        encoder_input = self.reference if shared else encoder_input
        del reference
        return_freed_memory()
        comparable = job.original is not None and (transform is None or not transform.resizes)
        original_bytes = job.original.stat().st_size if comparable and job.original is not None else None
        self.writer = ImageWriter(
            job, run, self.full_scorer, original_bytes, encoder_input.width, encoder_input.height, self.started
        )
        formats = self._formats_for(encoder_input)
        proxy = build_proxy(encoder_input, min_pixels=run.proxy_min_pixels) if run.proxy_min_pixels else None
        self.proxy = proxy
        self.encoder_input = encoder_input
        if proxy is None:
            search_image, scorer = encoder_input, self.full_scorer()
        else:
            search_image = proxy.image
            scorer = run.evaluator.for_reference(search_image)
        lossless = [f for f in formats if f.lossless]
        lossy = [f for f in formats if not f.lossless]
        tracks = [_Track(FormatSearch(f, search_image, scorer, run, proxy=proxy is not None)) for f in lossy]
        best_bytes: int | None = None
        for track in sorted(tracks, key=lambda t: t.format.name != run.last_winner):
            offset = run.gaps.offset(track.format.name) if proxy is not None else 0.0
            track.search.run(best_bytes if run.prune else None, offset=offset)
            answer = track.search.answer
            if answer is not None and (best_bytes is None or len(answer.data) < best_bytes):
                best_bytes = len(answer.data)
        tried = list(lossless)
        auto = [f for f in run.auto_lossless(lossy) if f.name not in {g.name for g in lossless}]
        if auto and self._lossless_pays(auto[0], search_image, best_bytes):
            tried += auto
        for fmt in tried:
            search = FormatSearch(fmt, search_image, scorer, run, proxy=proxy is not None)
            search.run(None)
            tracks.append(_Track(search))
        for track in tracks:
            answer = track.search.answer
            track.position = answer.position if answer is not None else None
            if proxy is None and answer is not None:
                track.data = answer.data
            track.note = track.search.note
        self.tracks = tracks
        return self._confirm(original_bytes)

    def _formats_for(self, encoder_input: Image) -> list[FormatAxis]:
        formats = self.run.formats
        if encoder_input.has_alpha:  # transparent: formats that would flatten it only when no other was asked for
            formats = [fmt for fmt in formats if fmt.codec.supports_alpha] or formats
        return formats

    def _lossless_pays(self, fmt: FormatAxis, image: Image, best_lossy: int | None) -> bool:
        """Try lossless when the image has few colours, or a quick lossless encode of the search image is close
        to the best lossy one (one fast encode, no score); never for photographs (many colours)."""
        colours = _colours(image)
        if colours <= LOSSLESS_MAX_COLOURS:
            return True
        if best_lossy is None or colours > _LOSSLESS_TEST_COLOURS:
            return False
        quick = {**fmt.params_at(0), "method": 0} if "method" in fmt.codec.defaults() else fmt.params_at(0)
        data = fmt.codec.encode(image, quick, threads=self.run.threads)
        return len(data) <= _LOSSLESS_BYTES_FACTOR * best_lossy

    # -- confirmation at full size --------------------------------------------------------------------

    def _predicted_bytes(self, track: _Track) -> int:
        """Full-size bytes of the track's current candidate: known once encoded, else from the proxy."""
        if track.data is not None:
            return len(track.data)
        assert track.position is not None and self.proxy is not None
        proxy_bytes = len(track.search.probe(track.position).data)
        return int(proxy_bytes / self.proxy.fraction)

    def _key(self, track: _Track) -> int:
        if track.position is not None:
            return self._predicted_bytes(track)
        assert track.best is not None
        return len(track.best.data)

    def _encode_full(self, track: _Track) -> None:
        assert track.position is not None
        fmt = track.format
        self.run.note_probe(f"{fmt.label_at(track.position)} at full size")
        track.data = fmt.codec.encode(
            self.encoder_input, fmt.params_at(track.position), threads=self.run.threads, metadata=self.run.metadata
        )
        track.full_encodes += 1
        return_freed_memory()

    def _confirm(self, original_bytes: int | None) -> CompressResult:
        run, writer = self.run, self.writer
        while True:
            live = [t for t in self.tracks if t.alive]
            if not live:
                return self._fallback(original_bytes)
            track = min(live, key=lambda t: (self._key(t), self.tracks.index(t)))
            size = self._key(track)
            if run.keep_original_if_smaller and original_bytes is not None and original_bytes <= size:
                self._discard_all()
                label = track.format.label_at(
                    track.position if track.position is not None else track.best_position or 0
                )
                reason = (
                    f"the original ({original_bytes:,} bytes) is no larger than the smallest encoding that "
                    f"meets the target ({label}, {size:,} bytes); original kept"
                )
                return writer.keep_original(
                    met=True, reason=reason, chosen=track.format.name, outcomes=self._outcomes()
                )
            if track.position is None:  # its best checked file is the smallest: done
                return self._commit(track)
            if track.data is None:
                self._encode_full(track)
                continue
            self._check(track)

    def _check(self, track: _Track) -> None:
        run = self.run
        position = track.position
        assert position is not None and track.data is not None
        run.note_probe(f"{track.format.label_at(position)} checked at full size")
        checked = self.writer.check(track.data, track.format.codec.extension)
        return_freed_memory()
        track.checks += 1
        track.last_value = checked.value
        full_margin = run.target.margin(checked.value)
        on_proxy = self.proxy is not None and not track.format.lossless
        if on_proxy:
            run.gaps.record(track.format.name, track.search.probe(position).margin, full_margin)
        if checked.passed:
            track.passed.add(position)
            if track.best is not None:
                self.writer.discard(track.best)
            track.best, track.best_position = checked, position
            track.position, track.data = None, None
            if on_proxy:
                self._try_lower(track, position, full_margin)
            return
        self.writer.discard(checked)
        track.failed.add(position)
        track.position, track.data = None, None
        if not on_proxy:
            if not track.format.lossless:
                candidate = track.search.walk_up(track.search.probe(position))
                if candidate is not None:
                    track.position, track.data = candidate.position, candidate.data
            else:
                track.note = "the lossless file did not meet the target when read back"
            return
        if track.best is None:
            self._aim_higher(track, position, full_margin)
        # else: the try below the best pass failed; that pass stands

    def _gap_here(self, track: _Track, position: int, full_margin: float) -> float:
        """How much the proxy read high at ``position`` (full-size margin subtracted from the proxy's)."""
        return track.search.probe(position).margin - full_margin

    def _try_lower(self, track: _Track, position: int, full_margin: float) -> None:
        """After a pass: one try lower when the step below is predicted to pass with some room (a try that
        fails costs a full-size encode and score for nothing)."""
        below = position - 1
        if below < 0 or below in track.failed:
            track.predicted_minimal = True
            return
        gap = self._gap_here(track, position, full_margin)
        predicted = track.search.probe(below).margin - gap
        if predicted < _TRY_LOWER_ROOM * self.run.gaps.prior:
            track.predicted_minimal = not passes(predicted)
            return
        if track.refined:
            return
        track.refined = True
        track.search.run(None, offset=gap)
        answer = track.search.answer
        lowest_safe = max((p for p in track.failed if p < position), default=-1) + 1
        if answer is not None and lowest_safe <= answer.position < position:
            track.position = answer.position
        else:
            track.position = below

    def _aim_higher(self, track: _Track, position: int, full_margin: float) -> None:
        """After a fail: search the proxy again, aiming higher by the gap measured, above every failure below
        the best pass so far."""
        floor = max(track.failed) + 1
        if floor >= track.format.size:
            track.note = f"no setting above {track.format.label_at(position)} passed at full size"
            return
        if track.checks >= _MAX_GUIDED_CHECKS:
            track.position = floor  # the proxy keeps misleading: one step at a time
        else:
            gap = self._gap_here(track, position, full_margin)
            track.search.run(None, offset=max(gap, 0.0) + 0.25 * self.run.gaps.prior, floor=floor)
            answer = track.search.answer
            track.position = answer.position if answer is not None else None
        if track.position is not None and track.best_position is not None and track.position >= track.best_position:
            track.position = None  # no better than the file that passed already
        if track.position is None and track.best is None:
            track.note = track.search.note or f"no setting meets {self.run.target} at full size"

    # -- outcomes -------------------------------------------------------------------------------------

    def _discard_all(self) -> None:
        for track in self.tracks:
            if track.best is not None:
                self.writer.discard(track.best)

    def _commit(self, track: _Track) -> CompressResult:
        checked = track.best
        assert checked is not None and track.best_position is not None
        for other in self.tracks:
            if other is not track and other.best is not None:
                self.writer.discard(other.best)
        self.writer.commit(checked)
        self.run.record_winner(track.format.name)
        reason = None
        original = self.writer.original_bytes
        if original is not None and len(checked.data) > original:
            reason = f"the output is larger than the original ({len(checked.data):,} > {original:,} bytes)"
        fmt = track.format
        minimal = fmt.lossless or (track.best_position - 1 in track.failed) or track.best_position == 0
        if self.proxy is None and not fmt.lossless:
            minimal = track.search.certified() and track.best_position == track.search.answer.position  # type: ignore[union-attr]
        return self.writer.result(
            fmt.name,
            dict(fmt.params_at(track.best_position)),
            checked,
            met=True,
            kept_original=False,
            reason=reason,
            outcomes=self._outcomes(),
            minimal=bool(minimal),
            predicted_minimal=bool(minimal or track.predicted_minimal),
            proxy=self.proxy.describe() if self.proxy is not None else None,
        )

    def _fallback(self, original_bytes: int | None) -> CompressResult:
        """Nothing met the target: keep the best-quality candidate, or the original, and say why."""
        run, writer = self.run, self.writer
        best_track, best_position, best_value = None, None, None
        for track in self.tracks:
            for position, candidate in track.search.cache.items():
                if best_value is None or sort_margin(candidate.margin) > sort_margin(run.target.margin(best_value)):
                    best_track, best_position, best_value = track, position, candidate.value
        notes = "; ".join(f"{t.format.name}: {t.note}" for t in self.tracks if t.note)
        head = f"no setting of {', '.join(t.format.name for t in self.tracks)} met {run.target}"
        if best_track is not None and best_position is not None and best_value is not None:
            where = " on the proxy" if self.proxy is not None and not best_track.format.lossless else ""
            head += f" (best: {best_track.format.label_at(best_position)} scored {best_value:.4g}{where})"
        if notes:
            head += f" [{notes}]"
        data: bytes | None = None
        if best_track is not None and best_position is not None:
            if self.proxy is None:
                data = best_track.search.cache[best_position].data
            else:
                fmt = best_track.format
                data = fmt.codec.encode(
                    self.encoder_input, fmt.params_at(best_position), threads=run.threads, metadata=run.metadata
                )
                best_track.full_encodes += 1
        use_original = original_bytes is not None and (
            run.fallback == "original" or data is None or original_bytes <= len(data)
        )
        owner = best_track.format.name if best_track is not None else None
        if use_original:
            why = (
                "the original was kept"
                if run.fallback == "original" or data is None
                else f"the original was kept, being no larger ({original_bytes:,} bytes) than the best candidate"
            )
            return writer.keep_original(met=False, reason=f"{head}; {why}", chosen=owner, outcomes=self._outcomes())
        if data is None or best_track is None or best_position is None:  # pragma: no cover - a search probes
            raise ValueError(f"{self.job.label}: nothing was encoded")
        checked = writer.write_unchecked_best(data, best_track.format.codec.extension)
        return writer.result(
            best_track.format.name,
            dict(best_track.format.params_at(best_position)),
            checked,
            met=False,
            kept_original=False,
            reason=f"{head}; the best-quality candidate was kept",
            outcomes=self._outcomes(),
            proxy=self.proxy.describe() if self.proxy is not None else None,
        )

    def _outcomes(self) -> tuple[FormatOutcome, ...]:
        out: dict[str, FormatOutcome] = {}
        for track in self.tracks:
            outcome = self._outcome(track)
            previous = out.get(outcome.format)
            if previous is None or (outcome.met and not previous.met):
                merged = outcome
            else:
                merged = previous
            if previous is not None:  # a format searched lossy and tried lossless: one entry, every probe counted
                merged = _with_counts(merged, previous, outcome)
            out[outcome.format] = merged
        return tuple(out.values())

    def _outcome(self, track: _Track) -> FormatOutcome:
        fmt, search = track.format, track.search
        on_proxy = self.proxy is not None and not fmt.lossless
        full_encodes = track.full_encodes + (0 if on_proxy else search.probes)
        position: int | None
        quality: float | None
        size: int | None
        note = track.note
        if track.best is not None:
            position, quality, size = track.best_position, track.best.value, len(track.best.data)
            met, certified = (
                True,
                (search.certified() if not on_proxy else position is not None and position - 1 in track.failed),
            )
        elif not on_proxy and track.position is not None and track.data is not None:  # passed its probe, not needed
            position, met, certified = track.position, True, search.certified()
            candidate = search.probe(track.position)
            quality, size = candidate.value, len(candidate.data)
        else:
            met = certified = False
            best = max(search.cache.values(), key=lambda c: (sort_margin(c.margin), -len(c.data)), default=None)
            position = best.position if best is not None else None
            quality = best.value if best is not None else None
            size = len(best.data) if best is not None else None
            if track.position is not None and note is None:
                note = (
                    f"not confirmed at full size: {fmt.label_at(track.position)} was predicted at "
                    f"{self._key(track):,} bytes, more than the file chosen"
                )
        return FormatOutcome(
            format=fmt.name,
            axis=fmt.axis.param if fmt.axis is not None else "lossless",
            probes=search.probes + (track.full_encodes if on_proxy else 0),
            met=met,
            setting=fmt.setting_at(position) if position is not None else None,
            params=dict(fmt.params_at(position)) if position is not None else None,
            bytes=size,
            quality=quality,
            certified=bool(certified),
            note=note,
            searched_on="proxy" if on_proxy else "image",
            full_size_encodes=full_encodes,
            full_size_checks=track.checks,
        )


def _with_counts(kept: FormatOutcome, a: FormatOutcome, b: FormatOutcome) -> FormatOutcome:
    from dataclasses import replace

    return replace(
        kept,
        probes=a.probes + b.probes,
        full_size_encodes=a.full_size_encodes + b.full_size_encodes,
        full_size_checks=a.full_size_checks + b.full_size_checks,
    )


def compress_image(job: OutputJob, run: CompressRun) -> CompressResult:
    """Compress one input; see the module doc.

    Args:
        job: The input and where its outputs go.
        run: Everything fixed for the ``compress`` call.

    Returns:
        The image's :class:`CompressResult`.
    """
    return _ImageCompression(job, run).compress()
