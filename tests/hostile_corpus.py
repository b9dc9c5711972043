"""A corpus of bad and odd input files, generated on demand, for every command that reads images.

:func:`build_corpus` writes about 80 files (and special paths: a FIFO, a folder named like an image, symlink
loops, ``/dev/zero``) into a folder and returns one :class:`HostileFile` per entry, each with the outcome a
correct loader must give:

``valid``
    A legitimate image (odd modes, EXIF rotations, broken metadata that costs nothing but a warning):
    it loads, and commands exit 0.
``invalid``
    Not a usable image (truncated, corrupt, not an image, not a regular file): an
    :class:`~optimizer.errors.InvalidImageError`, exit code 3.
``resource``
    Over the pixel limit or the memory budget (run with ``OPTIMIZER_MAX_MEMORY`` at
    :data:`TEST_MEMORY_BUDGET`): :class:`~optimizer.errors.ImageTooLargeError` or
    :class:`~optimizer.errors.ResourceLimitError`, exit code 3.
``either``
    Damage that no decoder can see in formats without checksums (flipped bits in WebP/AVIF data, a
    JPEG whose damage happens to decode): it loads, or it is an ``InvalidImageError``.
``tiny``
    A legitimate but tiny image (1 x 1): it loads; scoring may refuse it as a usage or input error.

Everything is built from numbers (no file from outside the folder but ``/dev/zero``); generation takes
about a second. Other suites (``compress``, ``apply``, ``tune``) reuse :func:`build_corpus`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image as PILImage

__all__ = ["ALLOWED", "TEST_MEMORY_BUDGET", "HostileFile", "Outcome", "build_corpus", "cli_problems"]

Outcome = Literal["valid", "invalid", "resource", "either", "tiny"]

#: The memory budget the corpus is meant to run under (``OPTIMIZER_MAX_MEMORY``): small enough that a
#: 9999 x 9999 image is refused from its header, large enough for every valid image here.
TEST_MEMORY_BUDGET = "2G"

#: Exit codes each outcome allows. A file no decoder can judge ("either") may load or be refused.
ALLOWED: dict[str, set[int]] = {"valid": {0}, "invalid": {3}, "resource": {3}, "either": {0, 3}, "tiny": {0, 2, 3}}

W, H = 64, 48


@dataclass(frozen=True)
class HostileFile:
    """One corpus entry: a short name, the path to hand to a command, and the expected outcome."""

    name: str
    path: Path
    outcome: Outcome


def _photo(width: int = W, height: int = H, seed: int = 7) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, and lossy codecs change it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=2)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _encode(image: PILImage.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, depth: int, colour: int, idat: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )


def _huge_bilevel_png(side: int = 9999) -> bytes:
    """A real, complete side x side 1-bit PNG of about 12 kB (a valid file, 100 megapixels when decoded)."""
    row = b"\x00" + bytes((side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return _png(side, side, 1, 0, idat)


def _flip(data: bytes, at: float, count: int = 24, step: int = 3) -> bytes:
    out = bytearray(data)
    start = int(len(out) * at)
    for i in range(start, min(len(out), start + count * step), step):
        out[i] ^= 0xA5
    return bytes(out)


def _with_exif_orientation(image: PILImage.Image, orientation: int) -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    return _encode(image, "JPEG", quality=90, exif=exif.tobytes())


def _jpeg_claiming(width: int, height: int, source: bytes) -> bytes:
    data = bytearray(source)
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _gif_header(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    return screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00\x3b"


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info)) + info + bytes(16)


def _webp_claiming(width: int, height: int) -> bytes:
    """A VP8X header whose canvas is width x height, with no image data."""
    vp8x = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _files(folder: Path) -> dict[str, tuple[str, bytes, Outcome]]:
    """name -> (file name, content, outcome) for every regular-file entry."""
    rgb = PILImage.fromarray(_photo())
    other = PILImage.fromarray(_photo(seed=8))
    rgba = PILImage.fromarray(np.dstack([_photo(), np.linspace(0, 255, W * H).reshape(H, W).astype(np.uint8)]))
    png = _encode(rgb, "PNG")
    jpeg = _encode(rgb, "JPEG", quality=90)
    webp = _encode(rgb, "WEBP", quality=80)
    avif = _encode(rgb, "AVIF", quality=60, speed=8)
    gif = _encode(rgb.convert("P"), "GIF")
    tiff = _encode(rgb, "TIFF", compression="tiff_lzw")
    bmp = _encode(rgb, "BMP")
    grey16 = PILImage.fromarray(_photo()[..., 0].astype(np.uint16) * 257)
    palette = rgb.convert("P", palette=PILImage.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    broken_icc = b"\x00\x00\x02\x00garbage, not an ICC profile" + bytes(480)
    iccp = _png_chunk(b"iCCP", b"broken\x00\x00" + zlib.compress(broken_icc))
    raw_rows = b"".join(b"\x00" + _photo()[y].tobytes() for y in range(H))
    text = b"This is not an image: just text saved under an image name.\n" * 8
    entries: dict[str, tuple[str, bytes, Outcome]] = {
        # PNG
        "png": ("png.png", png, "valid"),
        "png-truncated-half": ("png-truncated-half.png", png[: len(png) // 2], "invalid"),
        "png-truncated-tail": ("png-truncated-tail.png", png[:-5], "invalid"),
        "png-bitflip": ("png-bitflip.png", _flip(png, 0.5), "invalid"),
        "png-empty": ("png-empty.png", b"", "invalid"),
        "png-signature-only": ("png-signature-only.png", png[:8], "invalid"),
        "png-claims-100000x100000": (
            "png-claims-100000.png",
            _png(100_000, 100_000, 8, 2, zlib.compress(b"")),
            "resource",
        ),
        "png-9999x9999-12kB": ("png-9999x9999.png", _huge_bilevel_png(), "resource"),
        "png-zero-width": ("png-zero-width.png", _png(0, H, 8, 2, zlib.compress(raw_rows)), "invalid"),
        "png-no-idat-data": ("png-no-idat-data.png", _png(W, H, 8, 2, zlib.compress(b"\x00" * 10)), "invalid"),
        "png-bad-filter-type": (
            "png-bad-filter.png",
            _png(W, H, 8, 2, zlib.compress(raw_rows.replace(b"\x00", b"\x09", 1))),
            "either",
        ),
        "png-named-jpg": ("png-named.jpg", png, "valid"),
        "png-polyglot-zip": (
            "png-polyglot.png",
            png + b"PK\x03\x04" + bytes(26) + b"<html><script>x</script>",
            "valid",
        ),
        "png-palette-trns": ("png-palette-trns.png", _encode(palette, "PNG"), "valid"),
        "png-la": ("png-la.png", _encode(rgba.convert("LA"), "PNG"), "valid"),
        "png-rgba": ("png-rgba.png", _encode(rgba, "PNG"), "valid"),
        "png-16bit-rgb": (
            "png-16bit-rgb.png",
            _png(
                W,
                H,
                16,
                2,
                zlib.compress(b"".join(b"\x00" + (_photo()[y].astype(">u2") * 257).tobytes() for y in range(H))),
            ),
            "valid",
        ),
        "png-i16": ("png-i16.png", _encode(grey16, "PNG"), "valid"),
        "png-1bit": ("png-1bit.png", _encode(rgb.convert("1"), "PNG"), "valid"),
        "png-animated": ("png-animated.png", _encode(rgb, "PNG", save_all=True, append_images=[other]), "valid"),
        "png-broken-icc": ("png-broken-icc.png", _png(W, H, 8, 2, zlib.compress(raw_rows), extra=iccp), "valid"),
        "png-1x1": ("png-1x1.png", _encode(PILImage.new("RGB", (1, 1), (9, 99, 199)), "PNG"), "tiny"),
        # JPEG
        "jpeg": ("jpeg.jpg", jpeg, "valid"),
        "jpeg-truncated-half": ("jpeg-truncated-half.jpg", jpeg[: len(jpeg) // 2], "invalid"),
        "jpeg-truncated-with-eoi": ("jpeg-truncated-eoi.jpg", jpeg[: len(jpeg) // 2] + b"\xff\xd9", "invalid"),
        "jpeg-claims-4000x4000": ("jpeg-claims-4000.jpg", _jpeg_claiming(4000, 4000, jpeg), "invalid"),
        "jpeg-claims-9000x9000": ("jpeg-claims-9000.jpg", _jpeg_claiming(9000, 9000, jpeg), "resource"),
        "jpeg-claims-60000x50000": ("jpeg-claims-60000.jpg", _jpeg_claiming(60000, 50000, jpeg), "resource"),
        "jpeg-bitflip": ("jpeg-bitflip.jpg", _flip(jpeg, 0.6), "either"),
        "jpeg-soi-only": ("jpeg-soi-only.jpg", b"\xff\xd8\xff", "invalid"),
        "jpeg-empty": ("jpeg-empty.jpg", b"", "invalid"),
        "jpeg-progressive": ("jpeg-progressive.jpg", _encode(rgb, "JPEG", quality=85, progressive=True), "valid"),
        "jpeg-progressive-truncated": (
            "jpeg-prog-trunc.jpg",
            _encode(rgb, "JPEG", progressive=True)[:900] + b"\xff\xd9",
            "invalid",
        ),
        "jpeg-grey": ("jpeg-grey.jpg", _encode(rgb.convert("L"), "JPEG"), "valid"),
        "jpeg-cmyk": ("jpeg-cmyk.jpg", _encode(rgb.convert("CMYK"), "JPEG"), "valid"),
        "jpeg-cmyk-truncated": (
            "jpeg-cmyk-trunc.jpg",
            _encode(rgb.convert("CMYK"), "JPEG")[:1500] + b"\xff\xd9",
            "invalid",
        ),
        "jpeg-broken-exif": (
            "jpeg-broken-exif.jpg",
            jpeg[:2] + _segment(0xE1, b"Exif\x00\x00MM\x00*\xff\xff\xff\xff") + jpeg[2:],
            "valid",
        ),
        "jpeg-broken-icc": ("jpeg-broken-icc.jpg", _encode(rgb, "JPEG", icc_profile=broken_icc), "valid"),
        "jpeg-named-png": ("jpeg-named.png", jpeg, "valid"),
        # WebP, AVIF
        "webp": ("webp.webp", webp, "valid"),
        "webp-lossless": ("webp-lossless.webp", _encode(rgb, "WEBP", lossless=True), "valid"),
        "webp-alpha": ("webp-alpha.webp", _encode(rgba, "WEBP", quality=80), "valid"),
        "webp-animated": ("webp-animated.webp", _encode(rgb, "WEBP", save_all=True, append_images=[other]), "valid"),
        "webp-truncated": ("webp-truncated.webp", webp[: len(webp) // 2], "invalid"),
        "webp-bitflip": ("webp-bitflip.webp", _flip(webp, 0.5), "either"),
        "webp-claims-16383x16383": ("webp-claims-huge.webp", _webp_claiming(16383, 16383), "resource"),
        "webp-claims-1000x1000": ("webp-claims-1000.webp", _webp_claiming(1000, 1000), "invalid"),
        "avif": ("avif.avif", avif, "valid"),
        "avif-truncated": ("avif-truncated.avif", avif[: len(avif) // 2], "invalid"),
        "avif-bitflip": ("avif-bitflip.avif", _flip(avif, 0.7), "either"),
        # GIF, TIFF, BMP, PPM, TGA
        "gif": ("gif.gif", gif, "valid"),
        "gif-animated": (
            "gif-animated.gif",
            _encode(rgb.convert("P"), "GIF", save_all=True, append_images=[other.convert("P")]),
            "valid",
        ),
        "gif-truncated": ("gif-truncated.gif", gif[: len(gif) // 2], "invalid"),
        "gif-truncated-with-trailer": ("gif-trunc-trailer.gif", gif[: len(gif) // 2] + b"\x00\x3b", "invalid"),
        "gif-claims-60000x50000": ("gif-claims-huge.gif", _gif_header(60000, 50000), "resource"),
        "tiff": ("tiff.tif", tiff, "valid"),
        "tiff-truncated": ("tiff-truncated.tif", tiff[: len(tiff) // 2], "invalid"),
        "tiff-float": (
            "tiff-float.tif",
            _encode(PILImage.fromarray(_photo()[..., 0].astype(np.float32) / 255), "TIFF"),
            "valid",
        ),
        "tiff-float-out-of-range": (
            "tiff-float-range.tif",
            _encode(PILImage.fromarray(_photo()[..., 0].astype(np.float32)), "TIFF"),
            "invalid",
        ),
        "tiff-16bit-rgb": ("tiff-16bit.tif", _tiff16(), "valid"),
        "tiff-multipage": ("tiff-multipage.tif", _encode(rgb, "TIFF", save_all=True, append_images=[other]), "valid"),
        "tiff-cmyk": ("tiff-cmyk.tif", _encode(rgb.convert("CMYK"), "TIFF"), "valid"),
        "bmp": ("bmp.bmp", bmp, "valid"),
        "bmp-truncated": ("bmp-truncated.bmp", bmp[: len(bmp) // 2], "invalid"),
        "bmp-claims-60000x50000": ("bmp-claims-huge.bmp", _bmp_header(60000, 50000), "resource"),
        "ppm": ("ppm.ppm", _encode(rgb, "PPM"), "valid"),
        "tga": ("tga.tga", _encode(rgb, "TGA"), "valid"),
        # Not images
        "text-named-png": ("text.png", text, "invalid"),
        "html-named-jpg": ("html.jpg", b"<!doctype html><html><body>not an image</body></html>\n", "invalid"),
        "empty-webp": ("empty.webp", b"", "invalid"),
        "random-bytes": (
            "random.png",
            np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "invalid",
        ),
        "ico-named-png": ("ico.png", _encode(rgb, "ICO"), "invalid"),
        "heic-stub": ("phone.jpg", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "invalid"),
        "jxl-garbage": ("garbage.jxl", b"\xff\x0a" + bytes(3), "invalid"),
    }
    for turn in range(2, 9):
        entries[f"jpeg-exif-orientation-{turn}"] = (f"jpeg-exif-{turn}.jpg", _with_exif_orientation(rgb, turn), "valid")
    return entries


def _tiff16() -> bytes:
    try:
        import imagecodecs
    except ImportError:  # without the jxl extra, a 16-bit greyscale TIFF (Pillow reads those)
        return _encode(PILImage.fromarray(_photo()[..., 0].astype(np.uint16) * 257), "TIFF")
    return bytes(imagecodecs.tiff_encode(_photo().astype(np.uint16) * 257))


def _special(folder: Path) -> list[HostileFile]:
    """Paths that are not regular files."""
    out = []
    directory = folder / "directory.png"
    directory.mkdir()
    out.append(HostileFile("directory-named-png", directory, "invalid"))
    if hasattr(os, "mkfifo"):
        fifo = folder / "fifo.png"
        os.mkfifo(fifo)
        out.append(HostileFile("fifo", fifo, "invalid"))
    loop_a, loop_b = folder / "loop-a.png", folder / "loop-b.png"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    out.append(HostileFile("symlink-loop", loop_a, "invalid"))
    dangling = folder / "dangling.png"
    dangling.symlink_to(folder / "nowhere.png")
    out.append(HostileFile("dangling-symlink", dangling, "invalid"))
    good_link = folder / "link-to-png.png"
    good_link.symlink_to(folder / "png.png")
    out.append(HostileFile("symlink-to-png", good_link, "valid"))
    if Path("/dev/zero").exists():
        out.append(HostileFile("dev-zero", Path("/dev/zero"), "invalid"))
    out.append(HostileFile("missing", folder / "missing.png", "invalid"))
    return out


def build_corpus(folder: Path, *, select: Callable[[HostileFile], bool] | None = None) -> list[HostileFile]:
    """Write the corpus into ``folder`` (created) and list its entries.

    Args:
        folder: Where to write (a fresh temporary folder).
        select: Keep only the entries for which this returns True.

    Returns:
        The entries, regular files first, then the special paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (file_name, data, outcome) in _files(folder).items():
        path = folder / file_name
        path.write_bytes(data)
        entries.append(HostileFile(name, path, outcome))
    entries += _special(folder)
    names = [e.name for e in entries]
    assert len(names) == len(set(names)), "corpus names must be unique"
    return [e for e in entries if select is None or select(e)]


def cli_problems(entry: HostileFile, code: int, err: str, allowed: set[int], *, named: str | None = None) -> list[str]:
    """What is wrong with a command's outcome on ``entry``: an exit code outside ``allowed``, a traceback,
    other than one error line when it failed, or an error that does not name the file (``named``: the path
    the message must hold, when the command read a copy; a tiny image's size minimum is worded by the
    metric, which does not know the file).

    Args:
        entry: The corpus entry.
        code: The exit code.
        err: Everything the command wrote on stderr.
        allowed: The exit codes allowed.
        named: The path the error must name (default: the entry's path or file name).

    Returns:
        One line per problem (empty: the outcome is clean).
    """
    problems = []
    if code not in allowed:
        problems.append(f"exit {code}, expected one of {sorted(allowed)}")
    if "Traceback" in err:
        problems.append("a traceback")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if code != 0 and len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    names = [named] if named is not None else [str(entry.path), entry.path.name]
    if code != 0 and errors and not any(n in errors[0] for n in names) and entry.outcome != "tiny":
        problems.append("the error does not name the file")
    return [f"{entry.name}: {p}: {err.strip()[-300:]!r}" for p in problems]
