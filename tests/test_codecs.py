"""Codec contract suite: every registered codec gets every check, plus per-format specifics."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimizer.codecs import (
    Codec,
    Param,
    available_codecs,
    codec_for_extension,
    codec_names,
    get_codec,
    register_codec,
)
from optimizer.codecs import registry as registry_module
from optimizer.codecs.jxl import distance_from_quality
from optimizer.errors import (
    CodecUnavailableError,
    EncodeError,
    InvalidParameterError,
    OptimizerError,
    UnknownNameError,
)
from optimizer.imageio import Image, load_image

ALL = codec_names()

#: Settings that must reproduce 8-bit pixels exactly, per codec that offers them.
LOSSLESS = {"png": {}, "webp": {"lossless": True}, "jxl": {"distance": 0.0, "effort": 3}}

#: Quality-axis values from best to worst, per quality param name.
LADDERS = {"quality": (90, 70, 50, 30), "distance": (0.5, 1.5, 3.0, 6.0)}


def _codec(name: str) -> Codec:
    codec = get_codec(name, require_available=False)
    if not codec.available():
        pytest.skip(f"{name} is not available here")
    return codec


@pytest.fixture(params=ALL)
def codec(request: pytest.FixtureRequest) -> Codec:
    return _codec(request.param)


@pytest.fixture(scope="module")
def crop(kodak_paths: list) -> Image:
    """A 192x128 Kodak crop: real texture, fast to encode."""
    image = load_image(kodak_paths[0])
    return image.with_pixels(np.ascontiguousarray(image.rgb[200:328, 300:492]))


@pytest.fixture(scope="module")
def with_alpha(crop: Image) -> Image:
    """The crop with a horizontal alpha ramp, fully transparent at the left edge."""
    ramp = np.linspace(0.0, 1.0, crop.width, dtype=np.float32)
    alpha = np.ascontiguousarray(np.broadcast_to(ramp, (crop.height, crop.width)))
    return crop.with_pixels(crop.rgb, alpha)


def _fast(codec: Codec) -> dict[str, Any]:
    """Valid settings that keep the test suite quick (AVIF and JPEG XL are slow at their defaults)."""
    return {"avif": {"speed": 8}, "jxl": {"effort": 3}}.get(codec.name, {})


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_the_formats() -> None:
    assert ALL == ["jpeg", "webp", "avif", "jxl", "png"]
    assert set(codec_names(available_only=True)) == {c.name for c in available_codecs()}


def test_jxl_is_available_with_dev_extra() -> None:
    codec = get_codec("jxl")
    assert codec.available()
    assert "libjxl" in codec.library_versions()


def test_unknown_codec_name_lists_known() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_codec("gif")
    message = str(info.value)
    assert "'gif'" in message and all(name in message for name in ALL)
    assert isinstance(info.value, KeyError) and isinstance(info.value, OptimizerError)


def test_names_aliases_and_extensions() -> None:
    assert get_codec("JPEG").name == "jpeg"
    assert get_codec("jpg").name == "jpeg"
    assert get_codec("jpegxl").name == "jxl"
    assert codec_for_extension(".JPG").name == "jpeg"
    assert codec_for_extension("jpeg").name == "jpeg"
    assert codec_for_extension("photo.avif").name == "avif"
    assert codec_for_extension(".jxl").name == "jxl"
    with pytest.raises(UnknownNameError, match=r"\.bmp.*known: .*\.png"):
        codec_for_extension(".bmp")


class _Missing(Codec):
    name = "missing"
    extension = ".mis"
    mime_type = "image/x-missing"
    install_hint = "pip install missing-lib"
    params = (Param("quality", "int", 50, 1, 100),)

    def available(self) -> bool:
        return False

    def library_versions(self) -> dict[str, str]:
        return {}

    def encoder_kwargs(self, params: Any = None) -> dict[str, Any]:
        return dict(self.validate_params(params))

    def _encode(self, image: Image, params: dict[str, Any], threads: int | None) -> bytes:
        raise AssertionError("must not be reached")


def test_unavailable_codec_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch, crop: Image) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_codec(_Missing())
    with pytest.raises(CodecUnavailableError, match="missing.*pip install missing-lib"):
        get_codec("missing")
    codec = get_codec("missing", require_available=False)
    assert "missing" not in codec_names(available_only=True)
    with pytest.raises(InvalidParameterError):  # params are checked before availability
        codec.encode(crop, {"quality": 0})
    with pytest.raises(CodecUnavailableError):
        codec.encode(crop, {"quality": 50})
    assert codec.describe()["install_hint"] == "pip install missing-lib"
    with pytest.raises(ValueError, match="already registered"):
        register_codec(_Missing())


def test_library_failure_becomes_encode_error(monkeypatch: pytest.MonkeyPatch, crop: Image) -> None:
    codec = get_codec("webp")

    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise OSError("encoder error -2")

    monkeypatch.setattr(codec, "_encode", broken)
    with pytest.raises(EncodeError, match=r"webp: encoder failed on a 192x128 image.*encoder error -2"):
        codec.encode(crop)


# --------------------------------------------------------------------------------------------------
# Contract: every available codec


def test_round_trip_keeps_size(codec: Codec, crop: Image) -> None:
    data = codec.encode(crop, _fast(codec))
    assert isinstance(data, bytes) and len(data) > 0
    decoded = codec.decode(data)
    assert decoded.size == crop.size
    assert decoded.rgb.dtype == np.float32 and decoded.alpha is None


def test_alpha_kept_or_composited_over_white(codec: Codec, with_alpha: Image) -> None:
    if codec.name in LOSSLESS:
        params = LOSSLESS[codec.name]
    else:
        params = {**_fast(codec), codec.quality_param: LADDERS[codec.quality_param][0]}
    decoded = codec.decode(codec.encode(with_alpha, params))
    assert decoded.size == with_alpha.size
    if codec.supports_alpha:
        assert decoded.has_alpha
        assert np.abs(decoded.alpha - with_alpha.alpha).max() < 0.02
    else:
        assert not decoded.has_alpha
        expected = with_alpha.for_scoring()
        assert np.abs(decoded.rgb - expected).mean() < 0.02
        assert decoded.rgb[:, :4].mean() > 0.95  # the transparent edge became white


def test_bytes_fall_as_quality_falls(codec: Codec, kodak_paths: list) -> None:
    if codec.quality_param is None:
        assert codec.lossless
        return
    best_first = LADDERS[codec.quality_param]
    assert (best_first[0] > best_first[-1]) is codec.quality_higher_is_better
    codec.validate_params({codec.quality_param: best_first[-1]})
    for path in (kodak_paths[2], kodak_paths[12]):
        image = load_image(path)
        image = image.with_pixels(np.ascontiguousarray(image.rgb[:256, :384]))
        sizes = [len(codec.encode(image, {**_fast(codec), codec.quality_param: v})) for v in best_first]
        assert all(a > b for a, b in zip(sizes, sizes[1:])), f"{codec.name} {path.name}: {dict(zip(best_first, sizes))}"


def _invalid_cases(codec: Codec) -> list[tuple[dict[str, Any], str]]:
    cases: list[tuple[dict[str, Any], str]] = [({"no_such_param": 1}, "unknown parameter 'no_such_param'")]
    for p in codec.params:
        if p.kind in ("int", "float"):
            cases += [({p.name: p.low - 1}, p.name), ({p.name: p.high + 1}, p.name), ({p.name: "high"}, p.name)]
            cases += [({p.name: [p.default]}, p.name), ({p.name: True}, p.name), ({p.name: float("nan")}, p.name)]
            if p.kind == "int":
                cases.append(({p.name: p.low + 0.5}, p.name))
        elif p.kind == "choice":
            cases += [({p.name: "4:1:1"}, p.name), ({p.name: 420}, p.name)]
        else:
            cases += [({p.name: "maybe"}, p.name), ({p.name: 2}, p.name)]
    return cases


def test_invalid_params_raise_before_encoding(codec: Codec, crop: Image, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(codec, "_encode", lambda *a, **k: calls.append(a) or b"")
    for params, fragment in _invalid_cases(codec):
        with pytest.raises(InvalidParameterError) as info:
            codec.encode(crop, params)
        assert str(info.value).startswith(f"{codec.name}: ") and fragment in str(info.value), (params, str(info.value))
        assert isinstance(info.value, ValueError)
    assert calls == []
    with pytest.raises(InvalidParameterError, match="must be a mapping"):
        codec.validate_params([("quality", 50)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("jpeg", {"quality": 0}, "jpeg: quality must be an integer in [1, 100], got 0"),
        ("jpeg", {"quality": 101}, "jpeg: quality must be an integer in [1, 100], got 101"),
        ("jpeg", {"subsampling": "4:1:1"}, "jpeg: subsampling must be one of '4:4:4', '4:2:2', '4:2:0', got '4:1:1'"),
        ("webp", {"quality": 0}, "webp: quality must be an integer in [1, 100], got 0"),
        ("webp", {"method": 7}, "webp: method must be an integer in [0, 6], got 7"),
        ("avif", {"speed": 11}, "avif: speed must be an integer in [0, 10], got 11"),
        ("avif", {"speed": -1}, "avif: speed must be an integer in [0, 10], got -1"),
        ("avif", {"quality": 101}, "avif: quality must be an integer in [1, 100], got 101"),
        ("jxl", {"distance": 25.5}, "jxl: distance must be a number in [0, 25], got 25.5"),
        ("jxl", {"effort": 10}, "jxl: effort must be an integer in [1, 9], got 10"),
        ("jxl", {"quality": 0}, "jxl: quality must be an integer in [1, 100], got 0"),
        ("png", {"compress_level": 10}, "png: compress_level must be an integer in [0, 9], got 10"),
        (
            "jpeg",
            {"qualty": 80},
            "jpeg: unknown parameter 'qualty'; known: optimize, progressive, quality, subsampling",
        ),
    ],
)
def test_invalid_param_messages(name: str, params: dict[str, Any], message: str, crop: Image) -> None:
    with pytest.raises(InvalidParameterError) as info:
        _codec(name).encode(crop, params)
    assert str(info.value) == message


def test_validate_params_fills_defaults_and_coerces(codec: Codec) -> None:
    assert codec.validate_params(None) == codec.defaults()
    for p in codec.params:
        if p.kind == "int":
            assert codec.validate_params({p.name: str(p.high)})[p.name] == p.high
            assert codec.validate_params({p.name: float(p.low)})[p.name] == p.low
        elif p.kind == "bool":
            assert codec.validate_params({p.name: "true"})[p.name] is True


def test_lossless_settings_are_exact(codec: Codec, crop: Image, with_alpha: Image) -> None:
    if codec.name not in LOSSLESS:
        assert not codec.is_lossless(_fast(codec))
        return
    params = LOSSLESS[codec.name]
    assert codec.is_lossless(params)
    for image in (crop, with_alpha):
        decoded = codec.decode(codec.encode(image, params))
        np.testing.assert_array_equal(decoded.to_uint8(), image.to_uint8())


def test_lossy_settings_are_lossy(codec: Codec, crop: Image) -> None:
    """The imagecodecs trap: a lossy request must not silently come back lossless."""
    if codec.lossless:
        return
    params = _fast(codec)
    assert not codec.is_lossless(params)
    data = codec.encode(crop, params)
    assert not np.array_equal(codec.decode(data).to_uint8(), crop.to_uint8())
    if codec.name in LOSSLESS:
        assert len(data) < 0.5 * len(codec.encode(crop, LOSSLESS[codec.name]))


def test_exported_kwargs_reproduce_the_bytes(codec: Codec, crop: Image) -> None:
    params = _fast(codec)
    kwargs = codec.encoder_kwargs(params)
    json.dumps(kwargs)
    if codec.encoder_function == "PIL.Image.Image.save":
        assert codec.pil_save_kwargs(params) == kwargs
        buf = io.BytesIO()
        crop.to_pil(keep_alpha=codec.supports_alpha).save(buf, **kwargs)
        assert buf.getvalue() == codec.encode(crop, params)
    else:
        import imagecodecs

        assert codec.encoder_function == "imagecodecs.jpegxl_encode"
        assert bytes(imagecodecs.jpegxl_encode(crop.to_uint8(), **kwargs)) == codec.encode(crop, params)
        with pytest.raises(CodecUnavailableError, match="encoder_kwargs"):
            codec.pil_save_kwargs(params)


def test_versions_and_describe(codec: Codec) -> None:
    versions = codec.library_versions()
    assert versions and all(isinstance(k, str) and isinstance(v, str) and v for k, v in versions.items())
    described = json.loads(json.dumps(codec.describe()))
    assert described["name"] == codec.name and described["available"] is True
    assert [p["name"] for p in described["params"]] == [p.name for p in codec.params]
    if codec.quality_param is not None:
        assert codec.quality_param in [p.name for p in codec.params]


def test_quality_param_distributions(codec: Codec) -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    for p in codec.params:
        dist = p.to_distribution()
        expected = {"int": IntDistribution, "float": FloatDistribution}.get(p.kind, CategoricalDistribution)
        assert isinstance(dist, expected)
        if p.kind in ("int", "float"):
            assert (dist.low, dist.high) == (p.low, p.high)
            with pytest.raises(InvalidParameterError):
                p.to_distribution(low=p.low - 1)
            with pytest.raises(InvalidParameterError, match="low must be <= high"):
                p.to_distribution(low=p.high, high=p.low)
        else:
            with pytest.raises(InvalidParameterError):
                p.to_distribution(choices=["nonsense"])


# --------------------------------------------------------------------------------------------------
# Format specifics


def test_param_distribution_restriction() -> None:
    q = get_codec("jpeg").param("quality")
    dist = q.to_distribution(low=40, high=95)
    assert (dist.low, dist.high, dist.step) == (40, 95, 1)
    sub = get_codec("jpeg").param("subsampling").to_distribution(choices=["4:2:0", "4:4:4"])
    assert sub.choices == ("4:2:0", "4:4:4")
    assert get_codec("jpeg").param("progressive").to_distribution().choices == (False, True)
    with pytest.raises(InvalidParameterError, match="quality must be an integer in \\[1, 100\\], got 0"):
        q.to_distribution(low=0)
    with pytest.raises(InvalidParameterError, match="with low/high"):
        q.to_distribution(choices=[50])


def test_jpeg_options_change_the_bytes(crop: Image) -> None:
    jpeg = get_codec("jpeg")
    plain = {"quality": 80, "progressive": False, "optimize": False}
    base = jpeg.encode(crop, plain)
    assert len(jpeg.encode(crop, {**plain, "subsampling": "4:4:4"})) > len(base)
    assert len(jpeg.encode(crop, {**plain, "optimize": True})) < len(base)
    progressive = jpeg.encode(crop, {**plain, "progressive": True})
    from PIL import Image as PILImage

    assert PILImage.open(io.BytesIO(progressive)).info.get("progressive") == 1


def test_jpeg_defaults_are_optimised_progressive(crop: Image, tmp_path: Path) -> None:
    """What ``encode``, ``compress`` and the search spaces start from: the same pixels as baseline
    sequential JPEG, in fewer bytes (the tuning baseline's settings)."""
    from PIL import Image as PILImage

    from optimizer.cli import main
    from optimizer.tuning.settings import baseline_settings

    jpeg = get_codec("jpeg")
    assert jpeg.defaults()["progressive"] is True and jpeg.defaults()["optimize"] is True
    default = jpeg.encode(crop, {"quality": 85})
    plain = jpeg.encode(crop, {"quality": 85, "progressive": False, "optimize": False})
    assert len(default) < len(plain)
    assert np.array_equal(jpeg.decode(default).rgb, jpeg.decode(plain).rgb)
    assert dict(baseline_settings().params) == jpeg.validate_params({"quality": 85})
    source = tmp_path / "in.png"
    PILImage.fromarray(crop.to_uint8()).save(source)
    assert main(["encode", str(source), "-f", "jpeg", "-o", str(tmp_path / "out.jpg"), "-p", "quality=85"]) == 0
    assert (tmp_path / "out.jpg").read_bytes() == default
    assert PILImage.open(tmp_path / "out.jpg").info.get("progressive") == 1


def test_avif_backend_recorded() -> None:
    versions = _codec("avif").library_versions()
    assert versions["backend"] in ("pillow", "pillow-avif-plugin")
    assert versions.get("libavif")


def test_jxl_quality_is_an_alternative_to_distance(crop: Image) -> None:
    jxl = _codec("jxl")
    assert jxl.validate_params({"quality": 90}) == {"distance": 1.0, "effort": 7}
    assert jxl.validate_params({"quality": 100})["distance"] == 0.0
    assert distance_from_quality(30) == pytest.approx(6.4)
    assert jxl.encode(crop, {"quality": 80, "effort": 3}) == jxl.encode(crop, {"distance": 1.9, "effort": 3})
    with pytest.raises(InvalidParameterError, match="distance or quality, not both"):
        jxl.validate_params({"quality": 80, "distance": 1.0})


def test_webp_lossless_keeps_colour_under_transparency(crop: Image) -> None:
    webp = get_codec("webp")
    alpha = np.ones(crop.rgb.shape[:2], dtype=np.float32)
    alpha[:, :20] = 0.0
    image = crop.with_pixels(crop.rgb, alpha)
    decoded = webp.decode(webp.encode(image, {"lossless": True}))
    np.testing.assert_array_equal(decoded.to_uint8(), image.to_uint8())


def test_avif_plugin_backend_is_recorded_and_byte_identical() -> None:
    """Importing pillow_avif swaps Pillow's handler; the codec must report it (run apart: it is global)."""
    pytest.importorskip("pillow_avif")
    script = (
        "import numpy as np\n"
        "from optimizer.codecs import get_codec\n"
        "from optimizer.imageio import load_image\n"
        "img = load_image(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))\n"
        "c = get_codec('avif'); a = c.encode(img, {'speed': 9}); first = c.library_versions()['backend']\n"
        "import pillow_avif\n"
        "b = c.encode(img, {'speed': 9}); v = c.library_versions()\n"
        "print(first, v['backend'], v['pillow-avif-plugin'] != '', a == b)\n"
    )
    import subprocess
    import sys

    from PIL import features

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    native = "pillow" if features.check("avif") else "pillow-avif-plugin"
    assert out == [native, "pillow-avif-plugin", "True", "True"]
