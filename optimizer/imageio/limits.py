"""Input limits: the pixel limit (the decompression-bomb guard) and the memory budget.

Both are checked from a file's header, before any pixel is decoded, so a few kilobytes that claim a huge
image cost nothing.

**Pixel limit.** :data:`DEFAULT_MAX_PIXELS` (100 megapixels) unless a call names its own
(``load_image(..., max_pixels=N)``, the way to go in a library or a service) or the process default is
changed with :func:`set_max_pixels` (one integer, read at each load; meant for applications and scripts).
Nothing here touches Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``): the loader reads headers through
Pillow's format plugins without ``Image.open``'s check, so the limit given here is the one that counts.
Pillow still checks its own guard (twice ``MAX_IMAGE_PIXELS``: 179 megapixels by default) in its WebP
plugin, when it seeks GIF and MPO frames and when it decodes TIFF tiles; a call that allows more than that
for those formats also needs the application to raise Pillow's guard, and the error says so. (The library
does not raise it for the duration of a load: that would lift the guard for every other thread too.)

**Memory budget.** Decoding an image, and above all scoring it, takes memory in proportion to its pixels:
a 12 kB PNG of 9999 x 9999 passes a 100-megapixel limit yet needs about 60 GB to score with the default
profile. :func:`check_memory` compares an estimate (:func:`decode_memory`, :func:`scoring_memory`, from
per-pixel costs measured by ``benchmarks/bench_memory.py``) with the budget and raises
:class:`~optimizer.errors.ResourceLimitError` (exit code 3), naming the estimate, the budget and how to
raise it, instead of letting the allocation fail half-way. The budget is, in order: a ``max_memory``
argument, the environment variable :data:`MAX_MEMORY_ENV` (``OPTIMIZER_MAX_MEMORY=48G``; ``0`` or
``none`` turns the check off), else :data:`DEFAULT_MEMORY_FRACTION` of this machine's memory (or of the
container's cgroup limit when lower).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..errors import ImageTooLargeError, InvalidImageError, InvalidParameterError, ResourceLimitError

__all__ = [
    "allocation_guard",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MEMORY_FRACTION",
    "DECODE_BYTES_PER_PIXEL",
    "MAX_MEMORY_ENV",
    "SCORING_BYTES_PER_PIXEL",
    "check_memory",
    "check_pixels",
    "decode_memory",
    "format_bytes",
    "get_max_pixels",
    "machine_memory",
    "max_memory_budget",
    "parse_memory_size",
    "scoring_memory",
    "set_max_pixels",
    "validate_max_pixels",
]

#: Largest accepted image, in pixels (100 megapixels: a 12000 x 8000 photo fits, a bomb does not).
DEFAULT_MAX_PIXELS = 100_000_000

#: Environment variable holding the memory budget: bytes, or a number with a K, M, G or T suffix (powers of
#: 1024); ``0`` or ``none`` turns the check off.
MAX_MEMORY_ENV = "OPTIMIZER_MAX_MEMORY"

#: Share of the machine's memory (or the cgroup limit) used as the budget when none is given.
DEFAULT_MEMORY_FRACTION = 0.8

#: Peak bytes per pixel of loading an image into the pixel contract (decoder buffer, the float32 planes and
#: their temporaries): ``benchmarks/bench_memory.py`` measured 19-27 for PNG (8-bit, RGBA, 16-bit), JPEG and
#: WebP; the margin covers one more float32 copy for ICC conversion or an EXIF rotation.
DECODE_BYTES_PER_PIXEL = 40

#: Scoring cost per pixel of each metric on CPU, measured by ``benchmarks/bench_memory.py``: (bytes kept for
#: the reference while the scorer lives, bytes needed only while one candidate is scored). The networks' own
#: weights are not counted. A metric missing here counts :data:`_UNKNOWN_METRIC`.
SCORING_BYTES_PER_PIXEL: dict[str, tuple[int, int]] = {
    "psnr": (25, 24),
    "ssim": (120, 132),
    "ms_ssim": (136, 154),
    "ssimulacra2": (51, 114),
    "lpips": (119, 85),
    "stlpips": (263, 845),
    "dists": (387, 1111),
}
_UNKNOWN_METRIC = (400, 1200)
#: Holding the reference and the candidate as float32 RGB, and decoding the candidate, while scoring.
_SCORING_BASE_BYTES_PER_PIXEL = 48
#: Margin over the model: the measured peaks of the four profiles' metric sets were up to 10% above it.
_SCORING_MARGIN = 1.15

_max_pixels = DEFAULT_MAX_PIXELS


# --------------------------------------------------------------------------------------------------
# Pixel limit


def validate_max_pixels(limit: object) -> int:
    """Check a pixel limit.

    Args:
        limit: The value to check.

    Returns:
        ``limit`` when it is a positive integer; otherwise :class:`InvalidParameterError` is raised.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise InvalidParameterError(f"max_pixels must be a positive integer, got {limit!r}")
    return limit


def set_max_pixels(limit: int) -> None:
    """Set the process default pixel limit, used by every later load that does not name its own.

    Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``) is left alone. Libraries and services should pass
    ``max_pixels=`` to each call instead.

    Args:
        limit: A positive number of pixels.
    """
    global _max_pixels
    _max_pixels = validate_max_pixels(limit)


def get_max_pixels() -> int:
    """The process default pixel limit.

    Returns:
        The limit applied when a load does not name its own (:func:`set_max_pixels`).
    """
    return _max_pixels


def check_pixels(width: int, height: int, limit: int, source: str | None) -> None:
    """Refuse a zero-size image, or one over the pixel limit.

    Args:
        width: Width from the header.
        height: Height from the header.
        limit: The pixel limit in force.
        source: The label errors name.
    """
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has zero size ({width}x{height})", source)
    if width * height > limit:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(raise it with max_pixels= or set_max_pixels() if this image is trusted)",
            source,
        )


# --------------------------------------------------------------------------------------------------
# Memory budget

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory_size(text: str) -> int | None:
    """Read a memory size such as ``"48G"``, ``"512 MiB"`` or ``"1000000"`` (bytes).

    Args:
        text: The size; ``"0"``, ``"none"`` or ``"off"`` mean no budget.

    Returns:
        Bytes, or None for no budget. A malformed size is an :class:`InvalidParameterError`.
    """
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    match = _SIZE.match(text)
    if match is None:
        raise InvalidParameterError(
            f"a memory size is a number of bytes or a number with K, M, G or T (e.g. 48G), got {text!r}"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    return size or None


def format_bytes(size: int) -> str:
    """A size for messages: ``"41.9 GiB"``.

    Args:
        size: Bytes.

    Returns:
        The size in the largest unit that keeps it at or above 1.
    """
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def machine_memory() -> int | None:
    """Physical memory, or the cgroup (container) limit when it is lower.

    Returns:
        Bytes, or None where neither can be read.
    """
    sizes: list[int] = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit() and 0 < int(text) < 1 << 60:  # cgroup v1 writes a huge number for "no limit"
            sizes.append(int(text))
    return min(sizes) if sizes else None


def max_memory_budget(max_memory: int | None = None) -> tuple[int | None, str]:
    """The memory budget in force, and where it comes from (for messages).

    Args:
        max_memory: An explicit budget in bytes (wins over everything); ``0`` means no budget.

    Returns:
        (bytes or None for no budget, a short description of its origin).
    """
    if max_memory is not None:
        if isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory < 0:
            raise InvalidParameterError(f"max_memory must be a number of bytes >= 0, got {max_memory!r}")
        return (max_memory or None), "max_memory"
    text = os.environ.get(MAX_MEMORY_ENV)
    if text is not None and text.strip():
        return parse_memory_size(text), MAX_MEMORY_ENV
    total = machine_memory()
    if total is None:
        return None, "no budget"
    return int(
        total * DEFAULT_MEMORY_FRACTION
    ), f"{DEFAULT_MEMORY_FRACTION:.0%} of this machine's {format_bytes(total)}"


def check_memory(needed: int, what: str, source: str | None = None, *, max_memory: int | None = None) -> None:
    """Refuse work whose estimated peak memory is over the budget.

    Args:
        needed: Estimated peak bytes.
        what: What needs it, for the message (``"decoding a 9999x9999 image"``).
        source: The file or label the error names.
        max_memory: Explicit budget in bytes (see :func:`max_memory_budget`).

    Raises:
        ResourceLimitError: naming the estimate, the budget and how to raise it.
    """
    budget, origin = max_memory_budget(max_memory)
    if budget is None or needed <= budget:
        return
    wanted = needed * 5 // 4  # some headroom over the estimate
    suggestion = f"{-(-wanted // 1024**3)}G" if wanted >= 1024**3 else f"{-(-wanted // 1024**2)}M"
    raise ResourceLimitError(
        f"{what} needs about {format_bytes(needed)} of memory, over the budget of {format_bytes(budget)} "
        f"({origin}); if the machine has the memory, raise it with {MAX_MEMORY_ENV}={suggestion} or max_memory=",
        source,
    )


def decode_memory(width: int, height: int, file_bytes: int = 0) -> int:
    """Estimated peak bytes of loading an image of this size (plus the file, held while decoding).

    Args:
        width: Width from the header.
        height: Height from the header.
        file_bytes: Size of the encoded file.

    Returns:
        Bytes.
    """
    return width * height * DECODE_BYTES_PER_PIXEL + file_bytes


def scoring_memory(metrics: Iterable[str], width: int, height: int) -> int:
    """Estimated peak bytes of scoring a pair of this size with these metrics.

    Every metric's reference side is kept at once, while the candidate is scored one metric at a time: the
    estimate is the base cost, plus every metric's kept bytes, plus the largest per-candidate cost, with a
    15% margin (for the default profile about 610 bytes per pixel against 400 measured).

    Args:
        metrics: Metric names.
        width: Image width.
        height: Image height.

    Returns:
        Bytes.
    """
    costs = [SCORING_BYTES_PER_PIXEL.get(name, _UNKNOWN_METRIC) for name in metrics]
    per_pixel = _SCORING_BASE_BYTES_PER_PIXEL + sum(kept for kept, _ in costs) + max((t for _, t in costs), default=0)
    return int(width * height * per_pixel * _SCORING_MARGIN)


#: Words in the ``RuntimeError`` torch raises when an allocation fails (CPU: "DefaultCPUAllocator: can't
#: allocate memory"; CUDA: "CUDA out of memory", a ``torch.OutOfMemoryError``).
_ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "cannot allocate memory")


@contextmanager
def allocation_guard(what: str, source: str | None = None) -> Iterator[None]:
    """Turn a failed allocation inside the block into a :class:`~optimizer.errors.ResourceLimitError`.

    Catches ``MemoryError`` and torch's allocation ``RuntimeError`` (CPU or CUDA), so running out of memory
    is a clean error for the file at hand (a batch goes on with the next one), never a crash. Other
    ``RuntimeError`` exceptions pass through.

    Args:
        what: What was being done, for the message (``"scoring a 9999x9999 image"``).
        source: The file the error names.

    Returns:
        A context manager.
    """
    try:
        yield
    except ResourceLimitError:
        raise
    except MemoryError:
        raise ResourceLimitError(f"ran out of memory {what}; {_LOWER_IT}", source) from None
    except RuntimeError as exc:
        text = str(exc).lower()
        if not any(words in text for words in _ALLOCATION_FAILURES):
            raise
        raise ResourceLimitError(f"ran out of memory {what}; {_LOWER_IT}", source) from None


_LOWER_IT = (
    "the machine had less free memory than the estimate allowed for: free some, or set "
    f"{MAX_MEMORY_ENV} lower so that such work is refused before it starts"
)
