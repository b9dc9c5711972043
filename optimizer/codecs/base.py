"""The codec contract: a :class:`Param` per tunable setting and a :class:`Codec` per format.

A codec declares its parameter space as data (``params``), so the CLI can list it, the tuning layer can
build Optuna distributions from it and presets can record it, without any of them knowing the format.
Every public entry point validates parameters *before* touching the encoder: an out-of-range quality is an
:class:`~optimizer.errors.InvalidParameterError` that names the codec, the rule and the value, never a
library traceback.

Bit depth: every codec encodes 8 bits per channel (:meth:`optimizer.imageio.Image.to_uint8`, rounded to
nearest). A 16-bit source is quantised on the way in, so "lossless" means exact on that 8-bit quantisation.

Alpha: codecs with ``supports_alpha`` keep it (straight, not premultiplied); the others encode the image
composited over white, the background used for scoring (:meth:`optimizer.imageio.Image.for_scoring`).

Metadata: ``encode(..., metadata=POLICY)`` embeds what a :class:`~optimizer.imageio.MetadataPolicy` selects
from the source (EXIF, ICC, XMP; see :mod:`optimizer.imageio.metadata`). Without a policy nothing is
embedded (what tuning trials measure), except the ICC profile of pixels kept in one (``color="keep"``),
which is part of their colour. ``metadata_kinds`` lists what a codec can carry: a kind it cannot is
dropped with one :class:`~optimizer.imageio.MetadataWarning` per process, and pixels kept in a profile are
converted to sRGB for a codec that cannot carry ICC.
"""

from __future__ import annotations

import io
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import CodecUnavailableError, EncodeError, InvalidParameterError, OptimizerError
from ..imageio import Image, load_image
from ..imageio.metadata import Metadata, MetadataKind, MetadataPolicy, warn_once

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from PIL import Image as PILImage

__all__ = ["Codec", "Param", "PillowCodec"]

_KINDS = ("int", "float", "choice", "bool")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class Param:
    """One encoder setting: its type, its valid range or choices, and its default.

    ``low``/``high`` bound ``int`` and ``float`` params (inclusive); ``choices`` lists a ``choice`` param's
    values. ``step`` is the granularity a search space uses (Optuna's ``step``); values between steps are
    still valid encoder settings.
    """

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"param {self.name!r}: kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if self.kind in ("int", "float") and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"param {self.name!r}: numeric params need low <= high, got {self.low}..{self.high}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"param {self.name!r}: choice params need choices")
        self.validate(self.default)

    # -- validation -------------------------------------------------------------------------------

    def rule(self) -> str:
        """The validity rule in words, as error messages state it."""
        if self.kind == "int":
            return f"an integer in [{self.low:g}, {self.high:g}]"
        if self.kind == "float":
            return f"a number in [{self.low:g}, {self.high:g}]"
        if self.kind == "bool":
            return "true or false"
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def validate(self, value: Any, *, owner: str | None = None) -> Any:
        """Return ``value`` coerced to this param's type, or raise :class:`InvalidParameterError`.

        Numeric strings, integral floats (``60.0``) and ``"true"``/``"false"`` are accepted, because values
        arrive from command lines, forms and JSON; anything that would change meaning (``60.5`` for an
        integer, ``True`` for a number) is refused.
        """
        coerced = self._coerce(value)
        if coerced is None:
            prefix = f"{owner}: " if owner else ""
            raise InvalidParameterError(f"{prefix}{self.name} must be {self.rule()}, got {value!r}")
        return coerced

    def _coerce(self, value: Any) -> Any:
        if self.kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if isinstance(value, numbers.Integral) and int(value) in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            return None
        if self.kind == "choice":
            if isinstance(value, str):
                value = value.strip()
            return value if value in self.choices else None
        if isinstance(value, (bool, np.bool_)):
            return None
        number: float
        if isinstance(value, numbers.Real):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return None
        else:
            return None
        if not math.isfinite(number) or not (self.low <= number <= self.high):  # type: ignore[operator]
            return None
        if self.kind == "int":
            return int(number) if number.is_integer() else None
        return number

    # -- export -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for ``optimizer codecs --format json`` and presets)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "default": self.default}
        if self.kind in ("int", "float"):
            out.update(low=self.low, high=self.high)
            if self.step is not None:
                out["step"] = self.step
        if self.kind == "choice":
            out["choices"] = list(self.choices)
        out["description"] = self.description
        return out

    def to_distribution(
        self, low: float | None = None, high: float | None = None, choices: tuple[Any, ...] | list[Any] | None = None
    ) -> BaseDistribution:
        """An Optuna distribution over this param, optionally restricted to a sub-range or sub-set.

        A restriction that leaves the valid range (``low`` below the param's own ``low``, a choice the
        encoder does not accept, ``low > high``) raises :class:`InvalidParameterError`.
        """
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind in ("choice", "bool"):
            if low is not None or high is not None:
                raise InvalidParameterError(
                    f"{self.name} is a {self.kind} param; restrict it with choices, not low/high"
                )
            allowed = (False, True) if self.kind == "bool" else self.choices
            picked = tuple(self.validate(c) for c in choices) if choices is not None else allowed
            if not picked:
                raise InvalidParameterError(f"{self.name}: choices must not be empty")
            return CategoricalDistribution(tuple(dict.fromkeys(picked)))
        if choices is not None:
            raise InvalidParameterError(f"{self.name} is a numeric param; restrict it with low/high, not choices")
        lo = self.low if low is None else self.validate(low)
        hi = self.high if high is None else self.validate(high)
        if lo > hi:  # type: ignore[operator]
            raise InvalidParameterError(f"{self.name}: search range low must be <= high, got {lo:g} > {hi:g}")
        if self.kind == "int":
            return IntDistribution(int(lo), int(hi), step=int(self.step or 1))  # type: ignore[arg-type]
        return FloatDistribution(float(lo), float(hi), step=self.step)  # type: ignore[arg-type]


class Codec(ABC):
    """One image format behind one interface: parameter space, encode, decode, library versions.

    Instances are stateless; the registry holds one per format. ``quality_param`` names the single axis a
    per-image adaptive search scans (``quality_higher_is_better`` says which way is better quality);
    ``None`` means the codec has no such axis (PNG).
    """

    name: ClassVar[str]
    extension: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()
    aliases: ClassVar[tuple[str, ...]] = ()
    mime_type: ClassVar[str]
    lossless: ClassVar[bool] = False
    supports_alpha: ClassVar[bool] = False
    params: ClassVar[tuple[Param, ...]] = ()
    quality_param: ClassVar[str | None] = None
    quality_higher_is_better: ClassVar[bool] = True
    encoder_function: ClassVar[str] = "PIL.Image.Image.save"
    install_hint: ClassVar[str] = ""
    #: The metadata kinds this codec embeds (:meth:`_encode_tagged`); others are dropped with a warning.
    metadata_kinds: ClassVar[frozenset[MetadataKind]] = frozenset()

    # -- library ----------------------------------------------------------------------------------

    @abstractmethod
    def available(self) -> bool:
        """Whether the library behind this codec is installed and can encode."""

    @abstractmethod
    def library_versions(self) -> dict[str, str]:
        """Versions of the libraries that produce the bytes (recorded in presets)."""

    def require_available(self) -> None:
        """Raise :class:`CodecUnavailableError` with an install hint when the library is missing."""
        if not self.available():
            hint = f" ({self.install_hint})" if self.install_hint else ""
            raise CodecUnavailableError(f"codec {self.name!r} is not available in this environment{hint}")

    # -- parameters -------------------------------------------------------------------------------

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise InvalidParameterError(f"{self.name}: unknown parameter {name!r}; known: {self._known()}")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults filled in, every value checked and coerced; unknown names are refused."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidParameterError(
                f"{self.name}: params must be a mapping of name to value, got {type(params).__name__}"
            )
        by_name = {p.name: p for p in self.params}
        unknown = [k for k in params if k not in by_name]
        if unknown:
            raise InvalidParameterError(
                f"{self.name}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)}; known: {self._known()}"
            )
        return {
            p.name: p.validate(params[p.name], owner=self.name) if p.name in params else p.default for p in self.params
        }

    def _known(self) -> str:
        return ", ".join(sorted(p.name for p in self.params)) or "(none)"

    def is_lossless(self, params: Mapping[str, Any] | None = None) -> bool:
        """Whether these settings reproduce the 8-bit pixels exactly."""
        return self.lossless

    # -- encode / decode --------------------------------------------------------------------------

    def encode(
        self,
        image: Image,
        params: Mapping[str, Any] | None = None,
        *,
        threads: int | None = None,
        metadata: MetadataPolicy | str | None = None,
    ) -> bytes:
        """Encode ``image`` with ``params`` (validated first; defaults fill the rest).

        Args:
            image: The image (or any source :func:`~optimizer.imageio.load_image` reads).
            params: Encoder settings.
            threads: Caps the encoder's own threads for this call (None: the library's default, usually one
                per core); it changes speed, never the bytes. Worker processes sharing a machine pass their
                share.
            metadata: What to embed from the image's source (``"all"``, ``"none"``, ``"web"``, ``"exif,icc"``
                or a :class:`~optimizer.imageio.MetadataPolicy`); None embeds nothing but the profile of
                pixels kept in one (see the module docs).

        Returns:
            The encoded file.
        """
        checked = self.validate_params(params)
        self.require_available()
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InvalidParameterError(f"threads must be an integer >= 1, got {threads!r}")
        policy = None if metadata is None else MetadataPolicy.parse(metadata)
        image = image if isinstance(image, Image) else load_image(image)  # callers may pass any image source
        if image.profile is not None and "icc" not in self.metadata_kinds:
            warn_once(
                f"{self.name}:profile",
                f"{self.name} output cannot carry an ICC profile: pixels kept in their profile are converted to "
                "sRGB for it (colours outside sRGB are clipped)",
            )
            image = image.to_srgb()
        tags = policy.select(image) if policy is not None else Metadata(icc=image.profile)
        dropped = [kind for kind in tags.kinds if kind not in self.metadata_kinds]
        for kind in dropped:
            warn_once(f"{self.name}:{kind}", f"{self.name} output cannot carry {kind.upper()} metadata; not written")
        tags = tags.without(*dropped)
        try:
            return (
                self._encode(image, checked, threads)
                if tags.is_empty
                else self._encode_tagged(image, checked, threads, tags)
            )
        except OptimizerError:
            raise
        except Exception as exc:  # noqa: BLE001 - each library has its own error classes
            raise EncodeError(
                f"{self.name}: encoder failed on a {image.width}x{image.height} image with {checked}: {exc}"
            ) from exc

    @abstractmethod
    def _encode(self, image: Image, params: dict[str, Any], threads: int | None) -> bytes:
        """Encode with already validated params (``threads``: see :meth:`encode`)."""

    def _encode_tagged(self, image: Image, params: dict[str, Any], threads: int | None, tags: Metadata) -> bytes:
        """Encode embedding ``tags`` (only kinds in ``metadata_kinds``); codecs that declare any override it."""
        return self._encode(image, params, threads)

    def decode(self, data: bytes) -> Image:
        """Decode bytes produced by :meth:`encode` into the pixel contract.

        Pixels encoded in a profile stay in it (``color="keep"``): they are compared in sRGB
        (:meth:`Image.for_scoring`) without warning that sRGB cannot hold every colour.
        """
        return load_image(data, name=f"<{self.name} data>", color="keep")

    @abstractmethod
    def encoder_kwargs(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The exact keyword arguments of the library call (``encoder_function``) for these params."""

    def pil_save_kwargs(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The exact ``PIL.Image.Image.save()`` keyword arguments (``format`` included) for these params."""
        if self.encoder_function != "PIL.Image.Image.save":
            raise CodecUnavailableError(
                f"codec {self.name!r} does not encode through Pillow; use encoder_kwargs() with {self.encoder_function}"
            )
        return self.encoder_kwargs(params)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: format facts, parameter space, availability and library versions."""
        available = self.available()
        return {
            "name": self.name,
            "extension": self.extension,
            "mime_type": self.mime_type,
            "lossless": self.lossless,
            "supports_alpha": self.supports_alpha,
            "quality_param": self.quality_param,
            "quality_higher_is_better": self.quality_higher_is_better,
            "encoder_function": self.encoder_function,
            "params": [p.to_dict() for p in self.params],
            "available": available,
            "library_versions": self.library_versions() if available else {},
            "install_hint": None if available else self.install_hint,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class PillowCodec(Codec):
    """A codec encoded by ``PIL.Image.Image.save`` (JPEG, WebP, AVIF, PNG)."""

    pil_format: ClassVar[str]
    pil_feature: ClassVar[str]

    def available(self) -> bool:
        from PIL import Image as PILImage
        from PIL import features

        PILImage.init()
        return self.pil_format in PILImage.SAVE and bool(features.check(self.pil_feature))

    def library_versions(self) -> dict[str, str]:
        import PIL

        return {"pillow": PIL.__version__}

    def encoder_kwargs(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"format": self.pil_format, **self._save_options(self.validate_params(params))}

    @abstractmethod
    def _save_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """Pillow ``save()`` options (without ``format``) for validated params."""

    def _to_pil(self, image: Image) -> PILImage.Image:
        return image.to_pil(keep_alpha=self.supports_alpha)

    def _thread_options(self, threads: int) -> dict[str, Any]:
        """Pillow ``save()`` options that cap the encoder at ``threads`` threads (none: single-threaded)."""
        return {}

    def _metadata_options(self, tags: Metadata) -> dict[str, Any]:
        """Pillow ``save()`` options embedding ``tags`` (``exif``, ``icc_profile``, ``xmp``)."""
        options: dict[str, Any] = {}
        if tags.exif is not None:
            options["exif"] = b"Exif\x00\x00" + tags.exif
        if tags.icc is not None:
            options["icc_profile"] = tags.icc
        if tags.xmp is not None:
            options["xmp"] = tags.xmp
        return options

    def _encode(self, image: Image, params: dict[str, Any], threads: int | None) -> bytes:
        return self._encode_tagged(image, params, threads, Metadata())

    def _encode_tagged(self, image: Image, params: dict[str, Any], threads: int | None, tags: Metadata) -> bytes:
        buf = io.BytesIO()
        options = self._save_options(params)
        if threads is not None:
            options.update(self._thread_options(threads))
        options.update(self._metadata_options(tags))
        self._to_pil(image).save(buf, format=self.pil_format, **options)
        return buf.getvalue()


def _feature_version(feature: str) -> str | None:
    """A Pillow feature's library version, or ``None`` when Pillow does not report it."""
    from PIL import features

    try:
        return features.version(feature)
    except ValueError:
        return None
