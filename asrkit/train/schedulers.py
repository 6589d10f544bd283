"""Learning-rate schedules instantiated by Hydra (``optim.scheduler._target_``)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupLR"]


class WarmupLR(LRScheduler):
    """Noam schedule: linear warm-up to the optimiser's lr, then decay ∝ step^-0.5.

    ``lr(step) = base_lr * warmup^0.5 * min(step^-0.5, step * warmup^-1.5)``, so the peak equals
    ``base_lr`` at ``step == warmup_steps`` (Vaswani et al., 2017; ESPnet's ``WarmupLR``).
    Stepped once per optimiser update.

    Args:
        optimizer: the wrapped optimiser.
        warmup_steps: updates to reach the peak.
        last_epoch: index of the last update (−1 to start fresh).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 25000,
                 last_epoch: int = -1):
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rate of each parameter group at the current step."""
        step = max(self.last_epoch, 0) + 1
        scale = self.warmup_steps ** 0.5 * min(step ** -0.5, step * self.warmup_steps ** -1.5)
        return [base * scale for base in self.base_lrs]
