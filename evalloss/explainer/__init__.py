"""`explain`: the seed article's table for the user's own model and data: what a training log
(`table`), a language model's evaluation loop (`tokengroups`) or transformers' Trainer prints at
each batch size, against the exact figure."""

from evalloss.explainer.table import explain

__all__ = ["explain"]
