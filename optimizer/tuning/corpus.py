"""The corpus a study tunes on: source images, optional target widths, and its fingerprint.

Each corpus item is one (image, width) pair. Without widths the reference is the original. With a target
width the reference is the original resized with the space's fixed high-quality filter, and each trial
resizes the original with its own filter and sharpening before encoding, so the study learns which filter
survives compression best.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..batch import iter_image_files
from ..errors import InvalidImageError, InvalidParameterError
from ..imageio import Image, ImageSource, load_image
from ..transforms import Transform
from .settings import transform_at_width

__all__ = ["Corpus", "CorpusItem", "demo_images", "expand_sources", "load_corpus"]


@dataclass(frozen=True)
class CorpusItem:
    """One image at one size: the encoder's input source and the scoring reference."""

    name: str
    source: Image
    reference: Image
    width: int | None = None

    @property
    def pixels(self) -> int:
        return self.reference.pixels

    def candidate_transform(self, trial_transform: Transform) -> Transform:
        """The trial's transform, resized to this item's width when it has one."""
        return transform_at_width(trial_transform, self.width)


@dataclass(frozen=True)
class Corpus:
    """The images of a study, as items, with a content fingerprint."""

    items: tuple[CorpusItem, ...]
    fingerprint: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def pixels(self) -> int:
        return sum(item.pixels for item in self.items)

    def describe(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "images": len(self.names),
            "items": len(self.items),
            "pixels": self.pixels,
            "names": list(self.names),
        }


def _pixel_digest(image: Image) -> bytes:
    h = hashlib.sha256()
    h.update(f"{image.width}x{image.height}".encode())
    h.update(image.to_uint8(keep_alpha=True).tobytes())
    return h.digest()


def load_corpus(
    images: Iterable[ImageSource | Image] | str | Path,
    *,
    widths: Sequence[int] = (),
    reference_transform: Any = None,
    names: Sequence[str] | None = None,
) -> Corpus:
    """Load images (paths, folders, bytes, arrays or :class:`Image`) into a corpus.

    ``reference_transform(width) -> Transform`` makes the reference at each width (the search space's
    fixed high-quality resize). Widths wider than an image are left out for it, as ``apply`` does (no
    upscaling); an image narrower than every width is one item at its own width. The fingerprint covers
    pixels, order-independent names and widths, so a worker that joins a study with other images is
    refused.
    """
    if isinstance(images, (str, Path)) and not Path(images).is_dir():
        raise InvalidParameterError(f"{images} is not a folder of images")
    sources = expand_sources(images)
    if not sources:
        raise InvalidParameterError("the corpus is empty: give at least one image")
    loaded: list[Image] = []
    labels: list[str] = []
    for i, src in enumerate(sources):
        label = names[i] if names is not None else (Path(src).name if isinstance(src, (str, Path)) else None)
        image = load_image(src, name=label)
        loaded.append(image)
        labels.append(label or (Path(image.source).name if image.source else f"image{i:03d}"))
    if len(set(labels)) != len(labels):
        dupes = sorted({n for n in labels if labels.count(n) > 1})
        raise InvalidImageError(f"corpus image names must be unique, duplicated: {', '.join(dupes)}")
    items: list[CorpusItem] = []
    if widths and reference_transform is None:
        raise InvalidParameterError("widths need a reference transform")
    for label, image in zip(labels, loaded):
        if not widths:
            items.append(CorpusItem(label, image, image, None))
            continue
        for width in [int(w) for w in widths if w <= image.width] or [image.width]:
            reference = reference_transform(width).apply(image)
            items.append(CorpusItem(f"{label}@{width}w", image, reference, width))
    digest = hashlib.sha256()
    for label, image in sorted(zip(labels, loaded), key=lambda pair: pair[0]):
        digest.update(label.encode())
        digest.update(_pixel_digest(image))
    digest.update(repr(sorted(int(w) for w in widths)).encode())
    return Corpus(tuple(items), digest.hexdigest()[:16], tuple(labels))


def expand_sources(images: Iterable[ImageSource | Image] | str | Path) -> list[ImageSource | Image]:
    """``images`` as a list in which every folder (given alone or among the items) is replaced by its
    image files (recursively, sorted); other items are kept as they are."""
    items = [images] if isinstance(images, (str, Path)) else list(images)
    out: list[ImageSource | Image] = []
    for item in items:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            out.extend(iter_image_files(Path(item)))
        else:
            out.append(item)
    return out


def demo_images(count: int = 6) -> list[Image]:
    """Photographs that ship inside scikit-image, so the demo runs offline on a fresh install."""
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera"]
    images: list[Image] = []
    for name in names[:count]:
        try:
            array = getattr(data, name)()
        except Exception:  # noqa: BLE001 - some data images need the optional pooch download; skip them
            continue
        if array.ndim == 2 or array.shape[-1] in (3, 4):
            images.append(load_image(array, name=name))
    if not images:
        raise InvalidImageError("no demo images could be loaded from scikit-image's data module")
    return images
