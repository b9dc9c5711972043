"""Heat maps: a fixed scale per metric (maps of different qualities compare), a colour bar in every written
map and figure, and one naming rule for single pairs and folders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image as PILImage

from optimizer import plots
from optimizer.cli import EXIT_OK, main
from optimizer.evaluator import Evaluator
from optimizer.heatmaps import DIFFERENCE_SCALE, colour_bar, fixed_scale, heatmap, map_path, write_maps
from optimizer.imageio import load_image
from optimizer.metrics.registry import get_spec, specs

LUT = (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.float32)
BAR = 30


def colour_index(pixels: np.ndarray) -> np.ndarray:
    """Each RGB pixel's position on the inferno colour map, 0..255 (nearest entry)."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    distances = ((flat[:, None, :] - LUT[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(distances.argmin(axis=1).reshape(pixels.shape[:2]))


@pytest.fixture(scope="module")
def pair_files(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 256x192 Kodak crop as PNG and as JPEG q95 and q10, in two folders (ref/, q95/, q10/)."""
    root = tmp_path_factory.mktemp("heat")
    source = PILImage.open(kodak_paths[4]).convert("RGB").crop((100, 100, 356, 292))
    out = {}
    for name in ("ref", "q95", "q10"):
        folder = root / name
        folder.mkdir()
        path = folder / ("photo.png" if name == "ref" else "photo.jpg")
        if name == "ref":
            source.save(path)
        else:
            source.save(path, quality=int(name[1:]))
        out[name] = path
    return out


def _map_pixels(path: Path) -> np.ndarray:
    """The map part of a written heat map (above its colour bar, left of any padding)."""
    arr = np.asarray(PILImage.open(path).convert("RGB"))
    return arr[: arr.shape[0] - BAR, :256]


def test_scales_are_fixed_per_metric() -> None:
    assert fixed_scale("ssim") == get_spec("ssim").damage_scale == 0.43
    assert fixed_scale("ssimulacra2") == 12.0 and fixed_scale("difference") == DIFFERENCE_SCALE
    assert all(spec.damage_scale > 0 for spec in specs())
    damage = np.full((4, 4), 0.2, np.float32)
    same = np.asarray(heatmap(damage, 0.4))
    assert same.shape == (4, 4, 3) and set(colour_index(same).ravel().tolist()) <= {127, 128}  # half the scale
    assert np.asarray(heatmap(damage * 10, 0.4)).tolist() == np.asarray(heatmap(damage * 5, 0.4)).tolist()  # >= scale
    with pytest.raises(ValueError, match="scale"):
        heatmap(damage, 0.0)


def test_q95_maps_are_visibly_cooler_than_q10_maps(pair_files: dict[str, Path], tmp_path: Path) -> None:
    scorer = Evaluator(metrics=["ssim", "ssimulacra2"]).for_reference(pair_files["ref"])
    means = {}
    for quality in ("q95", "q10"):
        written = write_maps(scorer.maps(load_image(pair_files[quality])), tmp_path / quality, "photo")
        means[quality] = {p.name.split(".")[1]: float(colour_index(_map_pixels(p)).mean()) for p in written}
    for metric in ("ssim", "ssimulacra2"):
        # one scale for both: the q95 map sits far lower on it (a per-image scale drew both alike)
        assert means["q95"][metric] < 0.5 * means["q10"][metric], (metric, means)
        assert means["q10"][metric] > 40, (metric, means)


def test_written_maps_carry_a_colour_bar(pair_files: dict[str, Path], tmp_path: Path) -> None:
    scorer = Evaluator(metrics=["ssim"]).for_reference(pair_files["ref"])
    (path,) = write_maps(scorer.maps(load_image(pair_files["q10"])), tmp_path, "photo")
    image = PILImage.open(path)
    assert image.size == (256, 192 + BAR) and image.mode == "RGB"
    bar = np.asarray(image)[192:]
    row = bar[5, 4:-4]  # the gradient: inferno from 0 to the scale
    assert colour_index(row[None, :1])[0, 0] <= 2 and colour_index(row[None, -1:])[0, 0] >= 253
    assert np.all(np.diff(colour_index(row[None, :])[0].astype(int)) >= 0)
    assert (bar[14:] < 100).any()  # the numbers and label: dark text on white
    narrow = colour_bar(0.43, "1 - SSIM", 60)  # too narrow for the label: ends only, no overlap
    assert narrow.size == (60, BAR)


def test_single_pairs_and_folders_name_maps_alike(pair_files: dict[str, Path], tmp_path: Path) -> None:
    single, folders = tmp_path / "single", tmp_path / "folders"
    ref, q10 = pair_files["ref"], pair_files["q10"]
    assert main(["evaluate", str(ref), str(q10), "--metrics", "ssim,ssimulacra2", "--maps", str(single)]) == EXIT_OK
    assert (
        main(["evaluate", str(ref.parent), str(q10.parent), "--metrics", "ssim,ssimulacra2"] + ["--maps", str(folders)])
        == EXIT_OK
    )
    names = sorted(p.relative_to(single).as_posix() for p in single.rglob("*.png"))
    assert names == ["photo.ssim.png", "photo.ssimulacra2.png"]
    assert names == sorted(p.relative_to(folders).as_posix() for p in folders.rglob("*.png"))
    assert map_path(single, "photo", "ssim") == single / "photo.ssim.png"
    for name in names:  # same pair, same scale: the same picture
        assert np.array_equal(np.asarray(PILImage.open(single / name)), np.asarray(PILImage.open(folders / name)))


def test_metric_maps_figure_has_a_colour_bar_per_map(pair_files: dict[str, Path]) -> None:
    fig = plots.metric_maps(pair_files["ref"], pair_files["q10"])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 3  # |difference|, 1 - SSIM, ssimulacra2
    labels = sorted(bar.get_ylabel() for bar in bars)
    assert labels == sorted(["1 - SSIM", "|RGB difference|", "ssimulacra2 damage"])
    limits = sorted(round(bar.get_ylim()[1], 3) for bar in bars)
    assert limits == sorted([0.43, 12.0, DIFFERENCE_SCALE])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")
