"""Encoding settings: one codec with its parameters plus the resize/sharpen transform before it.

This is what a trial samples, what a preset tier stores and what ``apply`` and ``compress`` run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..codecs import get_codec
from ..imageio import Image, MetadataPolicy
from ..transforms import Transform

__all__ = ["EncodedImage", "EncodingSettings", "baseline_settings", "transform_at_width"]


def transform_at_width(transform: Transform, width: int | None) -> Transform:
    """``transform`` resizing to ``width`` (aspect kept) instead of any size it had; ``None`` keeps it."""
    return transform if width is None else replace(transform, width=int(width), height=None, scale=None)


@dataclass(frozen=True)
class EncodedImage:
    """The bytes an encoder wrote, the decoded pixels and how long each step took."""

    data: bytes
    decoded: Image
    encode_seconds: float
    decode_seconds: float
    width: int
    height: int

    @property
    def bytes(self) -> int:
        return len(self.data)

    @property
    def bits_per_pixel(self) -> float:
        return len(self.data) * 8.0 / (self.width * self.height)


@dataclass(frozen=True)
class EncodingSettings:
    """A codec, validated parameters and a transform (resize filter, sharpening, optional width)."""

    codec: str
    params: Mapping[str, Any]
    transform: Transform = field(default_factory=Transform)

    def __post_init__(self) -> None:
        # Validate eagerly: bad settings fail when they are made, not in the middle of a batch.
        object.__setattr__(self, "params", get_codec(self.codec).validate_params(self.params))

    def prepare(self, image: Image) -> Image:
        """The pixels handed to the encoder (transform applied)."""
        return self.transform.apply(image)

    def encode(
        self,
        image: Image,
        *,
        transformed: bool = False,
        threads: int | None = None,
        metadata: MetadataPolicy | str | None = None,
    ) -> EncodedImage:
        """Transform (unless ``transformed``), encode and decode ``image``, timing both codec steps.

        Args:
            image: The source image (its ``metadata`` and ``profile`` travel through the transform).
            transformed: ``image`` is already transformed.
            threads: Caps the encoder's threads (:meth:`Codec.encode`).
            metadata: What to embed from the source (:class:`~optimizer.imageio.MetadataPolicy`); None
                embeds nothing, as study trials measure.

        Returns:
            The bytes, the decoded image and the timings.
        """
        codec = get_codec(self.codec)
        source = image if transformed else self.prepare(image)
        started = time.perf_counter()
        data = codec.encode(source, self.params, threads=threads, metadata=metadata)
        encoded = time.perf_counter()
        decoded = codec.decode(data)
        finished = time.perf_counter()
        return EncodedImage(data, decoded, encoded - started, finished - encoded, source.width, source.height)

    def with_param(self, name: str, value: Any) -> EncodingSettings:
        """These settings with the codec parameter ``name`` set to ``value`` (validated)."""
        return replace(self, params={**self.params, name: value})

    def at_width(self, width: int | None) -> EncodingSettings:
        """These settings resizing to ``width`` (aspect kept) before the sharpening and the encoder.

        How a study encodes a corpus item at a responsive width, and how ``apply`` and the exports run a
        tier at one; ``None`` keeps the settings as they are.
        """
        return self if width is None else replace(self, transform=transform_at_width(self.transform, width))

    @property
    def extension(self) -> str:
        return get_codec(self.codec).extension

    def to_dict(self) -> dict[str, Any]:
        return {"codec": self.codec, "params": dict(self.params), "transform": self.transform.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncodingSettings:
        return cls(
            codec=str(data["codec"]),
            params=dict(data.get("params", {})),
            transform=Transform.from_dict(data.get("transform") or {}),
        )

    def label(self) -> str:
        """A short human description: ``avif quality=52 speed=6, lanczos + sharpen 0.3``."""
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.codec} {params}".strip() + (
            f", {self.transform.label()}" if not self.transform.is_identity else ""
        )


def baseline_settings() -> EncodingSettings:
    """The encoding savings are stated against, everywhere (summary, report, presets): JPEG quality 85,
    4:2:0 chroma subsampling, optimised Huffman tables and progressive scans: what a cjpeg or mozjpeg user
    already gets."""
    return EncodingSettings("jpeg", {"quality": 85, "subsampling": "4:2:0", "progressive": True, "optimize": True})
