"""The codec registry: ``name -> Codec``.

Every format module registers one instance here. Lookups accept a codec's name or alias in any case and
tell apart a name that does not exist (:class:`UnknownNameError`, listing the known ones) from a codec whose
library is missing (:class:`CodecUnavailableError`, with the install hint).
"""

from __future__ import annotations

from ..errors import UnknownNameError
from .base import Codec

__all__ = ["available_codecs", "codec_for_extension", "codec_names", "get_codec", "register_codec"]

_REGISTRY: dict[str, Codec] = {}


def register_codec(codec: Codec, *, replace: bool = False) -> Codec:
    """Add a codec instance (``replace=True`` to override an existing name); returns it."""
    key = codec.name.lower()
    if key in _REGISTRY and not replace:
        raise ValueError(f"codec {codec.name!r} is already registered; pass replace=True to override it")
    _REGISTRY[key] = codec
    return codec


def codec_names(available_only: bool = False) -> list[str]:
    """Registered codec names, in registration order.

    Args:
        available_only: Only those whose library is installed.

    Returns:
        The names (``jpeg``, ``webp``, ``avif``, ``jxl``, ``png``).
    """
    return [name for name, codec in _REGISTRY.items() if not available_only or codec.available()]


def available_codecs() -> list[Codec]:
    """Codecs whose libraries are installed."""
    return [codec for codec in _REGISTRY.values() if codec.available()]


def get_codec(name: str, *, require_available: bool = True) -> Codec:
    """The codec called ``name`` (or one of its aliases, any case).

    Args:
        name: A codec name or alias (``jpg`` for ``jpeg``).
        require_available: Raise :class:`CodecUnavailableError` when its library is missing (pass
            ``False`` to describe it anyway).

    Returns:
        The :class:`Codec`.

    Raises:
        UnknownNameError: No codec has that name (the message lists them).
    """
    key = str(name).strip().lower()
    codec = _REGISTRY.get(key) or next((c for c in _REGISTRY.values() if key in c.aliases), None)
    if codec is None:
        raise UnknownNameError("codec", str(name), list(_REGISTRY))
    if require_available:
        codec.require_available()
    return codec


def codec_for_extension(ext: str, *, require_available: bool = True) -> Codec:
    """The codec that writes files with extension ``ext`` (``".jpg"``, ``"jpg"`` or ``"photo.JPG"``)."""
    text = str(ext).strip().lower()
    suffix = "." + text.rsplit(".", 1)[-1] if text else text
    for codec in _REGISTRY.values():
        if suffix in (codec.extension, *codec.extensions):
            if require_available:
                codec.require_available()
            return codec
    known = sorted({e for c in _REGISTRY.values() for e in (c.extension, *c.extensions)})
    raise UnknownNameError("file extension", str(ext), known)
