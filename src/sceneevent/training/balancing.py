"""Learned weightings of the two task losses, and the task-gradient diagnostics.

The paper's fixed weighting, `alpha * L_AET + (1 - alpha) * L_ASC`, is the model's own `loss`
(`losses.joint_loss`). This module adds the balanced alpha of two baseline runs (`--alpha auto`, the
paper's eq. 3) and what is learned during training:
- `uncertainty` (Kendall et al., CVPR 2018): `sum_i exp(-s_i) * L_i + s_i` with learned log-variances
  `s_i`; tasks with noisier losses get less weight.
- `dwa` (dynamic weight averaging, Liu et al., CVPR 2019): weights `K * softmax(r_i / T)` where
  `r_i = L_i(e-1) / L_i(e-2)` from epoch-mean losses; a task whose loss falls slower gets more weight.

All of them work on the two losses alone, so they fit the two-batch design unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .results import RunResults

MODES = ("uncertainty", "dwa")


class LossBalancer(nn.Module):
    """Combines `loss_asc` and `loss_aet` into the training objective and reports the weights used."""

    def __init__(self, mode: str, dwa_temperature: float = 2.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"learned loss balancing must be one of {', '.join(MODES)}, got {mode!r} (fixed alpha is the model's own loss)")
        self.mode, self.dwa_temperature = mode, dwa_temperature
        # log-variances s_asc, s_aet; parameters only in uncertainty mode (they go to the optimizer)
        self.log_vars = nn.Parameter(torch.zeros(2)) if mode == "uncertainty" else None
        self.dwa_weights = (1.0, 1.0)

    def forward(self, loss_asc: torch.Tensor | None, loss_aet: torch.Tensor | None) -> torch.Tensor:
        if loss_asc is None or loss_aet is None:  # one task only: nothing to balance
            return loss_asc if loss_aet is None else loss_aet
        if self.mode == "uncertainty":
            s_asc, s_aet = self.log_vars[0], self.log_vars[1]
            return torch.exp(-s_asc) * loss_asc + s_asc + torch.exp(-s_aet) * loss_aet + s_aet
        w_asc, w_aet = self.dwa_weights
        return w_asc * loss_asc + w_aet * loss_aet

    def weights(self) -> dict[str, float]:
        """The current weights of the scene and event losses."""
        if self.mode == "uncertainty":
            precision = torch.exp(-self.log_vars.detach()).tolist()
            return {"asc": precision[0], "aet": precision[1]}
        return {"asc": self.dwa_weights[0], "aet": self.dwa_weights[1]}

    def end_epoch(self, history: list[dict]) -> None:
        """DWA: set the next epoch's weights from the last two epochs' mean training losses."""
        if self.mode != "dwa" or len(history) < 2:
            return
        ratios = []
        for key in ("train_loss_asc", "train_loss_aet"):
            previous, before = history[-1].get(key), history[-2].get(key)
            ratios.append(previous / before if previous and before else 1.0)
        exps = [math.exp(r / self.dwa_temperature) for r in ratios]
        self.dwa_weights = tuple(2.0 * e / sum(exps) for e in exps)

    def average_gradients(self, accelerator) -> None:
        """Average the log-variances' gradients over the processes (call after backward, before the step).

        The balancer is not wrapped in DDP with the model, so without this every process would learn
        its own task weights from its own share of the batch.
        """
        if self.log_vars is not None and self.log_vars.grad is not None and accelerator.num_processes > 1:
            self.log_vars.grad = accelerator.reduce(self.log_vars.grad, reduction="mean")

    def state(self) -> dict:
        """What a checkpoint needs to resume the weighting (the log-variances are not in the model's state)."""
        state = {"dwa_weights": list(self.dwa_weights)}
        if self.log_vars is not None:
            state["log_vars"] = self.log_vars.detach().cpu().tolist()
        return state

    def load_state(self, state: dict) -> None:
        self.dwa_weights = tuple(state.get("dwa_weights", self.dwa_weights))
        if self.log_vars is not None and "log_vars" in state:
            with torch.no_grad():
                self.log_vars.copy_(torch.tensor(state["log_vars"], dtype=self.log_vars.dtype))


def task_gradient_stats(
    parameters: list[torch.Tensor], loss_asc: torch.Tensor, loss_aet: torch.Tensor
) -> dict[str, float]:
    """Gradient norm of each task loss on `parameters` (the shared encoder) and their cosine.

    Two extra backward passes (the graph is kept for the training step's own backward).
    """
    grad_asc = torch.autograd.grad(loss_asc, parameters, retain_graph=True, allow_unused=True)
    grad_aet = torch.autograd.grad(loss_aet, parameters, retain_graph=True, allow_unused=True)
    flat_asc = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grad_asc, parameters)])
    flat_aet = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grad_aet, parameters)])
    norm_asc, norm_aet = flat_asc.norm(), flat_aet.norm()
    cosine = (flat_asc @ flat_aet) / (norm_asc * norm_aet).clamp_min(1e-12)
    return {"grad_norm_asc": norm_asc.item(), "grad_norm_aet": norm_aet.item(), "cosine": cosine.item()}


def balanced_alpha(asc_baseline: RunResults, aet_baseline: RunResults) -> float:
    """`alpha = L*_ASC / (L*_ASC + L*_AET)` from two baseline runs' results.

    With this alpha both weighted losses are about equal at convergence (the paper's balance point).
    `asc_baseline` must be an alpha = 0 run, `aet_baseline` an alpha = 1 run.
    """
    if asc_baseline.alpha != 0.0 or aet_baseline.alpha != 1.0:
        raise ValueError(
            "balanced alpha needs an alpha=0 (scene-only) and an alpha=1 (event-only) baseline, got alpha="
            f"{asc_baseline.alpha} and alpha={aet_baseline.alpha}"
        )
    loss_asc = asc_baseline.final.loss_asc
    loss_aet = aet_baseline.final.loss_aet
    if not loss_asc or not loss_aet or loss_asc <= 0 or loss_aet <= 0:
        raise ValueError(f"baselines lack positive converged losses: loss_asc={loss_asc}, loss_aet={loss_aet}")
    return loss_asc / (loss_asc + loss_aet)
