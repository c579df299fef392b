"""``causal-lm``: the exact loss per token of a language model.

The data gives each row its input ids (N, L) and aligned labels (N, L): ``labels[n, p]`` is the
token that position p predicts (the next one), or -100 where nothing is scored (padding, the
context of a window, a label the data set masks). The model returns logits (N, L, V), or a
tuple / ModelOutput holding them first or as ``.logits``. Each row's (sum, weight) is the
float64 sum of its scored tokens' negative log-likelihoods (nats) and their count; an item adds
its sum to ``loss_sum`` (the token is the unit), so ``loss_per_token = loss_sum / tokens``.

The log-softmax runs in the logits' own dtype (float32 for ``bfloat16``/``float16`` models),
in chunks of rows so that its intermediate stays near `CHUNK_ELEMENTS`; only the per-token
losses become float64. No float64 copy of the logits is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import LossError
from evalloss.losses.loss import Loss

if TYPE_CHECKING:
    import torch

IGNORE = -100  # a label that is not scored (the convention of torch and transformers)
CHUNK_ELEMENTS = 1 << 25  # logits per cross-entropy call (128 MiB of float32)


@dataclass(frozen=True)
class CausalLM(Loss):
    """Next-token cross-entropy, summed per item over its scored tokens (its row's target
    kind: tokens; its ignore index: `IGNORE`, always)."""

    def logits(self, outputs: Any) -> torch.Tensor | None:
        """The logits in ``outputs``: the tensor, a tuple's first element, or ``.logits``."""
        import torch

        found = getattr(outputs, "logits", None)
        if found is None and isinstance(outputs, tuple | list) and outputs:
            found = outputs[0]
        if found is None:
            found = outputs
        return found if isinstance(found, torch.Tensor) else None

    def align(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, L, V) against labels (N, L); a model that returns only the last
        position's logits (nanoGPT without targets) is named as such."""
        n, length = targets.shape
        if outputs.dim() == 3 and outputs.shape[0] == n and outputs.shape[1] == 1 and length > 1:
            raise LossError(
                f"the model returned logits for 1 position of {length}: {self.name} needs "
                "every position's logits (see docs/language-models.md for a wrapper)"
            )
        if outputs.dim() != 3 or tuple(outputs.shape[:2]) != (n, length):
            raise LossError(
                f"{self.name} needs logits of shape ({n}, {length}, vocabulary) for input "
                f"({n}, {length}), got {tuple(outputs.shape)}"
            )
        if not outputs.is_floating_point():
            raise LossError(f"model output has dtype {outputs.dtype}, expected floating point")
        return outputs, targets

    def invalid_target(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[int, int, str] | None:
        """The first (row, position, reason) of a label outside the vocabulary."""
        import torch

        vocabulary = outputs.shape[-1]
        bad = ((targets < 0) & (targets != IGNORE)) | (targets >= vocabulary)
        if not bool(bad.any()):
            return None
        row, position = (int(i) for i in torch.nonzero(bad)[0])
        token = int(targets[row, position])
        return row, position, f"token id {token} is outside the vocabulary [0, {vocabulary})"

    def per_item(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's summed negative log-likelihood (N,) float64 and scored tokens (N,)."""
        import torch

        criterion = self.functional()  # F.cross_entropy
        n, length, vocabulary = outputs.shape
        logits = outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()
        sums = torch.zeros(n, dtype=torch.float64, device=outputs.device)
        rows = max(1, CHUNK_ELEMENTS // max(1, length * vocabulary))
        for start in range(0, n, rows):
            chunk = logits[start : start + rows]  # (r, L, V)
            labels = targets[start : start + rows]  # (r, L)
            token = criterion(
                chunk.reshape(-1, vocabulary), labels.reshape(-1), reduction="none",
                ignore_index=IGNORE,
            )  # (r * L,), 0 where ignored  # fmt: skip
            sums[start : start + rows] = token.reshape(len(chunk), length).double().sum(dim=1)
        weights = (targets != IGNORE).sum(dim=1)
        return sums, weights

    def item_values(self, sums: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """What each item adds to ``loss_sum``: its whole sum (the token is the unit)."""
        return sums
