"""Learning-rate schedules of amortized training, as data and one pure function.

The learning rate of a step is computed from the step index alone (`lr_at`), never kept in
a torch scheduler: a resumed run needs nothing but the step counter to continue on the
same schedule, so resume stays bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

ScheduleKind = Literal["constant", "cosine", "step"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleKind)


@dataclass(frozen=True)
class LrSchedule:
    """How the learning rate moves over a run (the peak rate is `TrainOptions.lr`).

    * ``constant``: the peak rate at every step (after the warm-up, if any);
    * ``cosine``: after the warm-up, half a cosine from the peak down to
      ``final_fraction`` x peak, reached just after the last step (so the last step still
      learns; Loshchilov and Hutter, SGDR, ICLR 2017, without restarts);
    * ``step``: after the warm-up, the peak times ``factor`` every ``every`` steps.
    """

    kind: ScheduleKind = "constant"  # one of SCHEDULES
    warmup: int = 0  # steps of linear warm-up from peak / warmup to the peak (0: none)
    final_fraction: float = 0.0  # cosine: last step's rate over the peak, in [0, 1]
    every: int = 0  # step: steps between decays (>= 1 for kind "step")
    factor: float = 0.5  # step: rate multiplier at each decay, in (0, 1]

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}; expected one of "
                             f"{', '.join(SCHEDULES)}")
        if self.warmup < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {self.warmup}")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must lie in [0, 1], got {self.final_fraction}")
        if self.kind == "step" and self.every < 1:
            raise ValueError("a 'step' schedule needs every >= 1 (steps between decays)")
        if self.every < 0 or not 0.0 < self.factor <= 1.0:
            raise ValueError(f"every must be >= 0 and factor in (0, 1], got {self.every} and "
                             f"{self.factor}")


def lr_at(schedule: LrSchedule, *, lr: float, step: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based) of a run of `total` steps.

    Args:
        schedule: the schedule.
        lr: the peak learning rate.
        step: index of the step about to be taken, 0 <= step < total.
        total: steps of the whole run (the cosine ends at the last one).

    Returns:
        The rate, a pure function of the arguments (``lr`` itself for ``constant`` without
        warm-up, so such runs are those of a fixed-rate Adam bit for bit).
    """
    if step < schedule.warmup:
        return lr * (step + 1) / schedule.warmup
    done = step - schedule.warmup  # steps since the warm-up ended
    if schedule.kind == "cosine":
        progress = min(done / max(total - schedule.warmup, 1), 1.0)  # 0 at the peak
        low = lr * schedule.final_fraction
        return low + (lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule.kind == "step":
        return lr * schedule.factor ** (done // schedule.every)
    return lr
