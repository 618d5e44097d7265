"""The training losses of recent steps, kept on the device until the loop needs them.

Reading a CUDA tensor on the host makes the host wait until the GPU has run everything
queued before it; doing so every step (to log the losses, or to see whether they are
finite) keeps the GPU idle while the host prepares the next step. The training loop
therefore only queues each step's losses here, and reads all the pending ones at once (one
wait) at the next log interval, validation or save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepLosses:
    """One step's losses: ``values`` is a float32 vector (one entry per name) on the device,
    ``finite`` a 0-d bool tensor beside it, true when every value is finite (then the step
    updated the networks)."""

    names: tuple[str, ...]
    values: torch.Tensor
    finite: torch.Tensor


class LossWindow:
    """Pending steps' losses, and the running sums of the finite ones since ``means``."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, StepLosses]] = []
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, step: int, losses: StepLosses) -> None:
        """Queue the losses of ``step`` (no host-device sync)."""
        self.pending.append((step, losses))

    def read(self) -> list[tuple[int, dict[str, float], bool]]:
        """The pending steps as (step, {name: value}, finite), oldest first, read with one
        sync; the finite ones are added to the sums. Empties the queue."""
        if not self.pending:
            return []
        rows = torch.cat([losses.values for _, losses in self.pending]).tolist()
        result, start = [], 0
        for step, losses in self.pending:
            values = dict(zip(losses.names, rows[start:start + len(losses.names)], strict=True))
            start += len(losses.names)
            finite = all(math.isfinite(v) for v in values.values())
            if finite:
                for name, value in values.items():
                    self.sums[name] = self.sums.get(name, 0.0) + value
                self.count += 1
            result.append((step, values, finite))
        self.pending = []
        return result

    def means(self) -> dict[str, float]:
        """Mean of each loss over the finite steps read since the last call ({} if none)."""
        means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means
