"""Exact evaluation inside training frameworks (transformers' Trainer, Lightning).

The top layer beside ``cli``: optional, each module imported on use, never by ``import evalloss``.
"""
