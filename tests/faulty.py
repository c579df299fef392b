"""Models that misbehave on purpose (imported by file path with --model, as a user's would be).

Each has one Linear(3, 3) so its checkpoint is an ordinary one; the fault is in ``forward``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)


class Fine(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class Sleepy(_Base):
    """Touches $EVALLOSS_TEST_STARTED (+ $RANK) in forward, then sleeps: a run to interrupt."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = os.environ.get("EVALLOSS_TEST_STARTED")
        if marker:
            Path(marker + os.environ.get("RANK", "")).touch()  # one per rank under torchrun
        time.sleep(float(os.environ.get("EVALLOSS_TEST_SLEEP", "60")))
        return self.linear(x)


class SwallowsSignal(_Base):
    """Sends itself $EVALLOSS_TEST_SIGNAL and replaces the handler's exception with an error of
    its own, as a C extension can (safetensors' loader did: "could not determine the shape")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 1:  # the planner's measuring forward (one item of zeros), not the run
            return self.linear(x)
        try:
            os.kill(os.getpid(), int(os.environ["EVALLOSS_TEST_SIGNAL"]))
            time.sleep(5)  # the handler runs here
        except BaseException:
            raise RuntimeError("could not determine the shape of object type 'Storage'") from None
        return self.linear(x)


class Raises(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("the model is broken\nsecond line of the message")


class RaisesOnSecondBatch(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise KeyError("feature")
        return self.linear(x)


class OutOfMemory(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.78 GiB total capacity)"
        )


class Tuple(_Base):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x


class Integer(_Base):
    def forward(self, x: torch.Tensor) -> int:
        return 7


class TooManyColumns(_Base):
    """(N, 3) where mse against one target needs (N, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class DropsARow(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)[1:]


class IntegerTensor(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).round().long()


class NaNOnSecondRow(_Base):
    """Finite except row 1 of each batch (NaN) and row 2 (+inf)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x).clone()
        if len(out) > 1:
            out[1] = float("nan")
        if len(out) > 2:
            out[2] = float("inf")
        return out


class Poisonable(_Base):
    """linear(x), plus the buffer ``poison`` on rows whose first feature exceeds 5.

    poison 0 is harmless; NaN or inf makes exactly those rows' outputs non-finite.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("poison", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = x[:, :1] > 5  # (n, 1)
        return self.linear(x) + torch.where(hit, self.poison, torch.zeros((), dtype=x.dtype))


class Chatty(_Base):
    """Prints while it works, as a model with debug output does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print(f"debug: batch of {len(x)}")
        return self.linear(x)


class Exits(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise SystemExit(3)


class RewritesTheData(_Base):
    """Rewrites the file named by $EVALLOSS_TEST_DATA in place on its first forward, as a job
    that regenerates the data set while evalloss reads it would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = Path(os.environ["EVALLOSS_TEST_DATA"])
        if not getattr(self, "done", False):
            self.done = True
            path.write_text(path.read_text() + "0.5,0.5,0.5,1\n")
        return self.linear(x)


class DiesOnRank1(_Base):
    """Under torchrun, the process of rank 1 dies (os._exit) on its first forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.environ.get("RANK") == "1":
            os._exit(7)
        time.sleep(0.5)  # rank 0 is still evaluating when its peer dies
        return self.linear(x)


class StallsOnRank1(_Base):
    """Under torchrun, the process of rank 1 stalls (sleeps a minute) on its first forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.environ.get("RANK") == "1":
            time.sleep(60)
        return self.linear(x)
