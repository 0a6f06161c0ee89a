"""Small layers shared by the networks, written for fast inference on CPU in channels_last."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm(nn.Module):
    """Affine-free instance norm (eps 1e-5), as ``nn.InstanceNorm2d()``, with no state-dict entries.

    PyTorch's instance norm copies channels_last input to contiguous and back. Batch norm in
    training mode over one sample computes the same statistics and has a native channels_last
    kernel: about 3x faster on CPU here.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [
            F.batch_norm(x[i : i + 1], None, None, training=True, eps=self.eps) for i in range(x.shape[0])
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
