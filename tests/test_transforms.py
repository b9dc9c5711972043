"""Resize, sharpen and the Transform bundle."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.errors import InvalidParameterError
from optimizer.imageio import Image, load_image
from optimizer.transforms import (
    RESIZE_FILTERS,
    Transform,
    linear_to_srgb,
    resize,
    sharpen,
    srgb_to_linear,
)


def _image(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image:
    return Image(rgb=np.ascontiguousarray(rgb, dtype=np.float32), alpha=alpha)


@pytest.fixture(scope="module")
def photo(kodak_paths: list) -> Image:
    image = load_image(kodak_paths[6])
    return image.with_pixels(np.ascontiguousarray(image.rgb[100:292, 200:488]))  # 288x192


@pytest.fixture
def checker() -> Image:
    """A 1-pixel black/white checkerboard: the worst case for gamma-space averaging."""
    y, x = np.mgrid[:32, :48]
    grid = ((x + y) % 2).astype(np.float32)
    return _image(np.repeat(grid[..., None], 3, axis=2))


# --------------------------------------------------------------------------------------------------
# Resize


def test_sizes_and_aspect(photo: Image) -> None:
    assert resize(photo, width=144).size == (144, 96)
    assert resize(photo, height=48).size == (72, 48)
    assert resize(photo, width=100, height=100).size == (100, 100)
    assert resize(photo, scale=0.5).size == (144, 96)
    assert resize(photo, scale=0.3).size == (86, 58)  # rounded to nearest
    assert resize(photo, scale=0.001).size == (1, 1)  # never zero
    assert resize(photo, scale=2).size == (576, 384)  # upscaling is allowed


def test_same_size_is_identity(photo: Image) -> None:
    assert resize(photo, width=photo.width) is photo
    assert resize(photo, scale=1.0) is photo


@pytest.mark.parametrize("name", RESIZE_FILTERS)
def test_each_filter(name: str, photo: Image) -> None:
    out = resize(photo, scale=0.5, filter=name)
    assert out.size == (144, 96) and out.rgb.dtype == np.float32
    assert 0.0 <= out.rgb.min() and out.rgb.max() <= 1.0
    assert abs(float(out.rgb.mean()) - float(photo.rgb.mean())) < 0.01
    flat = _image(np.full((20, 30, 3), 0.37, np.float32))
    np.testing.assert_allclose(resize(flat, width=13, filter=name).rgb, 0.37, atol=1e-5)


def test_filters_differ(photo: Image) -> None:
    outs = {name: resize(photo, scale=0.37, filter=name).rgb for name in RESIZE_FILTERS}
    assert not np.allclose(outs["lanczos"], outs["nearest"])
    assert not np.allclose(outs["lanczos"], outs["bilinear"])
    assert not np.allclose(outs["box"], outs["hamming"])


def test_nearest_upscale_replicates_pixels(photo: Image) -> None:
    out = resize(photo, scale=2, filter="nearest")
    np.testing.assert_array_equal(out.rgb[::2, ::2], photo.rgb)


def test_float_precision_kept(photo: Image) -> None:
    out = resize(photo, scale=0.5)
    steps = out.rgb * 255.0
    assert np.abs(steps - np.rint(steps)).max() > 0.1  # not re-quantised to 8 bits


def test_linear_light_differs_on_high_contrast_edge(checker: Image) -> None:
    gamma = resize(checker, scale=0.5, filter="box")
    linear = resize(checker, scale=0.5, filter="box", linear_light=True)
    np.testing.assert_allclose(gamma.rgb, 0.5, atol=1e-5)
    np.testing.assert_allclose(linear.rgb, linear_to_srgb(np.float32(0.5)), atol=1e-4)  # ~0.735
    assert float(linear.rgb.mean()) > float(gamma.rgb.mean()) + 0.2


def test_srgb_linear_round_trip() -> None:
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=2e-6)
    assert srgb_to_linear(np.float32(1.0)) == pytest.approx(1.0) and srgb_to_linear(np.float32(0.0)) == 0.0


def _red_next_to_transparent_green() -> Image:
    rgb = np.zeros((16, 32, 3), np.float32)
    rgb[:, :16, 0] = 1.0  # opaque red on the left
    rgb[:, 16:, 1] = 1.0  # green on the right, but fully transparent
    alpha = np.zeros((16, 32), np.float32)
    alpha[:, :16] = 1.0
    return _image(rgb, alpha)


@pytest.mark.parametrize("linear_light", [False, True])
def test_alpha_resized_premultiplied(linear_light: bool) -> None:
    image = _red_next_to_transparent_green()
    out = resize(image, width=11, filter="bilinear", linear_light=linear_light)
    assert out.has_alpha and out.alpha.shape == (6, 11)
    assert out.alpha[:, 0].min() > 0.99 and out.alpha[:, -1].max() < 0.01
    edge = out.alpha > 0.01
    assert edge.any() and (out.alpha[edge] < 0.99).any()  # a partially transparent edge exists
    assert out.rgb[..., 1][edge].max() < 1e-4  # no green bleeds into visible pixels
    np.testing.assert_allclose(out.rgb[..., 0][edge], 1.0, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Sharpen


def test_sharpen_amount_zero_is_identity(photo: Image) -> None:
    assert sharpen(photo, amount=0) is photo
    assert sharpen(photo, amount=0.0, radius=3.0, threshold=0.5) is photo


def _local_contrast(rgb: np.ndarray) -> float:
    return float(np.abs(np.diff(rgb, axis=0)).mean() + np.abs(np.diff(rgb, axis=1)).mean())


def test_sharpen_increases_local_contrast(photo: Image) -> None:
    out = sharpen(photo, amount=1.0, radius=1.0)
    assert out.size == photo.size and out.rgb.dtype == np.float32
    assert 0.0 <= out.rgb.min() and out.rgb.max() <= 1.0
    assert _local_contrast(out.rgb) > 1.2 * _local_contrast(photo.rgb)
    assert _local_contrast(sharpen(photo, amount=2.0).rgb) > _local_contrast(out.rgb)
    assert abs(float(out.rgb.mean()) - float(photo.rgb.mean())) < 0.01


def test_sharpen_steepens_an_edge() -> None:
    ramp = np.clip(np.linspace(-1, 2, 30, dtype=np.float32), 0, 1)
    image = _image(np.broadcast_to(ramp[None, :, None], (8, 30, 3)))
    out = sharpen(image, amount=1.5, radius=2.0)
    assert np.diff(out.rgb[4, :, 0]).max() > np.diff(ramp).max()


def test_sharpen_flat_and_threshold(photo: Image) -> None:
    flat = _image(np.full((12, 12, 3), 0.4, np.float32))
    np.testing.assert_allclose(sharpen(flat, amount=3.0).rgb, 0.4, atol=1e-6)
    np.testing.assert_array_equal(sharpen(photo, amount=1.0, threshold=1.0).rgb, photo.rgb)
    partial = sharpen(photo, amount=1.0, threshold=0.05).rgb
    changed = ~np.isclose(partial, photo.rgb)
    assert 0 < changed.mean() < (~np.isclose(sharpen(photo, amount=1.0).rgb, photo.rgb)).mean()


def test_sharpen_with_alpha_ignores_transparent_colour() -> None:
    image = _red_next_to_transparent_green()
    rgb = image.rgb.copy()
    rgb[:, :16] = 0.5  # visible grey: a naive unsharp mask would push it away from the hidden green
    image = image.with_pixels(rgb, image.alpha)
    out = sharpen(image, amount=2.0, radius=2.0)
    np.testing.assert_array_equal(out.alpha, image.alpha)
    np.testing.assert_allclose(out.rgb[:, :16], 0.5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs width, height"),
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"height": -5}, "height must be a positive integer, got -5"),
        ({"width": 10.5}, "width must be a positive integer, got 10.5"),
        ({"width": True}, "width must be a positive integer"),
        ({"scale": 0}, "scale must be a positive finite number, got 0"),
        ({"scale": float("nan")}, "scale must be a positive finite number"),
        ({"scale": 0.5, "width": 10}, "either scale or width/height"),
        (
            {"scale": 0.5, "filter": "spline"},
            "unknown resize filter 'spline'; known: lanczos, bicubic, bilinear, box, hamming, nearest",
        ),
    ],
)
def test_resize_validation(kwargs: dict, message: str, photo: Image) -> None:
    with pytest.raises(InvalidParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resize(photo, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount": -0.5}, "sharpen_amount must be a number in [0, 5], got -0.5"),
        ({"amount": 1.0, "radius": 0}, "sharpen_radius must be a number in [0.1, 20], got 0"),
        ({"amount": 1.0, "threshold": 1.5}, "sharpen_threshold must be a number in [0, 1], got 1.5"),
    ],
)
def test_sharpen_validation(kwargs: dict, message: str, photo: Image) -> None:
    with pytest.raises(InvalidParameterError) as info:
        sharpen(photo, **kwargs)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------------
# Transform


def test_transform_apply_is_resize_then_sharpen(photo: Image) -> None:
    t = Transform(width=144, filter="bicubic", linear_light=True, sharpen_amount=0.8, sharpen_radius=0.7)
    expected = sharpen(resize(photo, width=144, filter="bicubic", linear_light=True), amount=0.8, radius=0.7)
    np.testing.assert_array_equal(t.apply(photo).rgb, expected.rgb)
    assert t.output_size(photo.size) == (144, 96)
    assert not t.is_identity


def test_transform_label() -> None:
    assert Transform().label() == "none"
    assert Transform(width=1024, linear_light=True, sharpen_amount=0.3, sharpen_radius=0.7).label() == (
        "width 1024 lanczos linear + sharpen 0.3 r0.7"
    )
    assert Transform(scale=0.5, filter="box").label() == "scale 0.5 box"
    assert Transform(width=30, height=20, sharpen_amount=1, sharpen_threshold=0.02).label() == (
        "30x20 lanczos + sharpen 1 t0.02"
    )


def test_transform_identity(photo: Image) -> None:
    for t in (Transform(), Transform(scale=1.0), Transform(filter="box", sharpen_radius=2.0)):
        assert t.is_identity
        assert t.apply(photo) is photo


def test_transform_dict_round_trip() -> None:
    t = Transform(scale=0.75, filter="hamming", sharpen_amount=0.5, sharpen_threshold=0.02)
    data = t.to_dict()
    assert data["scale"] == 0.75 and data["filter"] == "hamming"
    assert Transform.from_dict(data) == t
    with pytest.raises(InvalidParameterError, match="unknown transform key 'sharpness'; known: width, height"):
        Transform.from_dict({"sharpness": 1})


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"width": 0}, "width must be a positive integer"),
        ({"scale": -1.0}, "scale must be a positive finite number"),
        ({"scale": 0.5, "height": 20}, "either scale or width/height"),
        (
            {"filter": "spline"},
            "filter must be one of 'lanczos', 'bicubic', 'bilinear', 'box', 'hamming', 'nearest', got 'spline'",
        ),
        ({"sharpen_amount": 6}, "sharpen_amount must be a number in [0, 5], got 6"),
        ({"sharpen_threshold": -0.1}, "sharpen_threshold must be"),
    ],
)
def test_transform_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        Transform(**kwargs)
    assert fragment in str(info.value)
