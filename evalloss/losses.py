"""The loss registry: name -> per-item loss, accuracy, and what targets it takes.

Per-item loss, as the contract defines it: the criterion with ``reduction='none'``, then the
mean over the item's non-batch elements, so ``loss_i`` equals the criterion's default
``'mean'`` on a batch of that one item. The mean is taken in float64. Every loss gives each
item's (sum, weight); ``causal-lm`` (`CausalLM`, below) makes the token the unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import LossError

if TYPE_CHECKING:
    import torch

NAMES = (
    "cross-entropy", "nll", "bce-logits", "bce", "mse", "l1", "smooth-l1", "huber", "causal-lm",
)  # fmt: skip
CLASSIFICATION = ("cross-entropy", "nll")


@dataclass(frozen=True)
class Loss:
    """A named criterion. ``classes`` losses take integer class targets in [0, C)."""

    name: str
    classes: bool  # targets are class indices (cross-entropy, nll)
    binary: bool  # targets are probabilities in [0, 1] (bce, bce-logits)
    has_accuracy: bool
    unit: str = "item"  # what ranks: loss per item ("item") or per token ("token", `causal`)

    def logits(self, outputs: Any) -> torch.Tensor | None:
        """The tensor the loss scores: the model's output itself (None if not a tensor)."""
        import torch

        return outputs if isinstance(outputs, torch.Tensor) else None

    def functional(self) -> Callable[..., torch.Tensor]:
        import torch.nn.functional as F

        table: dict[str, Callable[..., torch.Tensor]] = {
            "cross-entropy": F.cross_entropy,
            "nll": F.nll_loss,
            "bce-logits": F.binary_cross_entropy_with_logits,
            "bce": F.binary_cross_entropy,
            "mse": F.mse_loss,
            "l1": F.l1_loss,
            "smooth-l1": F.smooth_l1_loss,
            "huber": F.huber_loss,
        }
        return table[self.name]

    def per_item(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item's (sum, weight): the float64 sum of its elements' losses (N,) and how
        many elements were scored (N,) int64. ``targets`` is (N, T) as read from the data."""
        import torch

        outputs, targets = self.align(outputs, targets)
        elements = self.functional()(outputs, targets, reduction="none")  # (N, ...)
        flat = elements.reshape(elements.shape[0], -1)  # (N, E)
        weights = torch.full((len(flat),), flat.shape[1], dtype=torch.int64)
        return flat.double().sum(dim=1), weights  # (N,), (N,)

    def item_values(self, sums: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """What each item adds to ``loss_sum`` (N,) float64: its mean, sum / weight (the
        criterion's ``'mean'`` on a batch of that one item, bit for bit)."""
        return sums / weights

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(correct, counted) target elements, for ``accuracy``; (0, 0) when not defined."""
        if not self.has_accuracy:
            return 0, 0
        outputs, targets = self.align(outputs, targets)
        if self.classes:
            predicted = outputs.argmax(dim=1)  # (N, C, *T) -> (N, *T)
        elif self.name == "bce-logits":
            predicted = (outputs > 0).to(targets.dtype)
        else:
            predicted = (outputs > 0.5).to(targets.dtype)
        return int((predicted == targets).sum()), targets.numel()

    def invalid_target(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[int, int, str] | None:
        """The first (row, column, reason) whose target this loss cannot take, else None.

        Class targets must be integers in [0, C), C read off the output; binary targets
        must lie in [0, 1].
        """
        import torch

        if self.classes:
            classes = outputs.shape[1] if outputs.dim() > 1 else 0
            bad = (targets != targets.floor()) | (targets < 0) | (targets >= classes)
            why = f"class label must be an integer in [0, {classes})"
        elif self.binary:
            bad = (targets < 0) | (targets > 1)
            why = f"{self.name} target must lie in [0, 1]"
        else:
            return None
        if not bool(bad.any()):
            return None
        row, col = (int(i) for i in torch.nonzero(bad)[0])
        return row, col, why

    def align(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check shapes (never broadcast) and bring targets to the form the criterion takes.

        targets arrive as (N, T). Class losses want (N,) when T == 1, else (N, T) against
        outputs (N, C, T). Elementwise losses want outputs of the targets' shape; the one
        documented exception is a single target, where (N,) and (N, 1) outputs both match.
        """
        n, t = targets.shape
        if outputs.dim() == 0 or outputs.shape[0] != n:
            raise LossError(
                f"model output has shape {tuple(outputs.shape)}, expected {n} items first"
            )
        if not outputs.is_floating_point():
            raise LossError(f"model output has dtype {outputs.dtype}, expected floating point")
        if self.classes:
            want = (n, outputs.shape[1] if outputs.dim() > 1 else -1) + ((t,) if t > 1 else ())
            if outputs.dim() != len(want) or (t > 1 and outputs.shape[2] != t):
                shape = "(N, C)" if t == 1 else f"(N, C, {t})"
                raise LossError(
                    f"{self.name} needs model output {shape} for {t} target column(s), "
                    f"got {tuple(outputs.shape)}"
                )
            return outputs, targets.long().reshape(n) if t == 1 else targets.long()
        if t == 1 and outputs.dim() == 1:
            outputs = outputs.unsqueeze(1)  # the documented single-target case
        if tuple(outputs.shape) != (n, t):
            raise LossError(
                f"{self.name} needs model output of shape ({n}, {t}) for {t} target column(s), "
                f"got {tuple(outputs.shape)}"
            )
        return outputs, targets.to(outputs.dtype)


def get(name: str) -> Loss:
    """The registered loss called ``name``."""
    if name not in NAMES:
        raise LossError(f"unknown loss {name!r}; choose one of {', '.join(NAMES)}", key="--loss")
    if name == "causal-lm":
        return CausalLM(name=name, classes=False, binary=False, has_accuracy=False)
    return Loss(
        name=name,
        classes=name in CLASSIFICATION,
        binary=name in ("bce", "bce-logits"),
        has_accuracy=name in (*CLASSIFICATION, "bce", "bce-logits"),
    )


# -- causal-lm -------------------------------------------------------------------------
# ``causal-lm``: the exact loss per token of a language model.
#
# The data gives each row its input ids (N, L) and aligned labels (N, L): ``labels[n, p]`` is the
# token that position p predicts (the next one), or -100 where nothing is scored (padding, the
# context of a window, a label the data set masks). The model returns logits (N, L, V), or a
# tuple / ModelOutput holding them first or as ``.logits``. Each row's (sum, weight) is the
# float64 sum of its scored tokens' negative log-likelihoods (nats) and their count; an item adds
# its sum to ``loss_sum`` (the token is the unit), so ``loss_per_token = loss_sum / tokens``.
#
# The log-softmax runs in the logits' own dtype (float32 for ``bfloat16``/``float16`` models),
# in chunks of rows so that its intermediate stays near `CHUNK_ELEMENTS`; only the per-token
# losses become float64. No float64 copy of the logits is ever made.

IGNORE = -100  # a label that is not scored (the convention of torch and transformers)
CHUNK_ELEMENTS = 1 << 25  # logits per cross-entropy call (128 MiB of float32)


@dataclass(frozen=True)
class CausalLM(Loss):
    """Next-token cross-entropy, summed per item over its scored tokens."""

    unit: str = "token"

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
        import torch.nn.functional as F

        n, length, vocabulary = outputs.shape
        logits = outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()
        sums = torch.zeros(n, dtype=torch.float64, device=outputs.device)
        rows = max(1, CHUNK_ELEMENTS // max(1, length * vocabulary))
        for start in range(0, n, rows):
            chunk = logits[start : start + rows]  # (r, L, V)
            labels = targets[start : start + rows]  # (r, L)
            token = F.cross_entropy(
                chunk.reshape(-1, vocabulary), labels.reshape(-1), reduction="none",
                ignore_index=IGNORE,
            )  # (r * L,), 0 where ignored  # fmt: skip
            sums[start : start + rows] = token.reshape(len(chunk), length).double().sum(dim=1)
        weights = (targets != IGNORE).sum(dim=1)
        return sums, weights

    def item_values(self, sums: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """What each item adds to ``loss_sum``: its whole sum (the token is the unit)."""
        return sums

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        return 0, 0
