"""Layers of our own, where torch's own is measurably slow for our shapes on CPU."""

from __future__ import annotations

import torch
from torch import nn


class FastDropout(nn.Module):
    """Dropout with the usual maths — each value kept with probability ``1 - p`` and scaled by
    ``1 / (1 - p)`` — but a cheaper mask on CPU.

    Why: ``nn.Dropout`` draws one random number per activation; on 2 CPU cores that made the
    three dropouts of ``seed-cnn`` the most expensive part of the forward pass (17 ms per call,
    twice a convolution). Here every 64-bit random draw yields four 16-bit uniforms, which
    are compared with ``p`` (resolution 2⁻¹⁶; exact for p = 0.25 or 0.5): about 8× faster.
    Identity in eval mode; draws from torch's global generator, so seeding works as usual.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability should be in [0, 1), got {p}")
        self.p = p
        # int16 uniforms span [-32768, 32767]: keep the values at or above this threshold
        self._threshold = round(p * 65536) - 32768

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        count = x.numel()
        words = torch.randint(
            -(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=x.device
        )
        uniforms = words.view(torch.int16)[:count]
        keep = (uniforms >= self._threshold).view(x.shape) if x.is_contiguous() else None
        if keep is None:  # channels_last: build the mask in the tensor's own memory order
            keep = (uniforms >= self._threshold).view(x.permute(0, 2, 3, 1).shape)
            keep = keep.permute(0, 3, 1, 2)
        return x.mul(keep).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
