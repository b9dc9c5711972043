"""The tensor contract of the pixel metrics (PSNR, SSIM, MS-SSIM): checked once, in one place, so every
metric refuses a malformed or mismatched pair with the same error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ImageSizeMismatchError, InvalidImageError

if TYPE_CHECKING:
    import torch

__all__ = ["as_planes", "check_same_size"]


def _size_text(t: "torch.Tensor") -> str:
    return f"{t.shape[-1]}x{t.shape[-2]}"


def as_planes(image: "torch.Tensor", device: "torch.device", what: str) -> "torch.Tensor":
    """Check the metric tensor contract and return ``C x H x W`` float32 planes on ``device`` (a view of
    ``image`` when it already is one: the prepared state refers to the caller's tensor)."""
    import torch

    if not isinstance(image, torch.Tensor):
        raise InvalidImageError(f"{what} must be a torch tensor (1 x C x H x W), got {type(image).__name__}")
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] < 1:
        raise InvalidImageError(f"{what} must be a 1 x C x H x W tensor, got shape {tuple(image.shape)}")
    return image[0].to(device=device, dtype=torch.float32)


def check_same_size(reference: "torch.Tensor", distorted: "torch.Tensor") -> None:
    """Refuse planes of different sizes or channel counts (the pair cannot be compared)."""
    if reference.shape != distorted.shape:
        if reference.shape[-2:] != distorted.shape[-2:]:
            raise ImageSizeMismatchError(
                f"expected equal sizes, got {_size_text(reference)} and {_size_text(distorted)}"
            )
        raise ImageSizeMismatchError(
            f"expected equal channel counts, got {reference.shape[0]} and {distorted.shape[0]}"
        )
