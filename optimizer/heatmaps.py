"""Heat maps of where a pair differs: one fixed scale per map, a colour bar that states it, one naming rule.

Scale
    Each map is drawn on a fixed scale, the same for every image and quality, so maps compare: a JPEG q95
    map is darker than a q10 map of the same image. A metric's scale is :attr:`MetricSpec.damage_scale`
    (1 - SSIM 0.43, SSIMULACRA 2 12, LPIPS 0.6), the mean absolute RGB difference's is
    :data:`DIFFERENCE_SCALE` (0.09). They were measured by ``benchmarks/measure_damage_scales.py`` (results
    in ``benchmarks/RESULTS.md``): the 99th percentile of each map at JPEG quality 30 on Kodak, the median
    over images; damage beyond it is drawn at the brightest colour. LPIPS needs weights that were not
    available for the measurement: its scale is an estimate, 1.5 times the end of its norm range.

Colour
    ``inferno``: black where the images agree, through purple and orange to pale yellow at the scale. The
    written PNGs carry a colour bar under the map with the scale's ends and middle and what the map shows.

Names
    ``<folder>/<key>.<map>.png``, where ``key`` is the processed file's path relative to its folder, without
    extension (for a single pair, the processed file's stem): ``evaluate a.png b.webp --maps M`` and
    ``evaluate refs/ outs/ --maps M`` both write ``M/b.ssim.png`` for ``outs/b.webp`` (``M/sub/b.ssim.png``
    for ``outs/sub/b.webp``). ``<map>`` is the metric's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics.registry import get_spec

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

__all__ = ["DIFFERENCE", "DIFFERENCE_SCALE", "colour_bar", "fixed_scale", "heatmap", "map_path", "write_maps"]

#: The name of the mean absolute RGB difference map (not a metric).
DIFFERENCE = "difference"
#: The mean absolute RGB difference drawn brightest (measured: JPEG q30 on Kodak, 99th percentile).
DIFFERENCE_SCALE = 0.09
COLORMAP = "inferno"
_BAR_HEIGHT = 30
_MIN_WIDTH = 200


def fixed_scale(name: str) -> float:
    """The damage value a map is drawn brightest at: :attr:`MetricSpec.damage_scale`, or
    :data:`DIFFERENCE_SCALE` for ``difference``.

    Args:
        name: A metric with a spatial map, or ``difference``.

    Returns:
        The scale (> 0).
    """
    return DIFFERENCE_SCALE if name == DIFFERENCE else get_spec(name).damage_scale


def map_path(out_dir: str | Path, key: str, name: str) -> Path:
    """Where a map is written (see the module docs): ``out_dir/<key>.<name>.png``.

    Args:
        out_dir: The maps folder.
        key: The processed file's path relative to its folder, without extension (a POSIX path).
        name: The map (a metric name, or ``difference``).

    Returns:
        The path.
    """
    return Path(out_dir) / f"{key}.{name}.png"


def write_maps(maps: Mapping[str, np.ndarray], out_dir: Path, key: str) -> list[Path]:
    """Write each metric's map as a heat map of its damage (:meth:`MetricSpec.damage`; bright = more damage)
    on its fixed scale, with a colour bar, under :func:`map_path`.

    Args:
        maps: Metric name -> spatial map (as :meth:`ReferenceScorer.maps` returns them).
        out_dir: The maps folder.
        key: The processed file's key (see the module docs).

    Returns:
        The files written.
    """
    from ._files import write_atomic

    written = []
    for metric, arr in maps.items():
        target = map_path(out_dir, key, metric)
        image = heatmap(get_spec(metric).damage(arr), fixed_scale(metric), legend=legend_label(metric))
        write_atomic(target, _png(image))
        written.append(target)
    return written


def legend_label(name: str) -> str:
    """What a map shows, for its colour bar: ``1 - SSIM``, ``|RGB difference|``, ``ssimulacra2 damage``."""
    if name == DIFFERENCE:
        return "|RGB difference|"
    spec = get_spec(name)
    return f"1 - {name.upper() if name == 'ssim' else name}" if spec.similarity_map else f"{name} damage"


def heatmap(damage: np.ndarray, scale: float, *, legend: str | None = None) -> PILImage.Image:
    """An RGB image of ``damage`` (0 = none) on a fixed ``scale``, with a colour bar below when ``legend``
    names what it shows.

    Args:
        damage: ``H x W`` damage (non-finite values drawn as 0).
        scale: The value drawn brightest (:func:`fixed_scale`); larger values are drawn at it.
        legend: Text for the colour bar; None draws the map alone, pixel for pixel.

    Returns:
        The PIL image (``W x H``, or 30 px taller and at least 200 px wide with the colour bar).
    """
    import numpy as np
    from PIL import Image as PILImage

    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    arr = np.nan_to_num(np.asarray(damage, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    picture = PILImage.fromarray(_colours(np.clip(np.maximum(arr, 0.0) / scale, 0.0, 1.0)), "RGB")
    if legend is None:
        return picture
    bar = colour_bar(scale, legend, max(picture.width, _MIN_WIDTH))
    canvas = PILImage.new("RGB", (bar.width, picture.height + bar.height), "white")
    canvas.paste(picture, (0, 0))
    canvas.paste(bar, (0, picture.height))
    return canvas


def colour_bar(scale: float, label: str, width: int) -> PILImage.Image:
    """A colour bar ``width`` pixels wide: the colours from 0 to ``scale``, the value at each end (``>= scale``
    at the right: larger damage is drawn there too) and ``label`` between them.

    Args:
        scale: The value at the right end.
        label: What the colours measure (left out when the bar is too narrow for it).
        width: Pixels.

    Returns:
        A white RGB strip 30 px high.
    """
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    strip = PILImage.new("RGB", (width, _BAR_HEIGHT), "white")
    pad = 4
    ramp = np.repeat(np.linspace(0.0, 1.0, max(width - 2 * pad, 1), dtype=np.float32)[None, :], 8, axis=0)
    strip.paste(PILImage.fromarray(_colours(ramp), "RGB"), (pad, 2))
    draw = ImageDraw.Draw(strip)
    font = _font()
    y = 13
    right = f">= {scale:.3g}"
    right_width = draw.textlength(right, font=font)
    draw.text((pad, y), "0", fill="black", font=font)
    draw.text((width - pad - right_width, y), right, fill="black", font=font)
    label_width = draw.textlength(label, font=font)
    left_end = pad + draw.textlength("0", font=font) + 6
    right_start = width - pad - right_width - 6
    if label_width <= right_start - left_end:
        x = min(max((width - label_width) / 2, left_end), right_start - label_width)
        draw.text((x, y), label, fill="dimgray", font=font)
    return strip


def _colours(unit: np.ndarray) -> np.ndarray:
    """``H x W`` values in [0, 1] as ``H x W x 3`` uint8 colours of the colour map."""
    import numpy as np
    from matplotlib import colormaps

    rgba = colormaps[COLORMAP](unit)
    out: np.ndarray = (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)
    return out


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _png(image: PILImage.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
