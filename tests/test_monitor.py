"""QualityMonitor: direction-aware thresholds, drift, window statistics, storm control, sinks, config,
the folder watcher (half-written and corrupt files, restart from the state file) and the CLI."""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from optimizer.errors import ConfigError, InvalidParameterError, UnknownNameError
from optimizer.evaluator import EvaluationResult, Evaluator
from optimizer.monitor import (
    Alert,
    DriftRule,
    FolderWatcher,
    JsonLinesSink,
    LoggingSink,
    MonitorConfig,
    QualityMonitor,
    Threshold,
    load_monitor_config,
)
from optimizer.statistics import window_statistics


def make_result(composite: float = 0.9, name: str | None = None, **scores: float) -> EvaluationResult:
    return EvaluationResult(
        scores=dict(scores),
        normalised={},
        composite=composite,
        level="x",
        profile="custom",
        weights={},
        metric_versions={},
        width=8,
        height=8,
        reference=None,
        distorted=name,
    )


class Clock:
    def __init__(self, start: float = 1_000_000.0, step: float = 0.0) -> None:
        self.now, self.step = start, step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


# --------------------------------------------------------------------------------------------------
# Thresholds


def test_score_alerts_when_it_falls_below() -> None:
    seen: list[Alert] = []
    monitor = QualityMonitor({"ssimulacra2": {"warning": 70, "critical": 50}}, sinks=[seen.append])
    assert monitor.observe(make_result(ssimulacra2=85.0)) == []
    assert monitor.observe(make_result(ssimulacra2=100.0)) == []
    [warning] = monitor.observe(make_result(ssimulacra2=65.0), "img-a")
    assert (warning.severity, warning.metric, warning.kind) == ("warning", "ssimulacra2", "threshold")
    assert (warning.value, warning.threshold, warning.item) == (65.0, 70.0, "img-a")
    assert "fell below" in warning.message and "img-a" in warning.message
    [critical] = monitor.observe(make_result(ssimulacra2=40.0), "img-b")  # escalation beats the cooldown
    assert (critical.severity, critical.threshold) == ("critical", 50.0)
    assert seen == [warning, critical]
    assert monitor.stats().alerts == {"warning": 1, "critical": 1}


def test_distance_alerts_when_it_rises_above() -> None:
    monitor = QualityMonitor([Threshold("lpips", warning=0.15, critical=0.3)], cooldown=0)
    assert monitor.observe(make_result(lpips=0.01)) == []  # a small distance is good: no alert
    assert monitor.observe(make_result(lpips=0.15)) == []  # at the limit is still within it
    [warning] = monitor.observe(make_result(lpips=0.2))
    assert warning.severity == "warning" and "rose above" in warning.message
    [critical] = monitor.observe(make_result(lpips=0.5))
    assert critical.severity == "critical" and critical.threshold == 0.3
    assert monitor.observe(make_result(lpips=0.0)) == []


def test_composite_threshold_and_only_critical() -> None:
    monitor = QualityMonitor([Threshold("composite", critical=0.5)])
    assert monitor.observe(make_result(0.6)) == []
    [alert] = monitor.observe(make_result(0.4))
    assert alert.severity == "critical" and alert.metric == "composite"


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"metric": "ssimulacra2", "warning": 50, "critical": 70}, InvalidParameterError),  # critical above warning
        ({"metric": "lpips", "warning": 0.3, "critical": 0.1}, InvalidParameterError),  # critical below warning
        ({"metric": "ssim"}, InvalidParameterError),
        ({"metric": "ssim", "warning": float("nan")}, InvalidParameterError),
        ({"metric": "ssim", "warning": True}, InvalidParameterError),
        ({"metric": "nope", "warning": 1.0}, UnknownNameError),
    ],
)
def test_threshold_validation(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        Threshold(**kwargs)


def test_metric_missing_from_results_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    monitor = QualityMonitor({"lpips": {"warning": 0.1}})
    with caplog.at_level(logging.WARNING, logger="optimizer.monitor"):
        monitor.observe(make_result(ssim=0.9))
        monitor.observe(make_result(ssim=0.9))
    assert sum("lpips" in r.getMessage() for r in caplog.records) == 1


# --------------------------------------------------------------------------------------------------
# Window statistics


def test_window_statistics_exact() -> None:
    monitor = QualityMonitor(window=4)
    for value in (0.1, 0.2, 0.4, 0.8, 1.0):
        monitor.observe(make_result(value, ssim=value))
    stats = monitor.stats()
    s = stats.metrics["composite"]
    window = [0.2, 0.4, 0.8, 1.0]
    assert (s.count, s.window_count, s.minimum, s.maximum, s.last) == (5, 4, 0.2, 1.0, 1.0)
    assert s.mean == pytest.approx(0.6, abs=1e-15)
    assert s.trend == pytest.approx(0.28, abs=1e-15)  # sum((x-1.5)(y-0.6)) = 1.4 over sum((x-1.5)^2) = 5
    assert s.trend == pytest.approx(np.polyfit(np.arange(4), window, 1)[0], abs=1e-12)
    assert s.std == pytest.approx(math.sqrt(0.1), abs=1e-15)
    assert s.std == pytest.approx(float(np.std(window)), abs=1e-15)
    assert stats.metrics["ssim"].mean == pytest.approx(0.6)
    assert list(stats.metrics) == ["composite", "ssim"]
    assert stats.observed == 5 and stats.alerts == {"warning": 0, "critical": 0}
    json.dumps(stats.to_dict())


def test_window_statistics_edges() -> None:
    assert window_statistics([]) == (None, None, None)
    assert window_statistics([3.0]) == (3.0, None, 0.0)
    mean, trend, std = window_statistics([5.0, 3.0, 1.0])
    assert (mean, trend, std) == (3.0, -2.0, pytest.approx(math.sqrt(8 / 3)))


def test_infinite_values_stay_out_of_the_window() -> None:
    monitor = QualityMonitor({"psnr": {"warning": 30}})
    assert monitor.observe(make_result(psnr=math.inf)) == []  # identical images: the best PSNR, no alert
    monitor.observe(make_result(psnr=40.0))
    s = monitor.stats().metrics["psnr"]
    assert (s.count, s.window_count, s.mean, s.last) == (2, 1, 40.0, 40.0)
    json.dumps(monitor.stats().to_dict())


# --------------------------------------------------------------------------------------------------
# Storm control


def test_cooldown_suppresses_repeats_per_metric() -> None:
    monitor = QualityMonitor({"ssim": {"warning": 0.9, "critical": 0.5}, "composite": {"warning": 0.8}}, cooldown=3)
    fired = []
    for i in range(1, 11):
        fired.append([a.metric for a in monitor.observe(make_result(0.9, f"i{i}", ssim=0.8))])
    ssim_at = [i for i, metrics in enumerate(fired, 1) if "ssim" in metrics]
    assert ssim_at == [1, 5, 9]  # observations 2-4 and 6-8 and 10 are within the cooldown
    assert all("composite" not in metrics for metrics in fired)  # composite 0.9 is fine: separate state
    stats = monitor.stats()
    assert stats.alerts["warning"] == 3 and stats.suppressed == 7
    assert monitor.observe(make_result(0.9, ssim=0.8)) == []  # observation 11
    assert monitor.observe(make_result(0.9, ssim=0.8)) == []  # observation 12
    [alert] = monitor.observe(make_result(0.9, ssim=0.8))  # observation 13: 13 - 9 > 3
    assert alert.suppressed == 3 and "3 similar alert" in alert.message
    [critical] = monitor.observe(make_result(0.9, ssim=0.1))  # more severe: fires at once
    assert critical.severity == "critical"
    assert monitor.observe(make_result(0.9, ssim=0.8)) == []  # a warning after a critical stays quiet


def test_cooldown_in_seconds() -> None:
    clock = Clock(step=1.0)
    monitor = QualityMonitor({"ssim": {"warning": 0.9}}, cooldown=0, cooldown_seconds=10.0, clock=clock)
    fired = [bool(monitor.observe(make_result(ssim=0.5))) for _ in range(21)]
    assert [i for i, f in enumerate(fired) if f] == [0, 10, 20]


def test_drift_on_a_score_with_hysteresis() -> None:
    monitor = QualityMonitor(drift={"composite": {"warning": 0.05, "critical": 0.1}}, window=5)
    alerts = []
    for value in [0.9] * 5:
        alerts += monitor.observe(make_result(value))
    assert alerts == [] and monitor.stats().metrics["composite"].baseline == pytest.approx(0.9)
    means_alerts = []
    for _ in range(8):  # the mean slides 0.86, 0.82 (warning), 0.78 (critical), then stays at 0.70
        means_alerts.append(monitor.observe(make_result(0.7)))
    flat = [a for batch in means_alerts for a in batch]
    assert [(a.kind, a.severity) for a in flat] == [("drift", "warning"), ("drift", "critical")]
    assert [i for i, batch in enumerate(means_alerts) if batch] == [1, 2]
    warning, critical = flat
    assert warning.value == pytest.approx(0.82) and warning.threshold == pytest.approx(0.85)
    assert warning.baseline == pytest.approx(0.9) and "fell" in warning.message
    assert critical.threshold == pytest.approx(0.8)
    assert monitor.stats().metrics["composite"].drift_state == "critical"
    for _ in range(5):  # full recovery clears the state ...
        assert monitor.observe(make_result(0.9)) == []
    assert monitor.stats().metrics["composite"].drift_state is None
    again = [a for _ in range(3) for a in monitor.observe(make_result(0.7))]  # ... so a new drop alerts again
    assert [a.severity for a in again] == ["warning", "critical"]


@pytest.mark.parametrize("rearm, expected", [(0.5, 1), (1.0, 13)])
def test_drift_hovering_at_the_limit_alerts_once(rearm: float, expected: int) -> None:
    monitor = QualityMonitor(drift=[DriftRule("ssim", warning=0.05, baseline=1.0)], window=2, rearm=rearm)
    alerts = []
    for value in [0.96, 0.94, 0.95] * 13:  # window means 0.95, 0.945, 0.955: the drop flickers around 0.05
        alerts += monitor.observe(make_result(ssim=value))
    assert len(alerts) == expected  # with hysteresis one alert; without it (rearm 1) one per flicker
    assert all(a.kind == "drift" for a in alerts)


def test_drift_on_a_distance_alerts_when_it_rises() -> None:
    monitor = QualityMonitor(drift={"lpips": {"warning": 0.05, "baseline": 0.1}}, window=3)
    assert [a for v in (0.1, 0.1, 0.1, 0.0, 0.0) for a in monitor.observe(make_result(lpips=v))] == []  # improving
    monitor = QualityMonitor(drift={"lpips": {"warning": 0.05, "baseline": 0.1}}, window=3)
    alerts = [a for v in (0.1, 0.1, 0.3) for a in monitor.observe(make_result(lpips=v))]
    [alert] = alerts
    assert alert.kind == "drift" and "rose" in alert.message
    assert alert.value == pytest.approx(0.5 / 3) and alert.threshold == pytest.approx(0.15)


def test_drift_validation() -> None:
    with pytest.raises(InvalidParameterError):
        DriftRule("composite")
    with pytest.raises(InvalidParameterError):
        DriftRule("composite", warning=-0.1)
    with pytest.raises(InvalidParameterError):
        DriftRule("composite", warning=0.2, critical=0.1)
    with pytest.raises(InvalidParameterError):
        QualityMonitor(drift={"composite": {"warning": 0.1}}, window=1)


# --------------------------------------------------------------------------------------------------
# Sinks, inputs, config


def test_sinks_json_lines_logging_and_a_broken_sink(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "logs" / "alerts.jsonl"
    calls: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError("sink down")

    monitor = QualityMonitor(
        {"ssim": {"warning": 0.9, "critical": 0.5}},
        cooldown=0,
        sinks=[broken, JsonLinesSink(path), LoggingSink(), calls.append],
    )
    with caplog.at_level(logging.WARNING, logger="optimizer.monitor"):
        monitor.observe(make_result(ssim=0.8), "a")
        monitor.observe(make_result(ssim=0.2), "b")
    assert len(calls) == 2  # the broken sink did not stop the others
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    parsed = [Alert.from_dict(json.loads(line)) for line in lines]
    assert parsed == calls
    assert JsonLinesSink(path).read() == calls
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("ssim")]
    assert levels == [logging.WARNING, logging.CRITICAL]
    failures = [r for r in caplog.records if "alert sink" in r.getMessage()]
    assert len(failures) == 1 and "sink down" in failures[0].getMessage()  # one line per failing spell
    assert failures[0].exc_info is None  # a reason, not a traceback
    assert monitor.undelivered() == [(f"callback {broken.__qualname__}", a) for a in calls]  # kept, in order
    assert monitor.sink_errors() == {f"callback {broken.__qualname__}": "sink down"}


def test_a_failing_sink_keeps_its_alerts_and_delivers_them_in_order_once_it_recovers() -> None:
    delivered: list[Alert] = []
    down = [True]

    def flaky(alert: Alert) -> None:
        if down[0]:
            raise OSError("disk full")
        delivered.append(alert)

    monitor = QualityMonitor({"ssim": {"warning": 0.9}}, cooldown=0, sinks=[flaky])
    raised = monitor.observe(make_result(ssim=0.5), "a") + monitor.observe(make_result(ssim=0.4), "b")
    assert delivered == [] and [a for _, a in monitor.undelivered()] == raised and monitor.sink_failures == 2
    down[0] = False
    assert monitor.flush_sinks() == []
    assert delivered == raised and monitor.sink_errors() == {}
    raised += monitor.observe(make_result(ssim=0.3), "c")
    assert delivered == raised


def test_json_lines_sink_refuses_a_path_it_cannot_write(tmp_path: Path) -> None:
    from optimizer.errors import OutputError

    with pytest.raises(OutputError, match="cannot write the alerts file: is a folder"):
        JsonLinesSink(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create the folder"):
        JsonLinesSink(blocker / "alerts.jsonl")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_json_lines_sink_on_a_full_disk_raises_and_the_monitor_keeps_the_alerts() -> None:
    from optimizer.errors import OutputError

    sink = JsonLinesSink("/dev/full")
    monitor = QualityMonitor({"ssim": {"warning": 0.9}}, cooldown=0, sinks=[sink])
    with pytest.raises(OutputError, match="/dev/full: cannot write the alerts file: no space left on device"):
        sink.emit(Alert("warning", "ssim", 0.5, 0.9, "threshold", "m", "a", "t"))
    alerts = monitor.observe(make_result(ssim=0.5), "a")
    assert [a for _, a in monitor.undelivered()] == alerts
    assert "no space left on device" in monitor.sink_errors()["/dev/full"]


def test_consume_iterable_mapping_and_queue() -> None:
    monitor = QualityMonitor({"composite": {"warning": 0.5}}, cooldown=0)
    alerts = monitor.consume([make_result(0.9), make_result(0.4).to_dict(), make_result(0.3)])
    assert len(alerts) == 2 and monitor.stats().observed == 3

    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    out: list[list[Alert]] = []
    worker = threading.Thread(target=lambda: out.append(monitor.consume_queue(q, stop, poll=0.01)))
    worker.start()
    q.put(("item-7", make_result(0.1)))
    q.put(make_result(0.95))
    q.join()
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    [alerts] = out
    assert [a.item for a in alerts] == ["item-7"]
    assert monitor.stats().observed == 5
    q.put(None)  # a sentinel ends consumption too
    assert monitor.consume_queue(q) == []
    with pytest.raises(InvalidParameterError):
        monitor.observe(42)  # type: ignore[arg-type]


def test_silent_replay_restores_without_notifying() -> None:
    seen: list[Alert] = []
    monitor = QualityMonitor({"composite": {"warning": 0.5}}, sinks=[seen.append])
    assert len(monitor.observe(make_result(0.1), silent=True)) == 1
    assert seen == [] and monitor.stats().alerts["warning"] == 1


def test_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(
        "window = 20\ncooldown = 2\nrearm = 0.25\n"
        "[thresholds.composite]\nwarning = 0.7\ncritical = 0.5\n"
        "[thresholds.lpips]\nwarning = 0.15\n"
        "[drift.ssimulacra2]\nwarning = 3\nbaseline = 80\n"
    )
    config = load_monitor_config(path)
    assert config.window == 20 and config.cooldown == 2 and config.rearm == 0.25
    assert config.thresholds == (Threshold("composite", 0.7, 0.5), Threshold("lpips", 0.15))
    assert config.drift == (DriftRule("ssimulacra2", warning=3, baseline=80),)
    assert config.metrics == ["lpips", "ssimulacra2"]
    assert MonitorConfig.from_mapping({"monitor": config.to_dict()}) == config
    monitor = QualityMonitor.from_config(path)
    assert monitor.window == 20
    [alert] = monitor.observe(make_result(0.9, lpips=0.2))
    assert alert.metric == "lpips"


@pytest.mark.parametrize(
    "text",
    [
        "windw = 3\n",
        "[thresholds.composite]\nwarning = 0.7\nwarn = 0.6\n",
        "[thresholds.nope]\nwarning = 1\n",
        "[thresholds.ssimulacra2]\nwarning = 50\ncritical = 70\n",
        "[drift.composite]\nwarning = 0.1\nbaseline = 'first'\n",
        "thresholds = 3\n",
        "window = 0\n",
        "window = [\n",
    ],
)
def test_config_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.toml"):
        load_monitor_config(path)


def test_missing_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_monitor_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_monitor_config(tmp_path)


# --------------------------------------------------------------------------------------------------
# Folder watcher


@pytest.fixture(scope="module")
def crops(kodak_paths: list[Path]) -> list[PILImage.Image]:
    return [PILImage.open(p).convert("RGB").crop((200, 150, 264, 214)) for p in kodak_paths[:3]]


@pytest.fixture(scope="module")
def ssim_evaluator() -> Evaluator:
    return Evaluator(metrics=["ssim"]).load()


def _jpeg(image: PILImage.Image, quality: int) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _age(path: Path, seconds: float = 120.0) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def _folders(tmp_path: Path, crops: list[PILImage.Image]) -> tuple[Path, Path]:
    orig, proc = tmp_path / "orig", tmp_path / "proc"
    (orig / "sub").mkdir(parents=True)
    proc.mkdir()
    for i, image in enumerate(crops):
        target = orig / ("sub" if i == 2 else "") / f"img{i}.png"
        image.save(target)
        _age(target)
    return orig, proc


def test_watcher_scores_new_pairs_once(tmp_path: Path, crops: list, ssim_evaluator: Evaluator) -> None:
    orig, proc = _folders(tmp_path, crops)
    monitor = QualityMonitor({"ssim": {"warning": 0.9}}, cooldown=0)
    watcher = FolderWatcher(orig, proc, ssim_evaluator, monitor=monitor, settle=0.5)
    assert watcher.poll() == []  # no processed file yet
    (proc / "img0.jpg").write_bytes(_jpeg(crops[0], 95))
    _age(proc / "img0.jpg")
    [item] = watcher.poll()
    assert item.key == "img0" and item.error is None and item.result.scores["ssim"] > 0.9
    assert watcher.poll() == []  # never scored twice
    (proc / "sub").mkdir()
    hidden = proc / "sub" / ".img2.jpg"  # a writer's temporary name: ignored
    crops[2].save(hidden, "JPEG", quality=5)
    _age(hidden)
    assert watcher.poll() == []
    hidden.rename(proc / "sub" / "img2.jpg")
    [item] = watcher.poll()
    assert item.key == "sub/img2" and item.result.scores["ssim"] < 0.9
    stats = monitor.stats()
    assert stats.observed == 2 and stats.alerts["warning"] == 1
    assert watcher.done == {"img0", "sub/img2"}


def test_watcher_waits_for_half_written_files_and_survives_corrupt_ones(
    tmp_path: Path, crops: list, ssim_evaluator: Evaluator
) -> None:
    orig, proc = _folders(tmp_path, crops)
    alerts: list[Alert] = []
    monitor = QualityMonitor(sinks=[alerts.append])
    watcher = FolderWatcher(orig, proc, ssim_evaluator, monitor=monitor, settle=30.0)
    data = _jpeg(crops[1], 80)
    target = proc / "img1.jpg"
    target.write_bytes(data[: len(data) // 2])  # a writer is still busy: fresh mtime
    assert watcher.poll() == [] and watcher.pending == ["img1"]
    with open(target, "ab") as handle:  # still growing
        handle.write(data[len(data) // 2 : len(data) * 3 // 4])
    assert watcher.poll() == [] and alerts == []
    with open(target, "ab") as handle:
        handle.write(data[len(data) * 3 // 4 :])
    _age(target)  # finished a while ago, but its size changed since the last look: one more poll
    assert watcher.poll() == []
    [item] = watcher.poll()
    assert item.error is None and item.result is not None and alerts == []

    broken = proc / "img0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)  # a writer that died half-way
    _age(broken)
    [item] = watcher.poll()
    assert item.result is None and item.error
    [alert] = alerts
    assert alert.kind == "error" and alert.item == "img0" and alert.value is None
    json.dumps(alert.to_dict())
    assert watcher.poll() == []  # not retried while unchanged
    crops[0].save(broken)  # rewritten: a new observation
    _age(broken)
    [item] = watcher.poll()
    assert item.error is None
    assert monitor.stats().errors == 1 and monitor.stats().observed == 2


def test_watcher_reports_unusable_pairs(tmp_path: Path, crops: list, ssim_evaluator: Evaluator) -> None:
    orig, proc = _folders(tmp_path, crops)
    crops[0].resize((32, 32)).save(proc / "img0.png")  # different size
    for name in ("img1.jpg", "img1.webp"):  # ambiguous stem
        crops[1].save(proc / name)
    for path in proc.iterdir():
        _age(path)
    monitor = QualityMonitor()
    watcher = FolderWatcher(orig, proc, ssim_evaluator, monitor=monitor, settle=0.0)
    [item] = watcher.poll()
    assert "size" in (item.error or "")
    assert monitor.stats().errors == 3  # the size mismatch and both ambiguous files
    watcher.poll()
    assert monitor.stats().errors == 3
    with pytest.raises(InvalidParameterError):
        FolderWatcher(tmp_path / "absent", proc, ssim_evaluator)


def test_restart_from_state_file_rescores_nothing(tmp_path: Path, crops: list, ssim_evaluator: Evaluator) -> None:
    orig, proc = _folders(tmp_path, crops)
    state = tmp_path / "state" / "monitor.jsonl"
    for i, quality in ((0, 90), (1, 20)):
        (proc / f"img{i}.jpg").write_bytes(_jpeg(crops[i], quality))
        _age(proc / f"img{i}.jpg")
    (proc / "img9.png").write_bytes(b"not an image")  # unpaired: waits, no error
    first = QualityMonitor({"ssim": {"warning": 0.95}}, window=10, cooldown=0)
    watcher = FolderWatcher(orig, proc, ssim_evaluator, monitor=first, state_file=state, settle=0.0)
    assert len(watcher.poll()) == 2
    before = first.stats()
    with open(state, "a") as handle:
        handle.write('{"v": 1, "key": "torn')  # a crash in the middle of a write

    class Counting(Evaluator):
        calls = 0

        def for_reference(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().for_reference(*args, **kwargs)

    seen: list[Alert] = []
    second = QualityMonitor({"ssim": {"warning": 0.95}}, window=10, cooldown=0, sinks=[seen.append])
    restarted = FolderWatcher(orig, proc, Counting(metrics=["ssim"]), monitor=second, state_file=state, settle=0.0)
    assert restarted.replayed == 2 and restarted.done == {"img0", "img1"}
    assert restarted.poll() == [] and Counting.calls == 0
    after = second.stats()
    assert after.observed == before.observed == 2
    assert after.alerts == before.alerts and seen == []  # restored silently
    assert after.metrics["ssim"].mean == pytest.approx(before.metrics["ssim"].mean)
    (proc / "sub").mkdir(exist_ok=True)
    crops[2].save(proc / "sub" / "img2.png")
    _age(proc / "sub" / "img2.png")
    [item] = restarted.poll()
    assert item.key == "sub/img2" and Counting.calls == 1
    assert len(state.read_text().splitlines()) == 4  # two, the torn line, and the new one


# --------------------------------------------------------------------------------------------------
# CLI


def _cli(args: list[str]) -> int:
    import optimizer.cli.monitor_cmd  # noqa: F401  (registers the commands)
    from optimizer.cli import main

    return main(args)


def test_cli_once_alerts_and_restart(tmp_path: Path, crops: list) -> None:
    orig, proc = _folders(tmp_path, crops)
    for i, quality in enumerate((90, 10, 90)):
        target = proc / ("sub" if i == 2 else "") / f"img{i}.jpg"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(_jpeg(crops[i], quality))
        _age(target)
    config = tmp_path / "monitor.toml"
    config.write_text("[thresholds.ssim]\nwarning = 0.8\n")
    alerts = tmp_path / "alerts.jsonl"
    base = [
        "monitor",
        "--watch",
        str(orig),
        str(proc),
        "--metrics",
        "ssim",
        "--profile",
        "fast",
        "--config",
        str(config),
        "--alerts",
        str(alerts),
        "--once",
        "--settle",
        "0",
    ]
    assert _cli(base) == 0
    [line] = alerts.read_text().splitlines()
    alert = json.loads(line)
    assert alert["item"] == "img1" and alert["metric"] == "ssim" and alert["severity"] == "warning"
    state = proc / ".optimizer-monitor-state.jsonl"
    assert len(state.read_text().splitlines()) == 3
    assert _cli([*base, "--fail-on", "warning"]) == 0  # nothing new: no alert in this run
    assert len(alerts.read_text().splitlines()) == 1 and len(state.read_text().splitlines()) == 3


def test_cli_fail_on_and_usage_errors(tmp_path: Path, crops: list) -> None:
    orig, proc = _folders(tmp_path, crops)
    (proc / "img1.jpg").write_bytes(_jpeg(crops[1], 5))
    _age(proc / "img1.jpg")
    state = tmp_path / "s.jsonl"
    args = ["monitor", "--watch", str(orig), str(proc), "--profile", "fast", "--once", "--state", str(state)]
    assert _cli([*args, "--fail-on", "critical"]) == 1  # default composite thresholds: critical below 0.5
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds.composite]\nwarnin = 0.7\n")
    assert _cli([*args, "--config", str(bad)]) == 2
    assert _cli(["monitor", "--watch", str(orig), str(tmp_path / "absent"), "--once"]) == 2
    assert _cli([*args, "--fail-on", "sometimes"]) == 2


# --------------------------------------------------------------------------------------------------
# Hostile state and alert files


def _scored_pair(tmp_path: Path, crops: list) -> tuple[list[str], Path]:
    orig, proc = _folders(tmp_path, crops[:1])
    (proc / "img0.jpg").write_bytes(_jpeg(crops[0], 5))
    _age(proc / "img0.jpg")
    state = tmp_path / "state.jsonl"
    args = ["monitor", "--watch", str(orig), str(proc), "--metrics", "ssim", "--once", "--settle", "0"]
    return [*args, "--state", str(state)], state


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_state_file_that_is_a_folder_is_exit_3(tmp_path: Path, crops: list, capsys) -> None:
    args, state = _scored_pair(tmp_path, crops)
    state.mkdir()
    assert _cli(args) == 3
    line = _one_line_error(capsys.readouterr().err)
    assert str(state) in line and "is a folder" in line


@pytest.mark.parametrize(
    "bad_line",
    [
        b'{"key": "x", "signature": [1, 2, 3, 4], "time": NaN, "error": "e"}',
        b'{"key": "x", "signature": [1, 2, 3, 4], "time": "nan", "error": "e"}',
        b'{"key": "x", "signature": [1, 2, 3, 4], "time": 1e300, "error": "e"}',
        b'{"key": 5, "signature": [1, 2, 3, 4], "error": "e"}',
        b'{"key": "x", "signature": "abcd", "error": "e"}',
        b'{"key": "x", "signature": [1, 2, 3, 4], "result": {"scores": [], "composite": 1}}',
        b'{"key": "x", "signature": [1, 2, 3, 4], "result": [1]}',
        b'["a list"]',
        b"\xff\xfe not utf-8 \xc3",
        b"[" * 5000,
    ],
    ids=[
        "nan-literal",
        "nan-string",
        "huge-time",
        "int-key",
        "str-signature",
        "bad-result",
        "list-result",
        "list",
        "bad-utf8",
        "deep",
    ],
)
def test_cli_malformed_state_lines_are_skipped_with_a_warning(
    tmp_path: Path, crops: list, bad_line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    args, state = _scored_pair(tmp_path, crops)
    assert _cli(args) == 0  # writes one valid line
    good = state.read_bytes()
    state.write_bytes(good + bad_line + b"\n")
    with caplog.at_level(logging.WARNING, logger="optimizer.monitor"):
        assert _cli(args) == 0
    warnings_ = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings_) == 1 and "line 2" in warnings_[0] and str(state) in warnings_[0]
    assert state.read_bytes().startswith(good + bad_line)  # nothing rewritten, nothing lost


def test_cli_file_that_is_not_a_state_file_is_refused_and_left_alone(tmp_path: Path, crops: list, capsys) -> None:
    args, state = _scored_pair(tmp_path, crops)
    png = PILImage.new("RGB", (8, 8))
    png.save(state, "PNG")
    before = state.read_bytes()
    assert _cli(args) == 3
    line = _one_line_error(capsys.readouterr().err)
    assert str(state) in line and "not a monitor state file" in line
    assert state.read_bytes() == before


def test_cli_torn_last_state_line_is_recovered(tmp_path: Path, crops: list) -> None:
    args, state = _scored_pair(tmp_path, crops)
    state.write_bytes(b'{"v": 1, "key": "img0", "signa')
    assert _cli(args) == 0
    lines = state.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["key"] == "img0"


def test_cli_alerts_path_that_is_a_folder_is_exit_3_before_scoring(tmp_path: Path, crops: list, capsys) -> None:
    args, state = _scored_pair(tmp_path, crops)
    folder = tmp_path / "alerts"
    folder.mkdir()
    assert _cli([*args, "--alerts", str(folder)]) == 3
    line = _one_line_error(capsys.readouterr().err)
    assert str(folder) in line and "is a folder" in line
    assert not state.exists() or state.read_text() == ""  # nothing was scored


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_cli_alerts_on_a_full_disk_are_printed_on_stderr_and_exit_3(tmp_path: Path, crops: list, capsys) -> None:
    args, _ = _scored_pair(tmp_path, crops)
    config = tmp_path / "monitor.toml"
    config.write_text("[thresholds.ssim]\nwarning = 0.99\n")
    assert _cli([*args, "--config", str(config), "--alerts", "/dev/full"]) == 3
    err = capsys.readouterr().err
    line = _one_line_error(err)
    assert "1 alert(s) could not be delivered" in line and "/dev/full" in line and "no space left" in line
    [kept] = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert kept["item"] == "img0" and kept["metric"] == "ssim"
