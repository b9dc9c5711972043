"""The HTML report renders in headless Chromium: every plot and crop decodes and the page logs no error.

The report's inline script records page errors, policy violations and image decoding on ``<html>``;
Chromium's ``--dump-dom`` prints the DOM after the load event, and its log (``--enable-logging=stderr``)
shows every console message. Skipped without Chromium, except under CI, where it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from optimizer.report import build_report

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium not found (Debian: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _render(page: Path, profile: Path) -> tuple[dict[str, str], str, str]:
    """The ``<html>`` element's attributes, the DOM and Chromium's log for one page load."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium exited with {done.returncode}: {done.stderr[-2000:]}"
    match = re.search(r"<html([^>]*)>", done.stdout)
    assert match, f"no <html> element in chromium's output: {done.stdout[:500]!r}"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
    return attrs, done.stdout, done.stderr


def _console(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report_page(small_study, small_study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    return build_report(small_study, images=small_study_dir, count=2, crop=96).save(folder / "report.html")


def test_report_renders_without_errors(report_page: Path, tmp_path: Path) -> None:
    attrs, dom, log = _render(report_page, tmp_path / "profile")
    assert attrs.get("data-report-status") == "ready", attrs
    assert "data-errors" not in attrs, attrs.get("data-errors")
    assert _console(log) == []
    # every plot and crop decoded to real pixels
    images = int(attrs["data-images"])
    assert images == 3 + 2 * 3
    assert attrs["data-images-decoded"] == str(images)
    for element_id in ("plot-rate-quality", "plot-pareto", "plot-importances"):
        assert re.search(rf'<img[^>]*id="{element_id}"', dom), element_id
    assert '<table id="tier-table">' in dom
    assert re.search(r'<div id="render-problems" class="banner" hidden', dom)


def test_the_check_catches_broken_pages(report_page: Path, tmp_path: Path) -> None:
    """The same harness on a damaged copy: an undecodable image, a remote image and a foreign script."""
    broken = tmp_path / "broken.html"
    damage = (
        '<img id="undecodable" alt="undecodable" src="data:image/png;base64,AAAA">'
        '<img id="remote" alt="remote" src="https://example.invalid/x.png">'
        "<script>window.notDefined();</script>"
    )
    broken.write_text(report_page.read_text().replace("</footer>", "</footer>" + damage, 1))
    attrs, dom, log = _render(broken, tmp_path / "profile")
    assert attrs.get("data-report-status") == "ready"
    errors = attrs.get("data-errors", "")
    assert "blocked by the page policy" in errors  # the remote image and the inline script
    assert "failed to load img" in errors
    assert int(attrs["data-images-decoded"]) == int(attrs["data-images"]) - 2
    assert "could not be shown: undecodable, remote" in dom
    assert _console(log)
