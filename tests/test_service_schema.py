"""The OpenAPI schema says what the server accepts: schemathesis against ``create_app``, both directions.

Requests the schema calls valid must be served (no 4xx beyond those it documents for content, no 5xx) and
answers must match their documented shapes; requests it calls invalid must be refused. Bytes cannot say
whether they are an image, so file fields get real images (16x16 PNGs, above the documented
``x-min-side``, equal within a pair) and the archive field a real zip; everything else is generated from
the schema. The run is bounded: few examples per operation, no deadline per example (scoring is real).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from optimizer.service import ServiceConfig, create_app  # noqa: E402
from optimizer.service.contract import RequestRules  # noqa: E402

SIDE = 16


def _png(red: int, green: int) -> bytes:
    buffer = io.BytesIO()
    image = PILImage.new("RGB", (SIDE, SIDE), (red, green, 90))
    image.putpixel((3, 5), (255 - red, 0, 0))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _archive(image: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("original/a.png", image)
        archive.writestr("processed/a.png", _png(10, 20))
    return buffer.getvalue()


schemathesis.openapi.format("binary", st.builds(_png, st.integers(0, 255), st.integers(0, 255)))
schemathesis.openapi.media_type(
    "application/zip", st.builds(_archive, st.builds(_png, st.integers(0, 255), st.just(7)))
)


def _config() -> ServiceConfig:
    return ServiceConfig(
        profiles=("fast",),
        pool_size=1,
        warm_up=False,
        max_pixels=4096,
        max_batch_pairs=3,
        compress_max_probes=2,
        max_file_bytes=256 * 1024,
        max_request_bytes=1024 * 1024,
    )


@pytest.fixture(scope="module")
def api_schema() -> Iterator[Any]:
    app = create_app(_config())
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan

    yield loaded
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


OPERATIONS = [
    ("POST", "/evaluate/single"),
    ("POST", "/evaluate/batch"),
    ("POST", "/compress"),
    ("GET", "/presets"),
    ("GET", "/presets/{name}"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
]


#: Operations with parameters or a body, whose invalid requests can be generated.
WITH_INPUT = OPERATIONS[:3]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [(m, p, "positive") for m, p in OPERATIONS] + [(m, p, "negative") for m, p in WITH_INPUT],
)
def test_schema_and_server_agree(api_schema: Any, method: str, path: str, mode: str) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @hypothesis.given(case=strategy)
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(case: Any) -> None:
        case.call_and_validate()

    check()


def test_rules_follow_the_config() -> None:
    """The published rules name this server's profiles, metrics and searchable formats, and the minimum size."""
    rules = RequestRules.for_config(_config())
    assert rules.profiles == ("fast",) and rules.metrics == ("ssim", "psnr") and rules.min_side == 11
    assert "jpeg" in rules.formats and "jpg" in rules.formats and "png" not in rules.formats
    schema = create_app(_config()).openapi()
    compress = schema["paths"]["/compress"]["post"]
    by_name = {p["name"]: p for p in compress["parameters"]}
    assert by_name["max_probes"]["schema"]["minimum"] == 1
    assert by_name["target"]["required"] is True and by_name["profile"]["schema"]["enum"] == ["fast"]
    image = compress["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["image"]
    assert image["x-min-side"] == 11 and "11x11" in image["description"]
    batch = schema["paths"]["/evaluate/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert [branch["title"] for branch in batch["oneOf"]] == ["Archive", "Pairs"]
    assert batch["maxProperties"] == 6 and batch["additionalProperties"] is False


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("ssim:0.9", True),
        (" SSIM : 0.9 ", True),
        ("psnr:-1e5", True),
        ("composite:1", True),
        ("composite:.5", True),
        ("composite:1.5", False),
        ("ssim:9e999", False),  # would parse to infinity
        ("ssim:1_0", False),  # Python's float reads it; the pattern does not
        ("ssim:٣", False),  # a non-ASCII digit
        ("ssim", False),
        ("lpips:0.1", False),  # not computed by this server
    ],
)
def test_target_pattern_and_check_agree(value: str, accepted: bool) -> None:
    import re

    from optimizer.service.errors import ServiceError

    rules = RequestRules.for_config(_config())
    assert (re.fullmatch(rules.target_pattern, value) is not None) is accepted
    if accepted:
        assert rules.target(value) is not None
    else:
        with pytest.raises(ServiceError):
            rules.target(value)


def test_metric_minimum_sides_are_right() -> None:
    """Each metric scores its documented minimum side and refuses one pixel less."""
    import numpy as np

    from optimizer.errors import InvalidImageError
    from optimizer.evaluator import Evaluator
    from optimizer.imageio import load_image
    from optimizer.service.contract import METRIC_MIN_SIDE

    rng = np.random.default_rng(0)
    for metric in ("psnr", "ssim", "ms_ssim", "ssimulacra2"):
        evaluator = Evaluator(metrics=[metric])
        side = METRIC_MIN_SIDE[metric]
        image = rng.random((side, side + 5, 3), dtype=np.float32)
        evaluator.evaluate(load_image(image), load_image(image * 0.9))
        if side > 1:
            small = image[: side - 1]
            with pytest.raises(InvalidImageError):
                evaluator.evaluate(load_image(small), load_image(small * 0.9))
