"""Where a training run's time goes: steps and samples per second, and the share of the time
spent waiting for data, over each log window.

Host clocks only, so no host-device sync is added. The loop never waits for the GPU within a
step (see ``loss_window.py``), so the host's time getting a batch (``next(stream)`` and
moving it to the device) is time the GPU goes unfed whenever the data path is the
bottleneck. When the GPU is, the host runs ahead and waits elsewhere (a full kernel queue,
the one sync per log window), and the data share stays small. Work that getting a batch
queues on the GPU (realistic degradations run there) counts as the GPU's, not as data wait.
The window's wall time is read after the log window's sync, so it covers the GPU's work;
validation and saving are left out (they are not training speed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Speed:
    """One window: steps/s, samples/s (global batch x steps / s) and ``data_wait``, the share
    (0..1) of the window's time spent getting batches."""

    it_s: float
    samples_s: float
    data_wait: float

    def record(self) -> dict[str, float]:
        """The timing keys of a ``train`` log record (``SPEED_KEYS``)."""
        return asdict(self)


SPEED_KEYS = tuple(f.name for f in fields(Speed))
"""The keys of a ``train`` log record that are timings (they differ between equal runs)."""


class SpeedWindow:
    """Times the steps since the last ``read``: wall time less ``paused`` time, and the part
    of it spent in ``waiting_for_data``. ``clock`` (seconds) is replaceable for tests."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.restart()

    def restart(self) -> None:
        self.start, self.steps, self.data_seconds, self.paused_seconds = self.clock(), 0, 0.0, 0.0

    @contextlib.contextmanager
    def waiting_for_data(self) -> Iterator[None]:
        """Around getting one batch: its time counts as data wait."""
        start = self.clock()
        try:
            yield
        finally:
            self.data_seconds += self.clock() - start

    def step_done(self) -> None:
        self.steps += 1

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Around work that is not training (validation, saving): left out of the window."""
        start = self.clock()
        try:
            yield
        finally:
            self.paused_seconds += self.clock() - start

    def read(self, batch_size: int) -> Speed:
        """The window's speed for a global batch of ``batch_size``; starts a new window."""
        seconds = max(self.clock() - self.start - self.paused_seconds, 1e-9)
        speed = Speed(it_s=self.steps / seconds, samples_s=self.steps * batch_size / seconds,
                      data_wait=min(self.data_seconds / seconds, 1.0))
        self.restart()
        return speed
