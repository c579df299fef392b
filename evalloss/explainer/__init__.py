"""`explain`: the seed article's table for the user's own model and data (`table`): what a
training log (`grouping`), a language model's evaluation loop or transformers' Trainer
(`tokengroups`) prints at each batch size, against the exact figure."""

from evalloss.explainer.table import explain

__all__ = ["explain"]
