"""Augmentation on batches of image tensors: random pad-and-crop and horizontal flips.

Applied per batch on whatever device the batch lives on (airbench style), with
the random numbers drawn from an explicit `torch.Generator`, so that a run is
reproducible and resumable from the generator's saved state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ckatlas.errors import UserInputError


@dataclass(frozen=True)
class Augmentation:
    """The augmentation that suits a dataset.

    Attributes:
        pad: pixels of padding on each side before a random crop back to the
            original size (He et al. 2016 use 4 on 32x32 CIFAR); 0 turns cropping off.
        flip: random horizontal flips with probability 1/2 (off where a mirror image
            is another class or no image at all, e.g. handwritten digits).
        pad_mode: "zeros" (the mean pixel of normalised images) or "reflect" (the
            image mirrored at its border, as the paper's code pads CIFAR).
    """

    pad: int = 0
    flip: bool = False
    pad_mode: str = "zeros"

    def __post_init__(self) -> None:
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise UserInputError(f"augmentation pad must be an integer >= 0, got {self.pad!r}")
        if self.pad_mode not in PAD_MODES:
            raise UserInputError(f"pad_mode must be one of {', '.join(PAD_MODES)}, got {self.pad_mode!r}")

    @property
    def active(self) -> bool:
        """True when the augmentation changes anything."""
        return self.pad > 0 or self.flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop_flip(x, self.pad, self.flip, generator, pad_mode=self.pad_mode)

    def to_dict(self) -> dict:
        out = {"pad": self.pad, "flip": self.flip}
        if self.pad_mode != "zeros":  # the old record for zero padding, so that old runs stay the same run
            out["pad_mode"] = self.pad_mode
        return out


PAD_MODES = ("zeros", "reflect")
NO_AUGMENTATION = Augmentation()


def random_crop_flip(
    x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator, *, pad_mode: str = "zeros"
) -> torch.Tensor:
    """Randomly crop (after padding) and horizontally flip each image of a batch.

    The random numbers (one offset pair, then one flip draw per image) are drawn on
    the generator's device and moved to `x`'s device, so a CPU generator can drive
    augmentation on any device.

    Args:
        x: images, (N, C, H, W).
        pad: padding on each side; each image is shifted by -pad..pad pixels
            in each direction (uniformly), the emptied border filled with zeros
            (the mean pixel, on normalised data) or, with ``pad_mode="reflect"``,
            with the image mirrored at its edge.
        flip: flip each image left-right with probability 1/2.
        generator: the source of randomness.

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    if x.ndim != 4:
        raise UserInputError(f"augmentation expects images of shape (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    gen_device = generator.device
    out = x
    if pad > 0:
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=gen_device).to(x.device)
        mode = "constant" if pad_mode == "zeros" else "reflect"
        padded = F.pad(x, (pad, pad, pad, pad), mode=mode)  # (N, C, H+2p, W+2p)
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
        cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (N, W)
        out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))  # (N, C, H, W+2p)
        out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))  # (N, C, H, W)
    if flip:
        flips = (torch.rand(n, generator=generator, device=gen_device) < 0.5).to(x.device)
        out = torch.where(flips[:, None, None, None], out.flip(3), out)
    return out if out is not x else x.clone()


__all__ = ["Augmentation", "NO_AUGMENTATION", "PAD_MODES", "random_crop_flip"]
