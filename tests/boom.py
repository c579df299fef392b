"""A module that must never be imported because a checkpoint named it.

Importing it writes the file named by $EVALLOSS_BOOM_MARKER: the hostile-spec tests name
``tests.boom:Boom`` in checkpoints and assert that the marker never appears.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

if "EVALLOSS_BOOM_MARKER" in os.environ:
    Path(os.environ["EVALLOSS_BOOM_MARKER"]).write_text("imported\n")


class Boom(torch.nn.Linear):
    def __init__(self) -> None:
        super().__init__(3, 3)
