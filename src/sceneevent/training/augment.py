"""SpecAugment and MixUp on batch tensors, on the training device, one call per task sub-batch."""

from __future__ import annotations

import torch
from torch import nn


class SpecAugment(nn.Module):
    """Frequency and time masks (Park et al. 2019), drawn independently for every clip.

    Masked cells take the clip's mean log-mel value, so that a mask looks like nothing, not like
    silence. Does nothing in eval mode. Not torchaudio's `transforms.SpecAugment`: it draws its masks from the
    random stream in another order (and fills with a constant), so every reading made so far would change.

    Args:
        freq_masks, time_masks: masks per clip along each axis.
        freq_mask_width, time_mask_width: maximum mask width in bins / frames (width ~ U[0, max]).
    """

    def __init__(self, freq_masks: int = 2, freq_mask_width: int = 8, time_masks: int = 2, time_mask_width: int = 10):
        super().__init__()
        if min(freq_masks, freq_mask_width, time_masks, time_mask_width) < 0:
            raise ValueError("SpecAugment mask counts and widths must be >= 0")
        self.freq_masks, self.freq_mask_width = freq_masks, freq_mask_width
        self.time_masks, self.time_mask_width = time_masks, time_mask_width

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, n_mels, frames) → same shape, masked."""
        if not self.training:
            return features
        mask = self.mask(features.shape, features.device)
        fill = features.mean(dim=(1, 2), keepdim=True)
        return torch.where(mask, fill, features)

    def mask(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Boolean (B, n_mels, frames), True where masked."""
        batch, num_bins, num_frames = shape
        freq = _band_mask(batch, num_bins, self.freq_masks, self.freq_mask_width, device)  # (B, n_mels)
        time = _band_mask(batch, num_frames, self.time_masks, self.time_mask_width, device)  # (B, frames)
        return freq[:, :, None] | time[:, None, :]


def _band_mask(batch: int, size: int, count: int, max_width: int, device) -> torch.Tensor:
    if count == 0 or max_width == 0:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    max_width = min(max_width, size)
    widths = torch.randint(0, max_width + 1, (batch, count, 1), device=device)
    starts = (torch.rand(batch, count, 1, device=device) * (size - widths + 1)).long()
    positions = torch.arange(size, device=device)
    return ((positions >= starts) & (positions < starts + widths)).any(dim=1)


class MixUp(nn.Module):
    """Mixes each clip with another clip of the same task sub-batch (Zhang et al. 2018).

    `lambda ~ Beta(alpha, alpha)` per clip, folded to `max(lambda, 1 - lambda)` so that the first clip
    dominates. Targets mix the same way: soft one-hot for scenes, mixed multi-hot for events.
    Does nothing in eval mode.
    """

    def __init__(self, alpha: float = 0.3):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"MixUp alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def forward(self, features: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None):
        """features: (B, n_mels, frames); targets: (B,) class indices (needs `num_classes`) or (B, C).

        Returns the mixed features and (B, C) float targets.
        """
        if targets.ndim == 1:
            if num_classes is None:
                raise ValueError("MixUp needs `num_classes` to mix class-index targets")
            targets = nn.functional.one_hot(targets, num_classes)
        targets = targets.float()
        if not self.training or features.shape[0] < 2:
            return features, targets
        batch = features.shape[0]
        # One device tensor and no argument validation: the old per-step scalar tensors and Beta's checks
        # made the host wait on a GPU (same draws, checked bit for bit on CPU).
        concentration = torch.full((batch,), self.alpha, device=features.device)
        lam = torch.distributions.Beta(concentration, concentration, validate_args=False).sample()
        lam = torch.maximum(lam, 1.0 - lam)  # (B,)
        partner = torch.randperm(batch, device=features.device)
        mixed = lam[:, None, None] * features + (1.0 - lam[:, None, None]) * features[partner]
        mixed_targets = lam[:, None] * targets + (1.0 - lam[:, None]) * targets[partner]
        return mixed.to(features.dtype), mixed_targets
