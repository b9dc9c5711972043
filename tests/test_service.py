"""The web service through FastAPI's TestClient: every endpoint, every error, the limits, the queue bound.

Images are small Kodak crops; the app under test serves the ``fast`` profile by default (``default`` is
enabled too and exercised once), with limits small enough to hit cheaply.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

with warnings.catch_warnings():  # Starlette's TestClient warns about httpx at import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

import optimizer.cli.serve_cmd  # noqa: E402,F401  (registers the command)
from optimizer.cli import EXIT_INPUT, EXIT_USAGE, main  # noqa: E402
from optimizer.errors import ConfigError, WeightsNotFoundError  # noqa: E402
from optimizer.evaluator import Evaluator  # noqa: E402
from optimizer.imageio import load_image  # noqa: E402
from optimizer.service import ServiceConfig, create_app  # noqa: E402
from optimizer.service import jobs as jobs_module  # noqa: E402
from optimizer.service.routes import evaluate as evaluate_routes  # noqa: E402
from optimizer.tuning.presets import Expected, Preset, PresetTier  # noqa: E402
from optimizer.tuning.settings import EncodingSettings  # noqa: E402

KIB = 1024
MIB = 1024 * KIB


def _encode(image: PILImage.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(kodak_paths: list[Path]) -> dict[str, bytes]:
    """160x120 crops: PNG originals, JPEG versions, a rotated size, a big-but-small-file PNG."""
    out: dict[str, bytes] = {}
    for i, path in enumerate(kodak_paths[:3]):
        crop = PILImage.open(path).convert("RGB").crop((300, 200, 460, 320))
        out[f"png{i}"] = _encode(crop, "PNG")
        out[f"jpg{i}"] = _encode(crop, "JPEG", quality=60)
    out["tall"] = _encode(PILImage.open(kodak_paths[0]).convert("RGB").crop((0, 0, 120, 160)), "PNG")
    out["huge"] = _encode(PILImage.new("RGB", (600, 400), (90, 120, 150)), "PNG")  # 240,000 pixels
    return out


def _preset() -> Preset:
    tier = PresetTier(
        name="target",
        target="ssim:0.9",
        settings=EncodingSettings("jpeg", {"quality": 70}),
        expected=Expected(bits_per_pixel=1.1, total_bytes=12345, quality=0.93),
    )
    return Preset(tiers=[tier], default="target", mode="constrained", target="ssim:0.9", study={"name": "t"})


@pytest.fixture(scope="module")
def preset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _preset().save(tmp_path_factory.mktemp("presets") / "web.json")


@pytest.fixture(scope="module")
def config(preset_path: Path) -> ServiceConfig:
    return ServiceConfig(
        profiles=("fast", "default"),
        presets=(preset_path,),
        max_file_bytes=1 * MIB,
        max_request_bytes=4 * MIB,
        max_pixels=200_000,
        max_batch_pairs=6,
        max_zip_entries=40,
        pool_size=2,
        max_queue=8,
        request_timeout=60.0,
        compress_max_probes=8,
    )


@pytest.fixture(scope="module")
def client(config: ServiceConfig) -> Any:
    with TestClient(create_app(config)) as c:
        yield c


def _pair(images: dict[str, bytes], i: int = 0) -> dict[str, tuple[str, bytes]]:
    return {"original": (f"kodak{i}.png", images[f"png{i}"]), "processed": (f"kodak{i}.jpg", images[f"jpg{i}"])}


def _expected(profile: str | None, images: dict[str, bytes], i: int = 0, **kwargs: Any) -> Any:
    evaluator = Evaluator(profile, **kwargs) if profile else Evaluator(**kwargs)
    return evaluator.evaluate(load_image(images[f"png{i}"]), load_image(images[f"jpg{i}"]))


def _error(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["type"] == kind, body
    assert body["error"]["message"]
    return body["error"]


# --------------------------------------------------------------------------------------------------
# Operations endpoints


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["error"] is None
    assert body["profiles"] == ["fast", "default"] and body["default_profile"] == "fast"
    assert body["presets"] == ["web"]
    assert set(body["metrics"]) == {"ssim", "psnr", "ssimulacra2", "ms_ssim"}
    assert body["pool"]["workers"] == 2 and body["pool"]["max_queue"] == 8


def test_not_ready_until_started(images: dict[str, bytes]) -> None:
    """Without start-up (no lifespan) nothing is loaded: /ready and the work endpoints answer 503."""
    plain = TestClient(create_app(ServiceConfig(profiles=("fast",), pool_size=1)))
    assert plain.get("/health").status_code == 200
    ready = plain.get("/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False and "Retry-After" in ready.headers
    response = plain.post("/evaluate/single", files=_pair(images))
    _error(response, 503, "not_ready")
    assert int(response.headers["Retry-After"]) >= 1
    _error(plain.get("/presets"), 503, "not_ready")


def test_metrics_endpoint(client: TestClient, images: dict[str, bytes]) -> None:
    assert client.post("/evaluate/single", files=_pair(images)).status_code == 200
    client.post("/evaluate/single", files={"original": ("a.png", b"nope"), "processed": ("b.png", b"nope")})
    client.get("/no/such/route/12345")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'optimizer_http_requests_total{endpoint="/evaluate/single",method="POST",status="200"}' in text
    assert 'optimizer_http_requests_total{endpoint="/evaluate/single",method="POST",status="422"}' in text
    assert 'endpoint="unmatched"' in text and "/no/such/route" not in text
    assert 'optimizer_http_request_duration_seconds_bucket{endpoint="/evaluate/single",le="0.5"}' in text
    assert 'optimizer_quality_normalised_bucket{le="1.0",metric="composite",profile="fast"}' in text
    assert 'optimizer_quality_normalised_count{metric="ssim",profile="fast"}' in text
    assert 'optimizer_pool_jobs{state="running"} 0.0' in text
    assert "optimizer_ready 1.0" in text
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_openapi_has_models_examples_and_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/evaluate/single",
        "/evaluate/batch",
        "/compress",
        "/presets",
        "/presets/{name}",
        "/health",
        "/ready",
        "/metrics",
    }
    single = schema["paths"]["/evaluate/single"]["post"]
    body = single["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["original", "processed"]
    assert single["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("PairResponse")
    assert "examples" in single["responses"]["422"]["content"]["application/json"]
    assert "Retry-After" in single["responses"]["503"]["headers"]
    operations = {
        (path, method): op["operationId"] for path, ops in schema["paths"].items() for method, op in ops.items()
    }
    assert operations[("/evaluate/single", "post")] == "evaluate_single_route_evaluate_single_post"
    assert operations[("/compress", "post")] == "compress_route_compress_post"
    assert operations[("/presets/{name}", "get")] == "preset_presets__name__get"
    assert [tag for op in schema["paths"]["/health"].values() for tag in op["tags"]] == ["operations"]
    components = schema["components"]["schemas"]
    assert components["PairResponse"]["examples"][0]["level"] == "good"
    assert components["CompressResponse"]["examples"] and components["BatchResponse"]["examples"]


# --------------------------------------------------------------------------------------------------
# /evaluate/single


def test_single_matches_in_process_scores(client: TestClient, images: dict[str, bytes]) -> None:
    response = client.post("/evaluate/single", files=_pair(images, 1))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = _expected("fast", images, 1)
    assert body["profile"] == "fast"
    assert body["scores"] == pytest.approx(expected.scores, rel=1e-12)
    assert body["composite"] == pytest.approx(expected.composite, rel=1e-12)
    assert body["level"] == expected.level
    assert body["reference"] == "kodak1.png" and body["distorted"] == "kodak1.jpg"
    assert body["reference_bytes"] == len(images["png1"]) and body["distorted_bytes"] == len(images["jpg1"])
    assert body["bits_per_pixel"] == pytest.approx(len(images["jpg1"]) * 8 / (160 * 120))
    assert (body["width"], body["height"]) == (160, 120)


def test_single_default_profile(client: TestClient, images: dict[str, bytes]) -> None:
    response = client.post("/evaluate/single", files=_pair(images), data={"profile": "default"})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = _expected("default", images)
    assert list(body["scores"]) == ["ssimulacra2", "ms_ssim", "ssim", "psnr"]
    assert body["scores"] == pytest.approx(expected.scores, rel=1e-9)
    assert body["composite"] == pytest.approx(expected.composite, rel=1e-9)
    assert body["weights"] == pytest.approx({"ssimulacra2": 0.55, "ms_ssim": 0.2, "ssim": 0.15, "psnr": 0.1})


def test_single_metrics_selection(client: TestClient, images: dict[str, bytes]) -> None:
    only = client.post("/evaluate/single?metrics=ssimulacra2,ssim", files=_pair(images)).json()
    expected = _expected(None, images, metrics=["ssimulacra2", "ssim"])
    assert list(only["scores"]) == ["ssimulacra2", "ssim"] and only["profile"] == "custom"
    assert only["composite"] == pytest.approx(expected.composite, rel=1e-9)
    assert only["weights"] == {"ssimulacra2": 0.5, "ssim": 0.5}
    both = client.post("/evaluate/single?profile=fast", files=_pair(images), data={"metrics": "ssimulacra2"}).json()
    assert set(both["scores"]) == {"ssim", "psnr", "ssimulacra2"}
    assert both["composite"] == pytest.approx(_expected("fast", images).composite, rel=1e-12)


def test_identical_images_give_json_safe_infinity(client: TestClient, images: dict[str, bytes]) -> None:
    same = {"original": ("a.png", images["png0"]), "processed": ("b.png", images["png0"])}
    body = client.post("/evaluate/single", files=same).json()
    assert body["scores"]["psnr"] == "inf" and body["scores"]["ssim"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("case", "status", "kind"),
    [
        ("not_an_image", 422, "invalid_image"),
        ("truncated", 422, "invalid_image"),
        ("empty", 422, "invalid_image"),
        ("a_path", 422, "invalid_image"),
        ("too_many_pixels", 413, "too_many_pixels"),
        ("size_mismatch", 422, "size_mismatch"),
        ("file_too_large", 413, "too_large"),
        ("unknown_profile", 422, "unknown_name"),
        ("profile_not_enabled", 422, "unknown_name"),
        ("profile_path", 422, "unknown_name"),
        ("unknown_metric", 422, "unknown_name"),
        ("metric_not_loaded", 422, "unknown_name"),
        ("conflicting_profile", 422, "invalid_parameter"),
        ("missing_field", 422, "missing_field"),
        ("text_instead_of_file", 422, "invalid_image"),
        ("unexpected_field", 422, "unexpected_field"),
        ("duplicate_field", 422, "unexpected_field"),
        ("no_body", 422, "missing_field"),
        ("json_body", 415, "unsupported_media_type"),
        ("no_boundary", 400, "bad_request"),
        ("broken_multipart", 400, "bad_request"),
        ("field_too_large", 413, "too_large"),
    ],
)
def test_single_errors(client: TestClient, images: dict[str, bytes], case: str, status: int, kind: str) -> None:
    png, jpg = images["png0"], images["jpg0"]
    files: Any = _pair(images)
    data: dict[str, str] = {}
    url, kwargs = "/evaluate/single", {}
    if case == "not_an_image":
        files["processed"] = ("notes.txt", b"these are not the pixels you are looking for")
    elif case == "truncated":
        files["processed"] = ("cut.png", png[: len(png) // 2])
    elif case == "empty":
        files["original"] = ("empty.png", b"")
    elif case == "a_path":  # a path is just bytes here: nothing on the server is opened
        files["original"] = ("/etc/passwd", b"/etc/passwd")
    elif case == "too_many_pixels":
        files["original"] = ("big.png", images["huge"])
    elif case == "size_mismatch":
        files["processed"] = ("tall.png", images["tall"])
    elif case == "file_too_large":
        files["processed"] = ("big.jpg", jpg + b"\0" * MIB)
    elif case == "unknown_profile":
        url += "?profile=nope"
    elif case == "profile_not_enabled":
        url += "?profile=seed"
    elif case == "profile_path":
        url += "?profile=../../etc/passwd"
    elif case == "unknown_metric":
        url += "?metrics=ssim,sharpness"
    elif case == "metric_not_loaded":
        url += "?metrics=lpips"
    elif case == "conflicting_profile":
        url += "?profile=fast"
        data["profile"] = "default"
    elif case == "missing_field":
        del files["processed"]
    elif case == "text_instead_of_file":
        del files["processed"]
        data["processed"] = "kodak0.jpg"
    elif case == "unexpected_field":
        files["reference"] = ("x.png", png)
    elif case == "field_too_large":
        data["metrics"] = "ssim," * 20000
    if case == "duplicate_field":
        files = [("original", ("a.png", png)), ("original", ("b.png", png)), ("processed", ("c.jpg", jpg))]
    if case == "no_body":
        response = client.post(url)
    elif case == "json_body":
        response = client.post(url, json={"original": "a.png"})
    elif case == "no_boundary":
        response = client.post(url, content=b"x", headers={"Content-Type": "multipart/form-data"})
    elif case == "broken_multipart":
        response = client.post(
            url,
            content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    else:
        response = client.post(url, files=files, data=data, **kwargs)
    error = _error(response, status, kind)
    if kind == "too_large":
        assert error["limit"] in (MIB, 64 * KIB)
    if case == "profile_not_enabled":
        assert error["known"] == ["fast", "default"]
    if case == "text_instead_of_file":  # a file field is a file by its name: its text is read as the image
        assert "holds 10 bytes of text, not an image file (curl: -F processed=@PATH)" in error["message"]


def test_request_total_limit(client: TestClient, images: dict[str, bytes]) -> None:
    """Five files under the per-file limit still exceed the 4 MiB request limit."""
    filler = images["png0"] + b"\0" * (900 * KIB)
    files = {f"{side}_{i}": (f"{i}.png", filler) for i in range(3) for side in ("original", "processed")}
    error = _error(client.post("/evaluate/batch", files=files), 413, "too_large")
    assert error["limit"] == 4 * MIB and "request body" in error["message"]


def test_unknown_route_and_method(client: TestClient) -> None:
    _error(client.get("/evaluate"), 404, "not_found")
    _error(client.get("/evaluate/single"), 405, "method_not_allowed")


# --------------------------------------------------------------------------------------------------
# /evaluate/batch


def test_batch_explicit_pairs(client: TestClient, images: dict[str, bytes]) -> None:
    files = {
        "original_0": ("a.png", images["png0"]),
        "processed_0": ("a.jpg", images["jpg0"]),
        "original_1": ("b.png", images["png1"]),
        "processed_1": ("b.jpg", images["jpg1"]),
        "original_2": ("c.png", images["png2"]),
        "processed_2": ("c.jpg", b"GIF89a broken"),
        "original_7": ("lonely.png", images["png2"]),
        "original_3": ("d.png", images["png2"]),
        "processed_3": ("d.png", images["tall"]),
    }
    response = client.post("/evaluate/batch", files=files, params={"metrics": "ssim,psnr"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"]["count"] == 2 and body["summary"]["failed"] == 2 and body["summary"]["unpaired"] == 1
    assert [p["key"] for p in body["pairs"]] == ["0", "1"]
    for pair, i in zip(body["pairs"], (0, 1)):
        assert pair["scores"] == pytest.approx(_expected(None, images, i, metrics=["ssim", "psnr"]).scores, rel=1e-12)
    issues = {i["path"]: i for i in body["issues"]}
    assert issues["c.jpg"]["kind"] == "failed" and issues["c.jpg"]["type"] == "invalid_image"
    assert issues["d.png"]["type"] == "size_mismatch"
    assert issues["lonely.png"]["kind"] == "unpaired" and "processed_7" in issues["lonely.png"]["reason"]
    assert body["summary"]["metrics"]["composite"]["mean"] == pytest.approx(
        sum(p["composite"] for p in body["pairs"]) / 2
    )
    assert body["evaluator"]["metrics"] == ["ssim", "psnr"]


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _lie_about_size(data: bytes, name: str, claimed: int) -> bytes:
    """Rewrite the uncompressed size that the local header and central directory give for ``name``."""
    raw = bytearray(data)
    encoded = name.encode()
    local = raw.find(b"PK\x03\x04")
    while local != -1:
        name_len = struct.unpack_from("<H", raw, local + 26)[0]
        if bytes(raw[local + 30 : local + 30 + name_len]) == encoded:
            struct.pack_into("<I", raw, local + 22, claimed)
        local = raw.find(b"PK\x03\x04", local + 4)
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", raw, central + 28)[0]
        if bytes(raw[central + 46 : central + 46 + name_len]) == encoded:
            struct.pack_into("<I", raw, central + 24, claimed)
        central = raw.find(b"PK\x01\x02", central + 4)
    return bytes(raw)


def test_batch_zip_pairs_and_hostile_entries(client: TestClient, images: dict[str, bytes]) -> None:
    archive = _zip(
        {
            "set/original/city/a.png": images["png0"],
            "set/processed/city/a.jpg": images["jpg0"],
            "set/original/b.png": images["png1"],
            "set/processed/b.webp": images["jpg1"],  # the extension does not matter, the content does
            "set/original/ambiguous.png": images["png2"],
            "set/original/ambiguous.jpg": images["jpg2"],
            "set/processed/ambiguous.jpg": images["jpg2"],
            "set/original/lonely.png": images["png2"],
            "set/../../etc/passwd.png": images["png2"],
            "/abs/original/x.png": images["png2"],
            "set/original/bomb.png": b"\0" * (700 * KIB),
            "set/processed/bomb.png": b"\0" * (700 * KIB),
            "set/original/liar.png": images["png2"],
            "set/processed/liar.png": images["jpg2"],
            "set/original/notes.txt": b"skipped: not an image extension",
            "README.md": b"skipped too, and it does not stop set/ from being the enclosing folder",
            "set/.hidden/original/z.png": images["png2"],
            "__MACOSX/set/original/._a.png": b"resource fork",
        }
    )
    archive = _lie_about_size(archive, "set/processed/liar.png", 100)
    response = client.post("/evaluate/batch?profile=fast", files={"archive": ("batch.zip", archive)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(p["key"] for p in body["pairs"]) == ["b", "city/a"]
    for pair in body["pairs"]:
        i = 0 if pair["key"] == "city/a" else 1
        assert pair["scores"] == pytest.approx(_expected("fast", images, i).scores, rel=1e-12)
    issues = {i["path"]: i for i in body["issues"]}
    assert issues["set/../../etc/passwd.png"]["type"] == "unsafe_path"
    assert issues["/abs/original/x.png"]["type"] == "unsafe_path"
    assert "ambiguous" in issues["set/original/ambiguous.png"]["reason"]
    assert issues["set/original/lonely.png"]["kind"] == "unpaired"
    assert "zip bomb" in issues["set/original/bomb.png"]["reason"]
    assert issues["set/processed/liar.png"]["type"] == "invalid_archive"  # its CRC fails: sizes are not trusted
    assert not any("notes.txt" in p or "__MACOSX" in p or ".hidden" in p for p in issues)


def test_batch_zip_limits(client: TestClient, images: dict[str, bytes]) -> None:
    _error(
        client.post("/evaluate/batch", files={"archive": ("x.zip", b"PK\x03\x04 not really")}), 422, "invalid_archive"
    )
    many = _zip({f"original/{i}.png": b"x" for i in range(50)})
    _error(client.post("/evaluate/batch", files={"archive": ("x.zip", many)}), 413, "too_many_entries")
    pairs = {f"{side}/{i}.png": images["png0"] for i in range(7) for side in ("original", "processed")}
    _error(client.post("/evaluate/batch", files={"archive": ("x.zip", _zip(pairs))}), 413, "too_many_pairs")
    stored = _zip(
        {"original/a.png": images["png0"] + b"\0" * MIB, "processed/a.png": images["jpg0"]},
        compression=zipfile.ZIP_STORED,
    )
    _error(client.post("/evaluate/batch", files={"archive": ("x.zip", stored)}), 413, "too_large")  # the upload


def test_batch_request_errors(client: TestClient, images: dict[str, bytes]) -> None:
    _error(client.post("/evaluate/batch", data={"profile": "fast"}), 422, "missing_field")
    both = {"archive": ("x.zip", _zip({})), "original_0": ("a.png", images["png0"])}
    _error(client.post("/evaluate/batch", files=both), 422, "unexpected_field")
    _error(client.post("/evaluate/batch", files={"left_0": ("a.png", images["png0"])}), 422, "unexpected_field")
    many = {f"{side}_{i}": (f"{i}.png", images["png0"]) for i in range(7) for side in ("original", "processed")}
    _error(client.post("/evaluate/batch", files=many), 413, "too_many_pairs")
    _error(client.post("/evaluate/batch?profile=perceptual", files=_pair(images)), 422, "unknown_name")


# --------------------------------------------------------------------------------------------------
# /compress


def test_compress_json(client: TestClient, images: dict[str, bytes]) -> None:
    response = client.post(
        "/compress",
        files={"image": ("kodak.png", images["png0"])},
        data={"target": "ssim:0.95", "formats": "jpeg,webp"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["met"] is True and body["target"] == "ssim:0.95" and body["format"] in ("jpeg", "webp")
    data = base64.b64decode(body["data_base64"])
    assert len(data) == body["bytes"] and body["original_bytes"] == len(images["png0"])
    assert body["media_type"] == f"image/{body['format']}"
    scored = Evaluator(metrics=["ssim"]).evaluate(load_image(images["png0"]), load_image(data))
    assert scored.scores["ssim"] >= 0.95
    assert scored.scores["ssim"] == pytest.approx(body["quality"], abs=1e-9)
    assert body["evaluator"]["profile"] == "fast"
    assert sum(body["probes"].values()) <= 2 * 8  # capped by compress_max_probes


def test_compress_image_output(client: TestClient, images: dict[str, bytes]) -> None:
    response = client.post(
        "/compress?target=ssimulacra2:70&formats=jpeg&output=image&max_probes=50",
        files={"image": ("my photo.png", images["png1"])},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["content-disposition"] == 'inline; filename="my_photo.jpg"'
    assert response.headers["x-optimizer-met"] == "true" and response.headers["x-optimizer-format"] == "jpeg"
    image = load_image(response.content)
    assert image.size == (160, 120)
    quality = float(response.headers["x-optimizer-quality"])
    scored = Evaluator(metrics=["ssimulacra2"]).evaluate(load_image(images["png1"]), image)
    assert scored.scores["ssimulacra2"] == pytest.approx(quality, abs=1e-6) and quality >= 70


def test_compress_keeps_the_metadata_asked_for(client: TestClient, images: dict[str, bytes]) -> None:
    from PIL import Image as PILImage

    source = PILImage.open(io.BytesIO(images["png0"])).convert("RGB")
    exif = PILImage.Exif()
    exif[0x8298] = "(c) A. Photographer"  # Copyright
    exif[0x010F] = "CameraMaker"  # Make
    buffer = io.BytesIO()
    source.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    jpeg = buffer.getvalue()

    def written_exif(metadata: str) -> dict[int, Any]:
        response = client.post(
            f"/compress?target=ssim:0.9&formats=jpeg&output=image&metadata={metadata}",
            files={"image": ("shot.jpg", jpeg)},
        )
        assert response.status_code == 200, response.text
        return dict(PILImage.open(io.BytesIO(response.content)).getexif())

    web = written_exif("web")  # the default policy: rights kept, camera data dropped
    assert web.get(0x8298) == "(c) A. Photographer" and 0x010F not in web
    assert written_exif("all").get(0x010F) == "CameraMaker"
    assert not written_exif("none")
    bad = client.post("/compress?target=ssim:0.9&metadata=gps", files={"image": ("shot.jpg", jpeg)})
    assert bad.status_code == 422 and "metadata" in bad.text


@pytest.mark.parametrize(
    ("query", "status", "kind"),
    [
        ("", 422, "missing_field"),
        ("?target=ssim", 422, "invalid_parameter"),
        ("?target=ssim:2x", 422, "invalid_parameter"),
        ("?target=sharpness:3", 422, "unknown_name"),
        ("?target=lpips:0.1", 422, "unknown_name"),
        ("?target=ssim:0.9&formats=gif", 422, "unknown_name"),
        ("?target=ssim:0.9&formats=png", 422, "invalid_parameter"),
        ("?target=ssim:0.9&max_probes=0", 422, "validation_error"),
        ("?target=ssim:0.9&output=zip", 422, "validation_error"),
        ("?target=ssim:0.9&profile=seed", 422, "unknown_name"),
    ],
)
def test_compress_errors(client: TestClient, images: dict[str, bytes], query: str, status: int, kind: str) -> None:
    _error(client.post("/compress" + query, files={"image": ("a.png", images["png0"])}), status, kind)


def test_compress_metric_target_ignores_a_profile_without_the_metric(
    client: TestClient, images: dict[str, bytes]
) -> None:
    """``profile`` is for composite targets: a metric target it does not compute uses a profile that does."""
    response = client.post(
        "/compress?target=ssimulacra2:60&formats=jpeg&profile=fast&max_probes=3",
        files={"image": ("a.png", images["png0"])},
    )
    assert response.status_code == 200, response.text
    assert response.json()["evaluator"]["profile"] == "default"
    same = client.post(
        "/compress?target=ssim:0.9&formats=jpeg&profile=default&max_probes=3",
        files={"image": ("a.png", images["png0"])},
    )
    assert same.json()["evaluator"]["profile"] == "default"


def test_names_are_case_insensitive_and_lists_strict(client: TestClient, images: dict[str, bytes]) -> None:
    body = client.post("/evaluate/single?metrics= SSIM , Psnr", files=_pair(images)).json()
    assert list(body["scores"]) == ["ssim", "psnr"]
    _error(client.post("/evaluate/single?metrics=ssim,", files=_pair(images)), 422, "invalid_parameter")
    _error(client.post("/evaluate/single?profile=", files=_pair(images)), 422, "unknown_name")
    many = ",".join(["jpeg"] * 9)
    _error(
        client.post(f"/compress?target=ssim:0.9&formats={many}", files={"image": ("a.png", images["png0"])}),
        422,
        "invalid_parameter",
    )


def test_compress_form_fields(client: TestClient, images: dict[str, bytes]) -> None:
    fields = {"target": "psnr:30", "formats": "jpeg", "max_probes": "2", "profile": "fast"}
    body = client.post("/compress", files={"image": ("a.png", images["png2"])}, data=fields).json()
    assert body["probes"]["jpeg"] <= 2 and body["target"] == "psnr:30"
    _error(
        client.post("/compress", files={"image": ("a.png", images["png2"])}, data={**fields, "max_probes": "many"}),
        422,
        "invalid_parameter",
    )
    _error(
        client.post("/compress", files={"image": ("a.png", images["png2"]), "extra": ("b.png", b"x")}, data=fields),
        422,
        "unexpected_field",
    )


def test_compress_bad_image(client: TestClient, images: dict[str, bytes]) -> None:
    _error(
        client.post("/compress?target=ssim:0.9", files={"image": ("a.png", b"\x89PNG\r\n\x1a\n")}), 422, "invalid_image"
    )
    _error(client.post("/compress?target=ssim:0.9", files={"image": ("a.png", images["huge"])}), 413, "too_many_pixels")
    _error(client.post("/compress?target=ssim:0.9", data={"image": "a.png"}), 422, "missing_field")


# --------------------------------------------------------------------------------------------------
# /presets


def test_presets(client: TestClient) -> None:
    listing = client.get("/presets").json()["presets"]
    assert [p["name"] for p in listing] == ["web"]
    assert listing[0]["default_tier"] == "target" and listing[0]["tiers"][0]["codec"] == "jpeg"
    assert listing[0]["fingerprint"] == _preset().fingerprint()
    detail = client.get("/presets/web")
    assert detail.status_code == 200
    assert Preset.from_dict(detail.json()).same_content(_preset())
    error = _error(client.get("/presets/nope"), 404, "not_found")
    assert error["known"] == ["web"]
    _error(client.get("/presets/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")


# --------------------------------------------------------------------------------------------------
# The pool: queue bound, Retry-After, timeouts


@pytest.fixture()
def gated(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make every single evaluation wait for the returned event (to fill the pool on purpose)."""
    gate = threading.Event()
    real = evaluate_routes.evaluate_single

    def slow(*args: Any) -> Any:
        gate.wait(30)
        return real(*args)

    monkeypatch.setattr(evaluate_routes, "evaluate_single", slow)
    return gate


def test_full_queue_answers_503_with_retry_after(images: dict[str, bytes], gated: threading.Event) -> None:
    app = create_app(ServiceConfig(profiles=("fast",), pool_size=1, max_queue=1, warm_up=False))
    with TestClient(app) as client:
        results: list[Any] = []
        workers = [
            threading.Thread(target=lambda: results.append(client.post("/evaluate/single", files=_pair(images))))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        pool = app.state.service.pool
        deadline = time.monotonic() + 20
        while pool.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.pending == 2  # one running, one waiting: the bound
        refused = client.post("/evaluate/single", files=_pair(images))
        error = _error(refused, 503, "overloaded")
        assert int(refused.headers["Retry-After"]) >= 1 and error["retry_after"] >= 1
        assert client.get("/ready").json()["pool"] == {"workers": 1, "max_queue": 1, "running": 1, "waiting": 1}
        gated.set()
        for worker in workers:
            worker.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert client.post("/evaluate/single", files=_pair(images)).status_code == 200
        assert 'optimizer_pool_rejected_total{reason="overloaded"} 1.0' in client.get("/metrics").text


def test_timeout_answers_503(images: dict[str, bytes], gated: threading.Event) -> None:
    app = create_app(ServiceConfig(profiles=("fast",), pool_size=1, max_queue=2, request_timeout=0.3, warm_up=False))
    with TestClient(app) as client:
        response = client.post("/evaluate/single", files=_pair(images))
        error = _error(response, 503, "timeout")
        assert error["timeout"] == 0.3 and int(response.headers["Retry-After"]) >= 1
        gated.set()


def test_batch_past_its_deadline_lists_the_rest(images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    real = jobs_module._score

    def slow(*args: Any) -> Any:
        time.sleep(0.6)
        return real(*args)

    monkeypatch.setattr(jobs_module, "_score", slow)
    app = create_app(ServiceConfig(profiles=("fast",), pool_size=1, request_timeout=1.0, warm_up=False))
    files = {
        f"{side}_{i}": (f"{i}.png", images["png0"] if side == "original" else images["jpg0"])
        for i in range(4)
        for side in ("original", "processed")
    }
    with TestClient(app) as client:
        body = client.post("/evaluate/batch", files=files).json()
    assert 1 <= body["summary"]["count"] < 4
    timed_out = [i for i in body["issues"] if i["type"] == "timeout"]
    assert len(timed_out) == 4 - body["summary"]["count"] and all(i["kind"] == "failed" for i in timed_out)


# --------------------------------------------------------------------------------------------------
# Start-up


def test_missing_weights_stop_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile needing absent weights fails at start-up, never downloading, even if downloads are on."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("OPTIMIZER_ALLOW_DOWNLOAD", "1")
    app = create_app(ServiceConfig(profiles=("default", "seed"), pool_size=1))
    with pytest.raises(WeightsNotFoundError, match="downloads are disabled"):
        with TestClient(app):
            pass
    assert app.state.service.ready is False and "WeightsNotFoundError" in app.state.service.error


class _WatchedEnviron(dict[str, str]):
    """A stand-in for ``os.environ`` that records every write."""

    def __init__(self, base: Any) -> None:
        super().__init__(base)
        self.writes: list[str] = []

    def __setitem__(self, key: str, value: str) -> None:
        self.writes.append(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.append(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.writes.append(key)
        return super().pop(key, *default)


def test_start_up_leaves_the_environment_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads are refused through a parameter, not by setting OPTIMIZER_ALLOW_DOWNLOAD for the process."""
    import os

    from optimizer.metrics import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("OPTIMIZER_ALLOW_DOWNLOAD", "1")
    watched = _WatchedEnviron(os.environ)
    monkeypatch.setattr(os, "environ", watched)
    fetched: list[str] = []
    monkeypatch.setattr(weights, "_download", lambda w, path, timeout: fetched.append(w.name))
    app = create_app(ServiceConfig(profiles=("fast", "seed"), pool_size=1))
    with pytest.raises(WeightsNotFoundError, match="allow_download=False"):
        with TestClient(app):
            pass
    assert fetched == [] and watched.writes == []


def test_download_parameter_overrides_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optimizer.metrics import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fetched: list[str] = []

    def fake_download(w: Any, path: Path, timeout: float) -> Path:
        fetched.append(w.name)
        return path

    monkeypatch.setattr(weights, "_download", fake_download)
    monkeypatch.setattr(weights, "_failed", {})
    monkeypatch.setenv("OPTIMIZER_ALLOW_DOWNLOAD", "1")
    with pytest.raises(WeightsNotFoundError, match="allow_download=False"):
        weights.require_weights("squeezenet1_1", allow_download=False)
    assert fetched == []
    monkeypatch.setenv("OPTIMIZER_ALLOW_DOWNLOAD", "0")
    with pytest.raises(WeightsNotFoundError, match="OPTIMIZER_ALLOW_DOWNLOAD=0"):
        weights.require_weights("squeezenet1_1")
    weights.require_weights("squeezenet1_1", allow_download=True)
    assert fetched == ["squeezenet1_1"]


def test_bad_preset_stops_start_up(tmp_path: Path) -> None:
    from optimizer.errors import PresetError

    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "something else"}')
    with pytest.raises(PresetError, match="broken.json"):
        with TestClient(create_app(ServiceConfig(profiles=("fast",), presets=(broken,), pool_size=1))):
            pass


# --------------------------------------------------------------------------------------------------
# Config and CLI


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"profiles": ()}, "at least one"),
        ({"profiles": ("fast", "fast")}, "must not repeat"),
        ({"profiles": ("nope",)}, "unknown profile"),
        ({"max_file_bytes": 0}, "max_file_bytes"),
        ({"max_pixels": -5}, "max_pixels"),
        ({"max_request_bytes": 10, "max_file_bytes": 10}, "two files"),
        ({"max_queue": -1}, "max_queue"),
        ({"request_timeout": float("nan")}, "request_timeout"),
        ({"pool_size": True}, "pool_size"),
        ({"presets": ("a/web.json", "b/web.json")}, "unique"),
    ],
)
def test_config_validation(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServiceConfig(**values)


def test_config_round_trip_and_unknown_keys() -> None:
    config = ServiceConfig(profiles=("fast",), presets=(Path("p/web.json"),), max_pixels=1234, pool_size=3)
    assert ServiceConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="unknown key"):
        ServiceConfig.from_mapping({"max_pixel": 5})
    assert ServiceConfig().default_profile == "default" and ServiceConfig().max_file_bytes == 25 * MIB


def test_serve_config_file_and_flags(tmp_path: Path) -> None:
    from optimizer.cli.serve_cmd import build_config

    path = tmp_path / "service.toml"
    path.write_text('[service]\nprofiles = ["fast"]\nmax_pixels = 1000000\nmax_queue = 3\n')
    config = build_config(path, {"max_queue": 7, "pool_size": None})
    assert config.profiles == ("fast",) and config.max_pixels == 1_000_000 and config.max_queue == 7
    path.write_text("[service]\nmax_pixel = 5\n")
    with pytest.raises(ConfigError, match="service.toml: unknown key"):
        build_config(path, {})


def test_serve_cli_errors_before_listening(tmp_path: Path) -> None:
    assert main(["serve", "--max-upload-mb", "0"]) == EXIT_USAGE
    assert main(["serve", "--profile", "nope"]) == EXIT_USAGE
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["serve", "--presets", str(broken)]) == EXIT_INPUT
