"""The image loader: bad input, odd modes, EXIF orientation, ICC, 16-bit data, alpha and the pixel limit.

Every test file is generated here (in ``tmp_path`` or in memory); the ICC profiles are built byte by byte
(linear-light RGB and grey profiles, and a process-ink CMYK lut8 profile), so nothing depends on profiles being
installed on the machine.
"""

from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageFile

from optimizer import imageio
from optimizer.errors import ImageTooLargeError, InvalidImageError, InvalidParameterError, OptimizerError
from optimizer.imageio import (
    DEFAULT_MAX_PIXELS,
    IccWarning,
    Image,
    ImageWarning,
    PrecisionWarning,
    get_max_pixels,
    load_image,
    set_max_pixels,
)
from optimizer.imageio._jxl import jxl_size

try:
    import imagecodecs
except ImportError:  # the jxl extra is optional
    imagecodecs = None

needs_imagecodecs = pytest.mark.skipif(imagecodecs is None, reason="imagecodecs (the 'jxl' extra) not installed")

RNG = np.random.default_rng(1234)
PHOTO = RNG.integers(0, 256, (40, 56, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Helpers: encoders, a raw PNG writer and an ICC profile builder


def encode(image: PILImage.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(
    arr: np.ndarray | None, depth: int, colour_type: int, *, extra: bytes = b"", size: tuple[int, int] | None = None
) -> bytes:
    """A PNG written by hand: any bit depth/colour type, extra chunks, or a header that lies about its size."""
    if size is None:
        assert arr is not None
        size = (arr.shape[1], arr.shape[0])
    width, height = size
    if arr is None:
        idat = zlib.compress(b"\x00" * 16)
    else:
        dtype = ">u2" if depth == 16 else "u1"
        rows = (b"\x00" + np.ascontiguousarray(arr[y]).astype(dtype).tobytes() for y in range(arr.shape[0]))
        idat = zlib.compress(b"".join(rows))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def raw_tiff(arr: np.ndarray, photometric: int, extra_samples: tuple[int, ...] = ()) -> bytes:
    """A little-endian, uncompressed, single-strip 16-bit TIFF (3 or 4 samples) written by hand."""
    height, width, samples = arr.shape
    assert samples in (3, 4)
    pixels = np.ascontiguousarray(arr, dtype="<u2").tobytes()
    bits_offset = 8
    bits = struct.pack(f"<{samples}H", *([16] * samples))
    pixels_offset = bits_offset + len(bits)
    ifd_offset = pixels_offset + len(pixels)
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, samples, bits_offset),  # 3 or 4 shorts: stored out of line
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, pixels_offset),
        (277, 3, 1, samples),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    if extra_samples:
        entries.append((338, 3, 1, extra_samples[0]))
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\0" + struct.pack("<I", ifd_offset) + bits + pixels + ifd + struct.pack("<I", 0)


def iccp_chunk(profile: bytes) -> bytes:
    return png_chunk(b"iCCP", b"test\x00\x00" + zlib.compress(profile))


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + struct.pack(">IIHB", 0, 0, 0, 0) + bytes(67)


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


D50 = (0.9642, 1.0, 0.8249)


def icc_profile(device_class: bytes, space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """A version 2.1 ICC profile from its tags (each padded to 4 bytes)."""
    tags = {b"cprt": b"text\0\0\0\0none\0", b"wtpt": _xyz(*D50), **tags}
    offset = 128 + 4 + 12 * len(tags)
    table, blobs = [], b""
    for signature, blob in tags.items():
        blob += b"\0" * (-len(blob) % 4)
        table.append(signature + struct.pack(">II", offset + len(blobs), len(blob)))
        blobs += blob
    body = struct.pack(">I", len(tags)) + b"".join(table) + blobs
    header = (
        struct.pack(">I", 128 + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + device_class
        + space
        + pcs
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + _s15(D50[0])
        + _s15(D50[1])
        + _s15(D50[2])
        + bytes(48)
    )
    assert len(header) == 128
    return header + body


def linear_rgb_profile() -> bytes:
    """sRGB primaries with a linear (gamma 1) tone curve: value v means linear light v/255."""
    return icc_profile(
        b"mntr",
        b"RGB ",
        b"XYZ ",
        {
            b"desc": _desc("Linear RGB (test)"),
            b"rXYZ": _xyz(0.4360747, 0.2225045, 0.0139322),
            b"gXYZ": _xyz(0.3850649, 0.7168786, 0.0971045),
            b"bXYZ": _xyz(0.1430804, 0.0606169, 0.7141733),
            b"rTRC": _curve(1.0),
            b"gTRC": _curve(1.0),
            b"bTRC": _curve(1.0),
        },
    )


def linear_grey_profile() -> bytes:
    return icc_profile(b"mntr", b"GRAY", b"XYZ ", {b"desc": _desc("Linear grey (test)"), b"kTRC": _curve(1.0)})


INKS = {"c": (0, 174, 239), "m": (236, 0, 140), "y": (255, 242, 0)}  # process inks, as sRGB on white paper


def process_cmyk_profile() -> bytes:
    """A CMYK printer profile (lut8, 2-point grid): inks multiply, black scales; clearly not Pillow's naive maths."""
    corners = []
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    colour = np.ones(3)
                    for ink, used in zip("cmy", (c, m, y), strict=True):
                        if used:
                            colour *= np.array(INKS[ink]) / 255
                    corners.append(tuple(int(v) for v in np.round(255 * colour * (1 - 0.9 * k))))
    rgb = PILImage.new("RGB", (16, 1))
    rgb.putdata(corners)
    lab_image = ImageCms.profileToProfile(
        rgb, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), outputMode="LAB"
    )
    lab = np.asarray(lab_image).reshape(16, 3).copy()
    lab[:, 1:] = (lab[:, 1:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)  # lut8 Lab: a, b + 128
    identity = bytes(range(256))
    lut8 = (
        b"mft1\0\0\0\0"
        + bytes([4, 3, 2, 0])
        + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
        + identity * 4
        + lab.tobytes()
        + identity * 3
    )
    return icc_profile(b"prtr", b"CMYK", b"Lab ", {b"desc": _desc("Process CMYK (test)"), b"A2B0": lut8})


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.asarray(linear, dtype=np.float64)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def expect_invalid(source, *fragments: str, **kwargs) -> InvalidImageError:
    """Load ``source``, expecting an InvalidImageError whose message holds every fragment."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning (DecompressionBombWarning...) may escape either
        with pytest.raises(InvalidImageError) as caught:
            load_image(source, **kwargs)
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, OptimizerError)
    assert error.__cause__ is None, "the library exception must not be chained"
    assert error.__context__ is None or error.__suppress_context__, "the library traceback must not show"
    message = str(error)
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    over_limit = "over the limit" in message or "decompression bomb" in message
    assert isinstance(error, ImageTooLargeError) == over_limit, "pixel-limit errors, and only they, have their class"
    return error


@pytest.fixture
def restore_limit():
    """Put the module-wide pixel limit (and Pillow's guard) back after a test that changes it."""
    before, pillow_before = get_max_pixels(), PILImage.MAX_IMAGE_PIXELS
    yield
    set_max_pixels(before)
    PILImage.MAX_IMAGE_PIXELS = pillow_before


# --------------------------------------------------------------------------------------------------
# Bad input: every case is an InvalidImageError naming the file and the reason


def test_error_hierarchy():
    assert issubclass(InvalidImageError, ValueError) and issubclass(InvalidImageError, OptimizerError)


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.png", b"")
    expect_invalid(path, str(path), "empty")
    expect_invalid(b"", "<bytes>", "empty")


@pytest.mark.parametrize(
    "fmt,suffix", [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp")]
)
def test_truncated_in_half(tmp_path, fmt, suffix):
    data = encode(PILImage.fromarray(PHOTO), fmt)
    path = write(tmp_path, f"half.{suffix}", data[: len(data) // 2])
    expect_invalid(path, str(path), "truncated")


@pytest.mark.parametrize("cut", [1, 2, 4, 8, 12, 20])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_by_a_few_bytes(tmp_path, fmt, cut):
    """Missing only the end (PNG IEND chunk, the zlib checksum, the JPEG EOI marker) is still truncation."""
    data = encode(PILImage.fromarray(PHOTO), fmt)
    path = write(tmp_path, f"cut{cut}.{fmt.lower()}", data[:-cut])
    expect_invalid(path, str(path), "truncated")


def test_png_bad_crc_on_any_chunk(tmp_path):
    text = bytearray(png_chunk(b"tEXt", b"Comment\x00hello"))
    text[-1] ^= 0xFF
    path = write(tmp_path, "badtext.png", raw_png(PHOTO, 8, 2, extra=bytes(text)))
    expect_invalid(path, str(path), "corrupt PNG", "CRC mismatch in chunk b'tEXt'")


def test_png_with_trailing_bytes_after_iend_is_fine(tmp_path):
    data = encode(PILImage.fromarray(PHOTO), "PNG") + b"trailing garbage"
    image = load_image(write(tmp_path, "trailing.png", data))
    np.testing.assert_array_equal(image.to_uint8(), PHOTO)


def test_corrupt_png_data(tmp_path):
    data = bytearray(encode(PILImage.fromarray(PHOTO), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 60] = bytes(50)
    path = write(tmp_path, "corrupt.png", bytes(data))
    expect_invalid(path, str(path), "corrupt PNG", "CRC")


@pytest.mark.parametrize("name", ["notes.png", "notes.jpg", "notes.webp"])
def test_text_file_with_image_extension(tmp_path, name):
    path = write(tmp_path, name, b"This is not an image, just some text saved with an image extension.\n" * 5)
    expect_invalid(path, str(path), "not a recognised image")


@pytest.mark.parametrize(
    "fmt,suffix", [("ICO", "ico"), ("PCX", "pcx"), ("SGI", "sgi"), ("JPEG2000", "jp2"), ("QOI", "qoi"), ("DDS", "dds")]
)
def test_format_pillow_knows_but_loader_refuses(tmp_path, fmt, suffix):
    image = PILImage.fromarray(PHOTO[:32, :32]).convert("RGBA" if fmt == "DDS" else "RGB")
    path = write(tmp_path, f"image.{suffix}", encode(image, fmt))
    error = expect_invalid(path, str(path), f"unsupported format {fmt}", "supported: ")
    assert "PNG" in error.reason


def test_heic_is_named(tmp_path):
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    path = write(tmp_path, "phone.heic", data)
    expect_invalid(path, str(path), "HEIC")


def test_missing_path(tmp_path):
    path = tmp_path / "nope" / "missing.png"
    expect_invalid(path, str(path), "no such file")
    expect_invalid(str(path), str(path), "no such file")


def test_directory_path(tmp_path):
    expect_invalid(tmp_path, str(tmp_path), "directory")


def test_unsupported_source_type():
    expect_invalid(12345, "int")
    expect_invalid([[0, 1], [1, 0]], "list")


def test_name_labels_in_memory_errors():
    expect_invalid(b"junk" * 10, "upload.png", name="upload.png")
    expect_invalid(np.zeros((2, 2, 5), np.uint8), "<array>", "shape")


# --------------------------------------------------------------------------------------------------
# Pixel limit


def test_limit_is_enforced_from_the_header(tmp_path, monkeypatch):
    """A tiny file that claims 100000 x 100000 is refused from its header: fast, nothing decoded."""
    path = write(tmp_path, "bomb.png", raw_png(None, 8, 2, size=(100_000, 100_000)))
    assert path.stat().st_size < 200

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    expect_invalid(path, str(path), "10,000,000,000 pixels", f"over the limit of {DEFAULT_MAX_PIXELS:,}")
    assert time.perf_counter() - start < 1.0


def _gif_header(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    return screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00\x3b"


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info)) + info + bytes(16)


def _jpeg_header(width: int, height: int) -> bytes:
    data = bytearray(encode(PILImage.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("header", [_gif_header, _bmp_header, _jpeg_header])
def test_limit_from_other_headers(tmp_path, header, monkeypatch):
    path = write(tmp_path, "bomb.img", header(60_000, 50_000))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    expect_invalid(path, str(path), "3,000,000,000 pixels", "over the limit")
    expect_invalid(path, str(path), "3,000,000,000 pixels", "over the limit of 1,000,000,000", max_pixels=10**9)
    expect_invalid(path, str(path), "60000x50000", "over the limit of 2,000,000,000", max_pixels=2 * 10**9)


PILLOW_DEFAULT_GUARD = 1024 * 1024 * 1024 // 4 // 3


def test_pillow_globals_are_never_changed(restore_limit):
    """Importing the loader and setting the process default leave Pillow's own guard and truncation flag alone."""
    assert PILImage.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_GUARD
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    set_max_pixels(1_000)
    assert get_max_pixels() == 1_000
    assert PILImage.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_GUARD


def test_our_limit_between_pillow_warning_and_error(tmp_path, restore_limit):
    """Sizes around our limit, in Pillow's warning and error zones for the same value: our error, no leak."""
    set_max_pixels(1_000)
    warn_zone = write(tmp_path, "40x40.png", encode(PILImage.new("RGB", (40, 40)), "PNG"))  # 1x to 2x the limit
    error_zone = write(tmp_path, "60x60.png", encode(PILImage.new("RGB", (60, 60)), "PNG"))  # over 2x
    expect_invalid(warn_zone, str(warn_zone), "40x40 = 1,600 pixels", "over the limit of 1,000")
    expect_invalid(error_zone, str(error_zone), "60x60 = 3,600 pixels", "over the limit of 1,000")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "GIF", "WEBP"])
def test_per_call_limit_above_the_process_default(tmp_path, restore_limit, fmt):
    set_max_pixels(500)
    frames = [PILImage.fromarray(PHOTO), PILImage.fromarray(255 - PHOTO)]
    kwargs = {"save_all": True, "append_images": frames[1:]} if fmt in ("GIF", "WEBP", "TIFF") else {}
    path = write(tmp_path, f"big.{fmt.lower()}", encode(frames[0], fmt, **kwargs))
    expect_invalid(path, str(path), "over the limit of 500")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path, max_pixels=PHOTO.shape[0] * PHOTO.shape[1])
    assert image.size == (56, 40)
    assert PILImage.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_GUARD and get_max_pixels() == 500


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "PPM"])
def test_our_limit_counts_even_when_an_application_lowered_pillows_guard(tmp_path, monkeypatch, fmt):
    """Headers are read without Image.open's check: Pillow's process guard does not refuse what we allow."""
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000)  # as an application might
    path = write(tmp_path, f"photo.{fmt.lower()}", encode(PILImage.fromarray(PHOTO), fmt))  # 2,240 px > 2x 1,000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).size == (56, 40)
    assert PILImage.MAX_IMAGE_PIXELS == 1_000


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP"])
def test_pillows_own_guard_is_named(tmp_path, monkeypatch, fmt):
    """Pillow checks its guard itself in its WebP plugin and TIFF tile decoder: the error says how to raise it."""
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000)
    path = write(tmp_path, f"photo.{fmt.lower()}", encode(PILImage.fromarray(PHOTO), fmt))
    expect_invalid(path, str(path), "decompression bomb", "PIL.Image.MAX_IMAGE_PIXELS (now 1000)")


def test_concurrent_loads_with_different_limits(tmp_path, restore_limit):
    """Per-call limits in some threads never make another thread's load fail, nor touch Pillow's guard."""
    from concurrent.futures import ThreadPoolExecutor

    set_max_pixels(1_000)
    frames = [PILImage.fromarray(PHOTO), PILImage.fromarray(255 - PHOTO)]
    big = write(tmp_path, "big.tif", encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    small = write(tmp_path, "small.png", encode(PILImage.fromarray(PHOTO[:20, :30]), "PNG"))

    def load(i: int) -> tuple[int, int]:
        return load_image(big, max_pixels=5_000).size if i % 2 else load_image(small).size

    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(load, range(40)))
    assert sizes == [(56, 40) if i % 2 else (30, 20) for i in range(40)]
    assert PILImage.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_GUARD


def test_per_call_limit_below_the_global_one(tmp_path):
    path = write(tmp_path, "photo.png", encode(PILImage.fromarray(PHOTO), "PNG"))
    expect_invalid(path, str(path), "over the limit of 100", max_pixels=100)
    expect_invalid(PHOTO, "over the limit of 100", max_pixels=100)
    expect_invalid(PILImage.fromarray(PHOTO), "over the limit of 100", max_pixels=100)
    expect_invalid(load_image(PHOTO), "over the limit of 100", max_pixels=100)
    assert load_image(path, max_pixels=PHOTO.shape[0] * PHOTO.shape[1]).pixels == 40 * 56


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "100", None])
def test_invalid_limits(bad, restore_limit):
    with pytest.raises(InvalidParameterError, match="max_pixels"):
        set_max_pixels(bad)
    if bad is not None:
        with pytest.raises(InvalidParameterError, match="max_pixels"):
            load_image(PHOTO, max_pixels=bad)
    assert get_max_pixels() == DEFAULT_MAX_PIXELS


def test_invalid_animated_argument():
    with pytest.raises(InvalidParameterError, match="animated"):
        load_image(PHOTO, animated="all")


# --------------------------------------------------------------------------------------------------
# Zero size


def test_zero_size_array():
    expect_invalid(np.zeros((0, 5, 3), np.uint8), "zero size")
    expect_invalid(np.zeros((5, 0), np.float32), "zero size")


def test_zero_size_pil_image():
    expect_invalid(PILImage.new("RGB", (0, 0)), "zero size")
    expect_invalid(PILImage.new("L", (7, 0)), "zero size")


def test_zero_size_png_header(tmp_path):
    path = write(tmp_path, "zero.png", raw_png(None, 8, 2, size=(0, 10)))
    expect_invalid(path, str(path))


# --------------------------------------------------------------------------------------------------
# Animated and multi-image files

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def _frames() -> list[PILImage.Image]:
    return [PILImage.new("RGB", (24, 16), colour) for colour in COLOURS]


@pytest.mark.parametrize(
    "fmt,suffix,kwargs",
    [
        ("GIF", "gif", {}),
        ("PNG", "png", {}),  # APNG
        ("WEBP", "webp", {"lossless": True}),
        ("TIFF", "tif", {}),  # multi-page
    ],
)
def test_animated_first_frame_or_error(tmp_path, fmt, suffix, kwargs):
    frames = _frames()
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **kwargs)
    path = write(tmp_path, f"anim.{suffix}", data)
    image = load_image(path)
    assert image.info.n_frames == 3
    assert image.size == (24, 16)
    np.testing.assert_allclose(image.to_uint8()[0, 0], COLOURS[0], atol=3)
    expect_invalid(path, str(path), "animated", "3 frames", animated="error")
    expect_invalid(data, "3 frames", animated="error")
    expect_invalid(PILImage.open(io.BytesIO(data)), "3 frames", animated="error")


def test_animated_pil_image_at_a_later_frame_gives_the_first():
    frames = _frames()
    pil = PILImage.open(io.BytesIO(encode(frames[0], "GIF", save_all=True, append_images=frames[1:])))
    pil.seek(2)
    np.testing.assert_allclose(load_image(pil).to_uint8()[0, 0], COLOURS[0], atol=3)


def test_still_images_have_one_frame(tmp_path):
    path = write(tmp_path, "still.gif", encode(_frames()[0], "GIF"))
    assert load_image(path, animated="error").info.n_frames == 1


def test_mpo_is_a_still_photo():
    frames = _frames()
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:2], quality=95)
    image = load_image(data, animated="error")
    assert image.info.format == "MPO" and image.info.n_frames == 2
    np.testing.assert_allclose(image.to_uint8()[4, 4], COLOURS[0], atol=4)


# --------------------------------------------------------------------------------------------------
# Modes


def load_png(pil: PILImage.Image, **kwargs) -> Image:
    return load_image(encode(pil, "PNG", **kwargs))


def test_rgb_is_exact(tmp_path):
    image = load_image(write(tmp_path, "rgb.png", encode(PILImage.fromarray(PHOTO), "PNG")))
    assert image.rgb.dtype == np.float32 and image.rgb.shape == (40, 56, 3)
    np.testing.assert_array_equal(image.rgb, PHOTO.astype(np.float32) / 255)
    assert image.alpha is None and image.info.bit_depth == 8 and image.info.mode == "RGB"
    assert image.info.file_bytes == (tmp_path / "rgb.png").stat().st_size


def test_l():
    grey = PHOTO[..., 0]
    image = load_png(PILImage.fromarray(grey, "L"))
    for channel in range(3):
        np.testing.assert_array_equal(image.rgb[..., channel], grey / np.float32(255))
    assert image.info.mode == "L" and image.alpha is None


def test_la():
    la = np.stack([PHOTO[..., 0], PHOTO[..., 1]], axis=2)
    image = load_png(PILImage.fromarray(la, "LA"))
    np.testing.assert_array_equal(image.rgb[..., 2], la[..., 0] / np.float32(255))
    np.testing.assert_array_equal(image.alpha, la[..., 1] / np.float32(255))
    assert image.info.had_alpha


def test_rgba_alpha_kept_straight():
    rgba = np.concatenate([PHOTO, PHOTO[..., :1]], axis=2)
    rgba[0, 0] = (250, 10, 20, 0)  # invisible pixel keeps its colour: alpha is not premultiplied
    image = load_png(PILImage.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(image.to_uint8(keep_alpha=True), rgba)
    np.testing.assert_array_equal(image.to_uint8()[0, 0], (250, 10, 20, 0))


def test_fully_opaque_alpha_is_dropped():
    rgba = np.concatenate([PHOTO, np.full(PHOTO.shape[:2] + (1,), 255, np.uint8)], axis=2)
    image = load_png(PILImage.fromarray(rgba, "RGBA"))
    assert image.alpha is None and not image.has_alpha and not image.info.had_alpha
    np.testing.assert_array_equal(image.to_uint8(), PHOTO)


def _palette_image() -> PILImage.Image:
    pil = PILImage.new("P", (8, 4))
    pil.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255] + [0] * (252 * 3))
    pil.putdata([i % 4 for i in range(32)])
    return pil


def test_palette_without_transparency():
    image = load_png(_palette_image())
    assert image.alpha is None and image.info.mode == "P"
    np.testing.assert_array_equal(image.to_uint8()[0, :4], [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255] * 3])


def test_palette_with_one_transparent_index():
    image = load_png(_palette_image(), transparency=2)
    np.testing.assert_array_equal(image.alpha[0, :4], [1, 1, 0, 1])
    np.testing.assert_array_equal(image.to_uint8()[0, 1], [0, 255, 0, 255])


def test_palette_with_trns_alpha_table():
    """A PNG palette with a tRNS table: one alpha per palette entry."""
    indices = np.array([[0, 1, 2, 3]], np.uint8)
    plte = png_chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]))
    trns = png_chunk(b"tRNS", bytes([255, 128, 0]))  # entry 3 has no alpha entry: opaque
    image = load_image(raw_png(indices, 8, 3, extra=plte + trns))
    np.testing.assert_allclose(image.alpha[0], [1, 128 / 255, 0, 1], atol=1e-7)
    np.testing.assert_array_equal(image.to_uint8()[0, :, :3], [[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]])


def test_gif_transparency():
    image = load_image(encode(_palette_image(), "GIF", transparency=0))
    np.testing.assert_array_equal(image.alpha[0, :4], [0, 1, 1, 1])


def test_rgb_with_trns_colour_key():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    image = load_image(raw_png(rgb, 8, 2, extra=png_chunk(b"tRNS", struct.pack(">HHH", 10, 20, 30))))
    np.testing.assert_array_equal(image.alpha, [[0, 1], [1, 1]])


def test_bilevel():
    bits = PHOTO[..., 0] > 128
    image = load_png(PILImage.fromarray(bits).convert("1"))
    np.testing.assert_array_equal(image.rgb[..., 0], bits.astype(np.float32))
    assert image.info.mode == "1" and image.info.bit_depth == 1
    keyed = load_png(PILImage.fromarray(bits).convert("1"), transparency=0)
    np.testing.assert_array_equal(keyed.alpha, bits.astype(np.float32))


def test_i16_png_full_precision(tmp_path):
    values = np.array([[0, 1, 257, 32768], [40000, 65279, 65534, 65535]], np.uint16)
    path = write(tmp_path, "grey16.png", encode(PILImage.fromarray(values), "PNG"))
    image = load_image(path)
    assert image.info.mode.startswith("I;16") and image.info.bit_depth == 16
    np.testing.assert_allclose(image.rgb[..., 1], values / 65535.0, rtol=0, atol=1e-7)
    assert len(np.unique(image.rgb)) == 8  # 1/65535 steps survive, no 8-bit rounding


def test_i16_png_with_trns_key():
    values = np.array([[1000, 2000], [1000, 65535]], np.uint16)
    image = load_image(raw_png(values, 16, 0, extra=png_chunk(b"tRNS", struct.pack(">H", 1000))))
    np.testing.assert_array_equal(image.alpha, [[0, 1], [0, 1]])
    assert image.info.bit_depth == 16


def test_i16_big_endian_pil():
    values = np.array([[0, 300, 65535]], np.uint16)
    pil = PILImage.frombytes("I;16B", (3, 1), values.astype(">u2").tobytes())
    np.testing.assert_allclose(load_image(pil).rgb[0, :, 0], values[0] / 65535.0, atol=1e-7)


WIDE = np.array([[[0, 1, 65535], [257, 32768, 40000]], [[65534, 12345, 2], [500, 600, 700]]], np.uint16)


@needs_imagecodecs
@pytest.mark.parametrize("channels,colour_type", [(3, 2), (4, 6), (2, 4)])
def test_16_bit_colour_png_full_precision_with_imagecodecs(tmp_path, channels, colour_type):
    if channels == 3:
        arr = WIDE
    elif channels == 4:
        arr = np.concatenate([WIDE, np.array([[[65535], [0]], [[30000], [65535]]], np.uint16)], axis=2)
    else:
        arr = WIDE[..., :2]
    path = write(tmp_path, "wide.png", raw_png(arr, 16, colour_type))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path)
    assert image.info.bit_depth == 16
    colour = arr[..., :3] if channels >= 3 else np.repeat(arr[..., :1], 3, axis=2)
    np.testing.assert_allclose(image.rgb, colour / 65535.0, atol=1e-7)
    if channels in (2, 4):
        np.testing.assert_allclose(image.alpha, arr[..., -1] / 65535.0, atol=1e-7)


@needs_imagecodecs
def test_16_bit_rgb_png_trns_key_with_imagecodecs():
    image = load_image(raw_png(WIDE, 16, 2, extra=png_chunk(b"tRNS", struct.pack(">HHH", 257, 32768, 40000))))
    np.testing.assert_array_equal(image.alpha, [[1, 0], [1, 1]])


@needs_imagecodecs
@pytest.mark.parametrize("layout", ["rgb", "rgba", "premultiplied"])
def test_16_bit_colour_tiff_full_precision_with_imagecodecs(layout):
    alpha = np.array([[[65535], [0]], [[30000], [65535]]], np.uint16)
    if layout == "rgb":
        data, colour = raw_tiff(WIDE, 2), WIDE
    elif layout == "rgba":
        data, colour = raw_tiff(np.concatenate([WIDE, alpha], axis=2), 2, (2,)), WIDE
    elif layout == "premultiplied":
        colour = np.array([[[65535, 30000, 0], [0, 0, 0]], [[20000, 10000, 30000], [1, 2, 3]]], np.uint16)
        stored = np.rint(colour * (alpha / 65535.0)).astype(np.uint16)
        data = raw_tiff(np.concatenate([stored, alpha], axis=2), 2, (1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(data)
    assert image.info.format == "TIFF" and image.info.bit_depth == 16
    visible = np.ones((2, 2), bool) if layout == "rgb" else (alpha[..., 0] > 0)
    atol = 2e-4 if layout == "premultiplied" else 1e-7  # unpremultiplying 16-bit data rounds
    np.testing.assert_allclose(image.rgb[visible], (colour / 65535.0)[visible], atol=atol)
    if layout != "rgb":
        np.testing.assert_allclose(image.alpha, alpha[..., 0] / 65535.0, atol=1e-7)


def test_16_bit_colour_tiff_without_imagecodecs(monkeypatch):
    monkeypatch.setattr(imageio._optional, "imagecodecs", lambda: None)
    with pytest.warns(PrecisionWarning, match="16-bit colour TIFF"):
        image = load_image(raw_tiff(WIDE, 2))
    assert image.info.bit_depth == 8
    np.testing.assert_allclose(image.rgb, WIDE / 65535.0, atol=1 / 255)


@needs_imagecodecs
def test_16_bit_apng_is_read_at_8_bits_with_a_warning():
    """An APNG (two 16-bit frames, written chunk by chunk): frames are Pillow's, so 8 bits, and it says so."""
    height, width = WIDE.shape[:2]
    rows = b"".join(b"\x00" + WIDE[y].astype(">u2").tobytes() for y in range(height))
    frame = zlib.compress(rows)

    def fctl(sequence: int) -> bytes:
        return png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, 1, 10, 0, 0))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"acTL", struct.pack(">II", 2, 0))
        + fctl(0)
        + png_chunk(b"IDAT", frame)
        + fctl(1)
        + png_chunk(b"fdAT", struct.pack(">I", 2) + frame)
        + png_chunk(b"IEND", b"")
    )
    with pytest.warns(PrecisionWarning, match="animated"):
        image = load_image(data)
    assert image.info.n_frames == 2 and image.info.bit_depth == 8
    np.testing.assert_allclose(image.rgb, WIDE / 65535.0, atol=1 / 255)


def test_16_bit_colour_png_without_imagecodecs(monkeypatch):
    """Without imagecodecs Pillow reads 16-bit colour at 8 bits: said in bit_depth and a PrecisionWarning."""
    monkeypatch.setattr(imageio._optional, "imagecodecs", lambda: None)
    with pytest.warns(PrecisionWarning, match="8-bit precision"):
        image = load_image(raw_png(WIDE, 16, 2), name="wide.png")
    assert image.info.bit_depth == 8
    np.testing.assert_allclose(image.rgb, WIDE / 65535.0, atol=1 / 255)


def test_int32_mode_i():
    values = np.array([[0, 1000, 65535]], np.int32)
    pil = PILImage.fromarray(values)
    assert pil.mode == "I"
    image = load_image(pil)
    np.testing.assert_allclose(image.rgb[0, :, 0], values[0] / 65535.0, atol=1e-7)
    assert image.info.bit_depth == 16
    expect_invalid(PILImage.fromarray(np.array([[0, 70000]], np.int32)), "[0, 65535]", "70000")
    expect_invalid(PILImage.fromarray(np.array([[-1, 5]], np.int32)), "[0, 65535]")


def test_float_mode_f(tmp_path):
    values = np.array([[0.0, 0.25, 1.0]], np.float32)
    image = load_image(PILImage.fromarray(values, "F"))
    np.testing.assert_array_equal(image.rgb[0, :, 1], values[0])
    assert image.info.bit_depth == 32
    tiff = write(tmp_path, "float.tif", encode(PILImage.fromarray(values, "F"), "TIFF"))
    np.testing.assert_array_equal(load_image(tiff).rgb[0, :, 0], values[0])
    expect_invalid(PILImage.fromarray(np.array([[0.0, 2.5]], np.float32), "F"), "[0, 1]", "2.5")
    expect_invalid(PILImage.fromarray(np.array([[0.0, np.nan]], np.float32), "F"), "NaN")


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "RGBX"])
def test_other_colour_modes_from_pil(mode):
    pil = PILImage.fromarray(PHOTO).convert(mode)
    image = load_image(pil)
    np.testing.assert_allclose(image.to_uint8(), np.asarray(pil.convert("RGB")), atol=0)


def test_lab_pil_image_round_trips():
    colours = np.array([[[200, 120, 90], [40, 90, 160], [128, 128, 128], [240, 240, 230]]], np.uint8)
    lab = ImageCms.profileToProfile(
        PILImage.fromarray(colours), ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), outputMode="LAB"
    )
    np.testing.assert_allclose(load_image(lab).to_uint8().astype(int), colours, atol=10)  # 8-bit Lab steps


@pytest.mark.parametrize("mode", ["RGBa", "La"])
def test_premultiplied_pil_modes_are_unpremultiplied(mode):
    straight = PILImage.new("RGBA", (2, 1), (200, 100, 50, 128))
    pil = straight.convert(mode) if mode == "RGBa" else straight.convert("LA").convert("La")
    image = load_image(pil)
    np.testing.assert_allclose(image.alpha, 128 / 255, atol=1e-6)
    expected = 200 if mode == "RGBa" else np.asarray(straight.convert("L"))[0, 0]
    assert abs(int(image.to_uint8()[0, 0, 0]) - int(expected)) <= 2


def test_cmyk_jpeg_without_profile():
    cmyk = PILImage.new("CMYK", (32, 8))
    cmyk.paste((0, 0, 0, 0), (0, 0, 8, 8))
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 8))
    cmyk.paste((255, 0, 0, 0), (16, 0, 24, 8))
    cmyk.paste((0, 0, 255, 0), (24, 0, 32, 8))
    image = load_image(encode(cmyk, "JPEG", quality=98))
    assert image.info.mode == "CMYK" and not image.info.icc_converted
    centres = image.to_uint8()[4, 4::8].astype(int)
    np.testing.assert_allclose(centres, [[255, 255, 255], [0, 0, 0], [0, 255, 255], [255, 255, 0]], atol=6)


def test_cmyk_jpeg_with_profile():
    cmyk = PILImage.new("CMYK", (32, 8))
    cmyk.paste((0, 0, 0, 0), (0, 0, 8, 8))
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 8))
    cmyk.paste((255, 0, 0, 0), (16, 0, 24, 8))
    cmyk.paste((0, 255, 0, 0), (24, 0, 32, 8))
    image = load_image(encode(cmyk, "JPEG", quality=98, icc_profile=process_cmyk_profile()))
    assert image.info.icc_converted
    assert image.rgb.min() >= 0.0 and image.rgb.max() <= 1.0
    centres = image.to_uint8()[4, 4::8].astype(int)
    black = round(255 * 0.1)
    np.testing.assert_allclose(centres, [[255, 255, 255], [black] * 3, INKS["c"], INKS["m"]], atol=8)


# --------------------------------------------------------------------------------------------------
# numpy arrays


def test_arrays_of_every_accepted_dtype():
    np.testing.assert_array_equal(load_image(PHOTO).rgb, PHOTO / np.float32(255))
    wide = PHOTO.astype(np.uint16) * 257
    image = load_image(wide)
    np.testing.assert_allclose(image.rgb, PHOTO / 255.0, atol=1e-7)
    assert image.info.bit_depth == 16
    unit = PHOTO / 255.0  # float64 in [0, 1]
    np.testing.assert_allclose(load_image(unit).rgb, unit, atol=1e-7)
    np.testing.assert_allclose(load_image(unit.astype(np.float16)).rgb, unit, atol=1e-3)
    mask = PHOTO[..., 0] > 100
    np.testing.assert_array_equal(load_image(mask).rgb[..., 2], mask)
    assert load_image(mask).info.bit_depth == 1


def test_array_shapes():
    grey = PHOTO[..., 0]
    for arr in (grey, grey[..., None]):
        image = load_image(arr)
        assert image.rgb.shape == (40, 56, 3) and image.alpha is None
        np.testing.assert_array_equal(image.rgb[..., 0], image.rgb[..., 2])
    two = np.stack([grey, PHOTO[..., 1]], axis=2)
    image = load_image(two)
    np.testing.assert_array_equal(image.alpha, PHOTO[..., 1] / np.float32(255))
    four = np.concatenate([PHOTO, PHOTO[..., :1]], axis=2)
    np.testing.assert_array_equal(load_image(four).alpha, PHOTO[..., 0] / np.float32(255))
    opaque = np.concatenate([PHOTO, np.full((40, 56, 1), 255, np.uint8)], axis=2)
    assert load_image(opaque).alpha is None


def test_array_input_is_not_aliased():
    arr = (PHOTO / 255.0).astype(np.float32)
    image = load_image(arr)
    arr[...] = 0
    assert image.rgb.max() > 0


@pytest.mark.parametrize(
    "arr,fragment",
    [
        (np.full((4, 4, 3), 1.5, np.float32), "[0, 1]"),
        (np.full((4, 4, 3), -0.1, np.float64), "[0, 1]"),
        (np.array([[0.5, np.nan]], np.float32), "NaN"),
        (np.array([[0.5, np.inf]], np.float32), "NaN or infinity"),
        (np.zeros((4, 4, 3), np.int32), "dtype int32"),
        (np.zeros((4, 4, 3), np.complex64), "dtype"),
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros(7, np.uint8), "shape"),
    ],
)
def test_bad_arrays(arr, fragment):
    expect_invalid(arr, fragment)


# --------------------------------------------------------------------------------------------------
# EXIF orientation

# What each orientation asks the viewer to do, as the inverse Pillow transpose used to store the pixels.
STORE_FOR_ORIENTATION = {
    1: None,
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_90,  # viewer turns it 90 degrees clockwise, so it is stored turned back
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_270,
}


def _upright() -> PILImage.Image:
    """48 x 32, four 16 x 16 quadrant-ish blocks of distinct colours: no symmetry survives a wrong turn."""
    upright = np.zeros((32, 48, 3), np.uint8)
    upright[:16, :16] = (255, 0, 0)
    upright[:16, 16:] = (0, 255, 0)
    upright[16:, :32] = (0, 0, 255)
    upright[16:, 32:] = (255, 255, 0)
    return PILImage.fromarray(upright)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path, orientation):
    upright = _upright()
    method = STORE_FOR_ORIENTATION[orientation]
    stored = upright if method is None else upright.transpose(method)
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", quality=98, subsampling=0, exif=exif.tobytes())
    path = write(tmp_path, f"o{orientation}.jpg", data)
    image = load_image(path)
    assert image.size == (48, 32)
    assert image.info.exif_transposed == (orientation != 1)
    error = np.abs(image.to_uint8().astype(int) - np.asarray(upright).astype(int))
    assert error.mean() < 3, f"orientation {orientation}: mean error {error.mean():.1f}"
    assert image.rgb.flags.c_contiguous


def test_exif_orientation_png_and_alpha_follow():
    upright = np.asarray(_upright().convert("RGBA")).copy()
    upright[:16, :16, 3] = 0
    exif = PILImage.Exif()
    exif[0x0112] = 6
    stored = PILImage.fromarray(upright, "RGBA").transpose(PILImage.Transpose.ROTATE_90)
    image = load_image(encode(stored, "PNG", exif=exif.tobytes()))
    assert image.info.exif_transposed
    np.testing.assert_array_equal(image.to_uint8(), upright)


@pytest.mark.parametrize("value", [0, 9, 255])
def test_invalid_orientation_value_is_ignored(value):
    exif = PILImage.Exif()
    exif[0x0112] = value
    image = load_image(encode(_upright(), "JPEG", quality=98, exif=exif.tobytes()))
    assert not image.info.exif_transposed and image.size == (48, 32)


def test_broken_exif_block_does_not_cost_the_pixels():
    data = encode(_upright(), "JPEG", quality=98)
    app1 = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(20)  # IFD offset points far outside the block
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    with pytest.warns(ImageWarning, match="broken-exif.jpg: .*EXIF"):
        image = load_image(data, name="broken-exif.jpg")
    assert image.size == (48, 32) and not image.info.exif_transposed


def test_concurrent_loads_keep_their_warnings_and_the_warning_state():
    # warnings.catch_warnings is process-wide: overlapping loads in threads used to lose each other's warnings
    # and leave every later warning in the process swallowed into a dead list.
    from concurrent.futures import ThreadPoolExecutor

    data = encode(_upright(), "JPEG", quality=98)
    app1 = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(20)
    broken = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    filters, show = list(warnings.filters), warnings.showwarning
    show_impl = warnings._showwarnmsg_impl  # type: ignore[attr-defined]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i: load_image(broken if i % 2 else data, name=f"n{i}.jpg"), range(300)))
    names = sorted(str(w.message).split(":")[0] for w in caught if issubclass(w.category, ImageWarning))
    assert names == sorted(f"n{i}.jpg" for i in range(1, 300, 2))
    assert warnings.filters == filters and warnings.showwarning is show
    assert warnings._showwarnmsg_impl is show_impl  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------
# ICC profiles

LEVELS = np.array([0, 1, 4, 16, 64, 128, 200, 255], np.uint8)


@pytest.mark.parametrize("description", ["Linear RGB (test)", "Linear sRGB"])  # the name decides nothing
def test_non_srgb_profile_is_converted(tmp_path, description):
    profile = linear_rgb_profile().replace(b"Linear RGB (test)", description.encode().ljust(17, b"\0"))
    arr = np.repeat(LEVELS[None, :, None], 3, axis=2)
    path = write(tmp_path, "linear.png", encode(PILImage.fromarray(arr), "PNG", icc_profile=profile))
    image = load_image(path)
    assert image.info.icc_converted
    np.testing.assert_allclose(image.rgb[0, :, 1], srgb_encode(LEVELS / 255.0), atol=2 / 255)


def test_non_srgb_profile_on_rgba_keeps_alpha():
    arr = np.stack([LEVELS, LEVELS, LEVELS, LEVELS[::-1]], axis=1)[None]
    image = load_png(PILImage.fromarray(arr, "RGBA"), icc_profile=linear_rgb_profile())
    assert image.info.icc_converted
    np.testing.assert_allclose(image.alpha[0], LEVELS[::-1] / 255.0, atol=1e-7)
    np.testing.assert_allclose(image.rgb[0, :, 0], srgb_encode(LEVELS / 255.0), atol=2 / 255)


def test_grey_profile_is_converted():
    image = load_png(PILImage.fromarray(LEVELS[None, :], "L"), icc_profile=linear_grey_profile())
    assert image.info.icc_converted
    np.testing.assert_allclose(image.rgb[0, :, 2], srgb_encode(LEVELS / 255.0), atol=2 / 255)


def test_srgb_profile_leaves_pixels_exact():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = load_png(PILImage.fromarray(PHOTO), icc_profile=srgb)
    assert not image.info.icc_converted
    np.testing.assert_array_equal(image.to_uint8(), PHOTO)


@pytest.mark.parametrize("profile", [b"this is no ICC profile" * 8, linear_rgb_profile()[:150]])
def test_corrupt_profile_warns_and_keeps_the_pixels(tmp_path, profile):
    path = write(tmp_path, "badicc.png", encode(PILImage.fromarray(PHOTO), "PNG", icc_profile=profile))
    with pytest.warns(IccWarning, match="badicc.png"):
        image = load_image(path)
    assert not image.info.icc_converted
    np.testing.assert_array_equal(image.to_uint8(), PHOTO)


def test_profile_for_the_wrong_colour_space_warns():
    with pytest.warns(IccWarning):
        image = load_png(PILImage.fromarray(LEVELS[None, :], "L"), icc_profile=linear_rgb_profile())
    assert not image.info.icc_converted
    np.testing.assert_array_equal(image.to_uint8()[0, :, 0], LEVELS)


@needs_imagecodecs
def test_16_bit_png_profile_converted_at_16_bits():
    values = np.array([0, 100, 1000, 20000, 40000, 65535], np.uint16)
    arr = np.repeat(values[None, :, None], 3, axis=2)
    image = load_image(raw_png(arr, 16, 2, extra=iccp_chunk(linear_rgb_profile())))
    assert image.info.icc_converted and image.info.bit_depth == 16
    np.testing.assert_allclose(image.rgb[0, :, 0], srgb_encode(values / 65535.0), atol=2e-3)


def test_16_bit_png_profile_without_imagecodecs(monkeypatch):
    monkeypatch.setattr(imageio._optional, "imagecodecs", lambda: None)
    values = np.array([0, 100, 1000, 20000, 40000, 65535], np.uint16)
    image = load_image(raw_png(values[None, :], 16, 0, extra=iccp_chunk(linear_grey_profile())))
    assert image.info.icc_converted and image.info.bit_depth == 8
    quantised = np.round(values / 65535.0 * 255) / 255  # the fallback converts 8-bit data
    np.testing.assert_allclose(image.rgb[0, :, 0], srgb_encode(quantised), atol=2 / 255)


# --------------------------------------------------------------------------------------------------
# Alpha for scoring and for encoders


def _half_transparent_red() -> Image:
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[..., 0] = 1.0
    alpha = np.array([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]], np.float32)
    return Image(rgb=rgb, alpha=alpha)


def test_for_scoring_composites_over_white_by_default():
    scoring = _half_transparent_red().for_scoring()
    np.testing.assert_allclose(scoring[0], [[1, 0, 0], [1, 0.5, 0.5], [1, 1, 1]])
    assert scoring.dtype == np.float32


def test_for_scoring_other_background_and_validation():
    np.testing.assert_allclose(_half_transparent_red().for_scoring((0.0, 0.0, 0.0))[0, 1], [0.5, 0, 0])
    for bad in [(1.0, 1.0), (2.0, 0.0, 0.0), "white"]:
        with pytest.raises(InvalidParameterError, match="background"):
            _half_transparent_red().for_scoring(bad)


def test_for_scoring_without_alpha_is_the_rgb():
    image = load_image(PHOTO)
    assert image.for_scoring() is image.rgb


def test_to_tensor():
    pytest.importorskip("torch")
    image = _half_transparent_red()
    tensor = image.to_tensor()
    assert tuple(tensor.shape) == (1, 3, 2, 3) and str(tensor.dtype) == "torch.float32"
    np.testing.assert_allclose(tensor[0].numpy().transpose(1, 2, 0), image.for_scoring())
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


def test_to_uint8_and_to_pil():
    image = _half_transparent_red()
    assert image.to_uint8().shape == (2, 3, 4)
    assert image.to_uint8(keep_alpha=False).shape == (2, 3, 3)
    kept = image.to_pil()
    assert kept.mode == "RGBA" and kept.getpixel((1, 0)) == (255, 0, 0, 128)
    flat = image.to_pil(keep_alpha=False)
    assert flat.mode == "RGB" and flat.getpixel((2, 0)) == (255, 255, 255)
    assert load_image(PHOTO).to_pil().mode == "RGB"


def test_with_pixels_keeps_alpha_unless_told():
    image = _half_transparent_red()
    assert image.with_pixels(image.rgb * 0.5).alpha is image.alpha
    assert image.with_pixels(image.rgb, alpha=None).alpha is None
    with pytest.raises(InvalidImageError, match="alpha"):
        image.with_pixels(np.zeros((4, 4, 3), np.float32))
    smaller = image.with_pixels(np.zeros((1, 1, 3), np.float32), np.ones((1, 1), np.float32))
    assert smaller.size == (1, 1) and smaller.source == image.source


def test_image_validates_its_arrays():
    with pytest.raises(InvalidImageError, match="float32"):
        Image(rgb=np.zeros((2, 2, 3), np.float64))
    with pytest.raises(InvalidImageError, match="H x W x 3"):
        Image(rgb=np.zeros((2, 2), np.float32))
    with pytest.raises(InvalidImageError, match="alpha"):
        Image(rgb=np.zeros((2, 2, 3), np.float32), alpha=np.zeros((2, 2), np.float64))
    with pytest.raises(InvalidImageError, match="alpha shape"):
        Image(rgb=np.zeros((2, 2, 3), np.float32), alpha=np.zeros((3, 2), np.float32))


# --------------------------------------------------------------------------------------------------
# Sources


def test_every_source_kind_gives_the_same_pixels(tmp_path):
    data = encode(PILImage.fromarray(PHOTO), "PNG")
    path = write(tmp_path, "photo.png", data)
    sources = [path, str(path), data, bytearray(data), memoryview(data), PILImage.open(path), PHOTO]
    for source in sources:
        image = load_image(source)
        np.testing.assert_array_equal(image.rgb, PHOTO / np.float32(255), err_msg=type(source).__name__)
    assert load_image(path).source == str(path)
    assert load_image(data).source == "<bytes>"
    assert load_image(data, name="upload.png").source == "upload.png"
    assert load_image(PHOTO).source is None


def test_image_passes_through():
    image = load_image(PHOTO)
    assert load_image(image) is image


def test_lazily_opened_pil_image_keeps_its_filename(tmp_path):
    path = write(tmp_path, "named.jpg", encode(PILImage.fromarray(PHOTO), "JPEG"))
    image = load_image(PILImage.open(path))
    assert image.source == str(path) and image.info.format == "JPEG"


def test_formats_round_trip(tmp_path):
    for fmt, kwargs in [("BMP", {}), ("TIFF", {}), ("PPM", {}), ("TGA", {}), ("WEBP", {"lossless": True})]:
        path = write(tmp_path, f"photo.{fmt.lower()}", encode(PILImage.fromarray(PHOTO), fmt, **kwargs))
        image = load_image(path)
        assert image.info.format == fmt
        np.testing.assert_array_equal(image.to_uint8(), PHOTO, err_msg=fmt)


# --------------------------------------------------------------------------------------------------
# JPEG XL (imagecodecs)


def _jxl_container(codestream: bytes) -> bytes:
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    return box(b"JXL ", b"\r\n\x87\n") + box(b"ftyp", b"jxl \0\0\0\0jxl ") + box(b"jxlc", codestream)


@needs_imagecodecs
@pytest.mark.parametrize("size", [(1, 1), (8, 8), (64, 48), (128, 72), (100, 37), (37, 100), (600, 300), (513, 9000)])
def test_jxl_size_header(size):
    width, height = size
    stream = imagecodecs.jpegxl_encode(np.zeros((height, width, 3), np.uint8), effort=1)
    assert jxl_size(stream) == (width, height)
    assert jxl_size(_jxl_container(stream)) == (width, height)


@needs_imagecodecs
def test_jxl_load_and_limits(tmp_path):
    stream = imagecodecs.jpegxl_encode(PHOTO, lossless=True)
    for data in (stream, _jxl_container(stream)):
        image = load_image(write(tmp_path, "photo.jxl", data))
        assert image.info.format == "JXL" and image.info.file_bytes == len(data)
        np.testing.assert_array_equal(image.to_uint8(), PHOTO)
    path = write(tmp_path, "photo.jxl", stream)
    expect_invalid(path, str(path), "56x40", "over the limit of 100", max_pixels=100)
    cut = write(tmp_path, "cut.jxl", stream[: len(stream) // 2])
    expect_invalid(cut, str(cut), "JPEG XL")


@needs_imagecodecs
def test_jxl_huge_header_is_refused_before_decoding(tmp_path, monkeypatch):
    stream = imagecodecs.jpegxl_encode(np.zeros((8, 8, 3), np.uint8), effort=1)
    # SizeHeader for 1,000,000 x 1,000,000: not small (0), selector 3 (30 bits) for height, ratio 0, same width
    bits = 0 | (3 << 1) | ((1_000_000 - 1) << 3)
    bits |= 0 << 33  # ratio
    bits |= (3 << 36) | ((1_000_000 - 1) << 38)
    header = b"\xff\x0a" + bits.to_bytes(9, "little")
    assert jxl_size(header + stream[11:]) == (1_000_000, 1_000_000)
    monkeypatch.setattr(imagecodecs, "jpegxl_decode", lambda *a, **k: pytest.fail("decoded"))
    expect_invalid(header + stream[11:], "1000000x1000000", "over the limit")


@needs_imagecodecs
def test_jxl_animation():
    frames = np.stack([np.full((16, 24, 3), colour, np.uint8) for colour in COLOURS])
    data = imagecodecs.jpegxl_encode(frames, lossless=True)
    image = load_image(data)
    assert image.info.n_frames == 3
    np.testing.assert_array_equal(image.to_uint8()[0, 0], COLOURS[0])
    expect_invalid(data, "3 frames", animated="error")


# --------------------------------------------------------------------------------------------------
# Hostile input: damaged JPEG data, non-regular files


def _jpeg(arr: np.ndarray, **kwargs) -> bytes:
    return encode(PILImage.fromarray(arr), "JPEG", quality=90, **kwargs)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_jpeg_cut_short_with_an_end_marker_appended_is_refused(tmp_path, progressive, fraction):
    """libjpeg would grey-fill the missing part (Pillow silences its warning): strict decoding refuses it."""
    data = _jpeg(PHOTO, progressive=progressive)
    path = write(tmp_path, "cut.jpg", data[: int(len(data) * fraction)] + b"\xff\xd9")
    expect_invalid(path, str(path), "corrupt or truncated JPEG", "premature end")


def test_jpeg_whose_header_claims_9000x9000_over_20kb_is_refused(tmp_path):
    data = bytearray(_jpeg(RNG.integers(0, 256, (96, 96, 3), dtype=np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 9000, 9000)
    path = write(tmp_path, "claims-9000.jpg", bytes(data))
    assert path.stat().st_size < 30_000
    expect_invalid(path, str(path), "corrupt or truncated JPEG")


def test_jpeg_with_damaged_entropy_data_is_refused(tmp_path):
    data = bytearray(_jpeg(PHOTO))
    start = data.index(b"\xff\xda") + 40
    for i in range(start, start + 60, 3):
        data[i] ^= 0x5A
    path = write(tmp_path, "flipped.jpg", bytes(data))
    expect_invalid(path, str(path), "corrupt or truncated JPEG")


@pytest.mark.parametrize(
    "kwargs", [{}, {"progressive": True}, {"subsampling": 0}, {"subsampling": 2, "quality": 40}], ids=str
)
def test_strict_jpeg_pixels_equal_pillows(kwargs):
    """The strict decoder is libjpeg-turbo with Pillow's settings: the pixels are Pillow's, bit for bit."""
    data = encode(PILImage.fromarray(PHOTO), "JPEG", **kwargs)
    expected = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(load_image(data).to_uint8(), expected)
    grey = encode(PILImage.fromarray(PHOTO[..., 1]), "JPEG", **kwargs)
    np.testing.assert_array_equal(load_image(grey).to_uint8()[..., 0], np.asarray(PILImage.open(io.BytesIO(grey))))


def test_cmyk_jpeg_is_checked_strictly_too():
    cmyk = PILImage.fromarray(PHOTO).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    image = load_image(data)
    assert image.info.mode == "CMYK" and image.size == (56, 40)
    expect_invalid(data[: len(data) // 2] + b"\xff\xd9", "corrupt or truncated JPEG")


@pytest.mark.timeout(20)
def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    expect_invalid(fifo, str(fifo), "is a FIFO (named pipe), not a regular file")


@pytest.mark.timeout(20)
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_device_is_refused_without_reading_it():
    expect_invalid("/dev/zero", "/dev/zero", "is a character device, not a regular file")
    expect_invalid(Path("/dev/null"), "/dev/null", "not a regular file")


def test_symlinks_are_followed_and_a_loop_is_refused(tmp_path):
    real = write(tmp_path, "real.png", encode(PILImage.fromarray(PHOTO), "PNG"))
    (tmp_path / "link.png").symlink_to(real)
    assert load_image(tmp_path / "link.png").size == (56, 40)
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    expect_invalid(tmp_path / "a.png", "symbolic links")


def test_file_bigger_than_the_memory_budget_is_refused(tmp_path):
    from optimizer.errors import ResourceLimitError

    path = write(tmp_path, "photo.png", encode(PILImage.fromarray(PHOTO), "PNG"))
    with pytest.raises(ResourceLimitError, match="reading a .*-byte file needs about .* over the budget of 100 bytes"):
        load_image(path, max_memory=100)


def test_decoding_over_the_memory_budget_is_refused_from_the_header(tmp_path, monkeypatch):
    """A small PNG that decodes to 9999 x 9999: under the pixel limit, over a budget: refused, nothing decoded."""
    from optimizer.errors import ResourceLimitError

    path = write(tmp_path, "huge.png", raw_png(None, 8, 2, size=(9999, 9999)))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    monkeypatch.setenv("OPTIMIZER_MAX_MEMORY", "1G")
    with pytest.raises(ResourceLimitError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: decoding a 9999x9999 image needs about ")
    assert "over the budget of 1.0 GiB (OPTIMIZER_MAX_MEMORY)" in message and "OPTIMIZER_MAX_MEMORY=" in message
    assert isinstance(caught.value, MemoryError) and isinstance(caught.value, OptimizerError)
