"""The running sums of an epoch's training losses, kept on the device (no host sync per step) and carried
through checkpoints, so that a resumed run's epoch means equal an uninterrupted run's."""

from __future__ import annotations

import torch


class EpochLossSums:
    """Running sums of the losses on the device: no host sync per step."""

    KEYS = ("loss", "loss_asc", "loss_aet")

    def __init__(self, device, restored: dict | None = None):
        restored = restored or {}
        self.sums = {k: torch.tensor(restored.get(k, 0.0), dtype=torch.float64, device=device) for k in self.KEYS}
        self.counts = {k: int(restored.get(f"{k}_count", 0)) for k in self.KEYS}

    def add(self, outputs) -> None:
        for key in self.KEYS:
            value = getattr(outputs, key)
            if value is not None:
                self.sums[key] += value.detach().double()
                self.counts[key] += 1

    def means(self, accelerator=None) -> dict[str, float]:
        """Epoch means; with an accelerator, over every process (each ran the same number of steps),
        so that the history and DWA's weights are the same on all of them."""
        keys = [k for k in self.KEYS if self.counts[k]]
        if not keys:
            return {}
        means = _process_mean(torch.stack([self.sums[k] / self.counts[k] for k in keys]), accelerator)
        return {f"train_{k}": value for k, value in zip(keys, means.tolist())}

    def latest(self, outputs, accelerator=None) -> dict[str, float]:
        """This step's losses, averaged over the processes: every process then sees the same values (and
        stops together on a non-finite one instead of leaving the others waiting in a collective)."""
        keys = [k for k in self.KEYS if getattr(outputs, k) is not None]
        values = torch.stack([getattr(outputs, k).detach().float() for k in keys])
        return {f"train/{k}": value for k, value in zip(keys, _process_mean(values, accelerator).tolist())}

    def to_json(self, accelerator=None) -> dict:
        """The running sums for a checkpoint, averaged over the processes: a resumed run restores them on
        every process, so its epoch means equal an uninterrupted run's."""
        sums = _process_mean(torch.stack([self.sums[k] for k in self.KEYS]), accelerator)
        payload = dict(zip(self.KEYS, sums.tolist()))
        payload.update({f"{k}_count": self.counts[k] for k in self.KEYS})
        return payload


def _process_mean(values: torch.Tensor, accelerator) -> torch.Tensor:
    if accelerator is not None and accelerator.num_processes > 1:
        return accelerator.reduce(values, reduction="mean")
    return values
