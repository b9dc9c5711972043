"""The HTML study report and ``optimizer report``: sections, self-containment, crops and their verification."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from conftest import SMALL_STUDY_IMAGES

import optimizer.cli.report_cmd  # noqa: F401  (registers the command)
from optimizer.cli import main
from optimizer.report import build_report
from optimizer.tuning.study import TuningResult, load_study, tune

pytestmark = pytest.mark.slow

NAMES = SMALL_STUDY_IMAGES
ATTR = re.compile(r"""\b(src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


@pytest.fixture(scope="module")
def corpus_dir(small_study_dir: Path) -> Path:
    return small_study_dir


@pytest.fixture(scope="module")
def result(small_study: TuningResult) -> TuningResult:
    return small_study


def _data_uris(html: str) -> list[bytes]:
    out = []
    for _, value in ATTR.findall(html):
        if value.startswith("data:"):
            out.append(base64.b64decode(value.split(",", 1)[1]))
    return out


def test_report_sections_and_self_containment(result: TuningResult, corpus_dir: Path) -> None:
    report = build_report(result, images=corpus_dir, count=2, crop=96)
    html = report.html
    assert report.crops and report.tiers == ["target"] and report.notes == []
    for element_id in ("plot-rate-quality", "plot-pareto", "plot-importances", "tier-table", "crops-target"):
        assert f'id="{element_id}"' in html
    # nothing is fetched: every src is a data: URI, every href an in-page anchor
    attrs = ATTR.findall(html)
    assert attrs
    for name, value in attrs:
        if name.lower() == "src":
            assert re.match(r"data:image/(svg\+xml|png);base64,", value), value[:60]
        else:
            assert value.startswith("#"), value
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.IGNORECASE)
    assert "<link" not in html and "<iframe" not in html and "@import" not in html and "url(" not in html
    assert not re.search(r"<script[^>]*\bsrc=", html)
    # the one inline script is the one the policy allows, and the policy forbids any other origin
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "img-src data:" in csp
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    payloads = _data_uris(html)
    svgs = [p for p in payloads if p.lstrip().startswith(b"<?xml")]
    pngs = [p for p in payloads if p.startswith(b"\x89PNG\r\n\x1a\n")]
    assert len(svgs) == 3 and len(svgs) + len(pngs) == len(payloads)
    assert len(pngs) == 3 * 2  # original, candidate and map for each of the 2 hardest images
    assert html.count('class="crop-row"') == 2
    # the baseline (JPEG quality 85 on the same corpus) gives the savings column
    assert "savings vs baseline" in html and "jpeg quality=85" in html


def test_crops_omitted_without_images_or_with_other_images(result: TuningResult, kodak_dir: Path) -> None:
    bare = build_report(result)
    assert not bare.crops
    assert any("no images given" in n for n in bare.notes)
    assert 'class="crop"' not in bare.html and 'class="omitted"' in bare.html
    # the study measured its baseline when it was tuned: the savings need no images
    assert result.baseline is not None and "savings vs baseline" in bare.html
    assert f"{result.baseline['total_bytes']:,}" in bare.html
    # same names, other pixels: refused, and said so, rather than showing wrong crops
    other = build_report(result, images=[kodak_dir])
    assert not other.crops
    (note,) = [n for n in other.notes if n.startswith("Crops omitted")]
    assert "fingerprint" in note and result.definition.corpus["fingerprint"] in note
    assert 'class="crop"' not in other.html and "fingerprint" in other.html


def test_presets_file_tiers_and_foreign_presets(result: TuningResult, corpus_dir: Path, tmp_path: Path) -> None:
    path = result.presets.save(tmp_path / "presets.json")
    report = build_report(result, presets=path)
    assert report.tiers == result.presets.tier_names
    data = json.loads(path.read_text())
    data["study"]["name"] = "elsewhere"
    data["corpus"]["fingerprint"] = "0" * 16
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(data))
    report = build_report(result, presets=foreign)
    assert any("'elsewhere'" in n for n in report.notes)
    assert any("another corpus" in n for n in report.notes)


def test_study_without_tiers_still_reports(corpus_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'strict.db'}"
    strict = tune(
        [corpus_dir / NAMES[0]],
        space={"formats": ["jpeg"], "jpeg": {"quality": [30, 40]}},
        target="ssim:0.999",
        profile="fast",
        storage=url,
        study_name="strict",
        trials=3,
        seed=1,
        require_preset=False,
    )
    assert strict.presets is None and "target" in (strict.preset_error or "")
    report = build_report(load_study("strict", url), images=[corpus_dir / NAMES[0]])
    assert report.tiers == [] and not report.crops
    assert any(n.startswith("No preset tiers") for n in report.notes)
    assert "No tiers" in report.html and 'id="plot-rate-quality"' in report.html


def test_cli_writes_the_report(
    result: TuningResult, corpus_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "report.html"
    code = main(
        [
            "report",
            "--study",
            result.study_name,
            "--storage",
            result.storage,
            "--images",
            str(corpus_dir),
            "--crops",
            "1",
            "--crop-size",
            "64",
            "--no-baseline",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count('class="crop-row"') == 1
    assert "savings vs baseline" not in html
    assert "report written to" in capsys.readouterr().out
    presets = result.presets.save(tmp_path / "presets.json")
    assert (
        main(
            [
                "report",
                "--study",
                result.study_name,
                "--storage",
                result.storage,
                "--presets",
                str(presets),
                "--map",
                "difference",
                "-o",
                str(tmp_path / "p.html"),
            ]
        )
        == 0
    )
    assert "no images given" in capsys.readouterr().err


def test_cli_errors(result: TuningResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTIMIZER_STUDIES_DIR", raising=False)
    # no default database: a usage error, and no empty database (or studies/ folder) is created
    assert main(["report", "--study", "absent"]) == 2
    assert not (tmp_path / "studies").exists()
    assert main(["report", "--study", "absent", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert not (tmp_path / "none.db").exists()
    assert main(["report", "--study", "absent", "--storage", f"journal:{tmp_path / 'none.journal'}"]) == 2
    assert not (tmp_path / "none.journal").exists()
    assert main(["report", "--study", "absent", "--storage", result.storage]) == 2
    assert main(["report", "--study", result.study_name, "--storage", result.storage, "--map", "lpips"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", "--study", result.study_name, "--storage", result.storage, "--presets", str(bad)]) == 3
    assert not list(tmp_path.glob("*.html"))


def test_report_states_the_saving_at_equal_quality(result: TuningResult) -> None:
    report = build_report(result)
    headline = result.headline()
    assert headline and "than JPEG at equal quality" in headline and "than JPEG q85" in headline
    assert "at equal quality" in report.html


def test_savings_are_worded_not_signed() -> None:
    from optimizer.tuning.results import _relative

    assert _relative(-0.24) == "24% larger" and _relative(0.3) == "30% smaller" and _relative(0.0) == "0% smaller"


def test_the_html_report_follows_the_umask(result: TuningResult, tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        out = tmp_path / "report.html"
        code = main(
            ["report", "--study", result.study_name, "--storage", result.storage, "--no-baseline"] + ["-o", str(out)]
        )
    finally:
        os.umask(previous)
    assert code == 0 and out.stat().st_mode & 0o777 == 0o640
