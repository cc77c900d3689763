"""Micro-batching and batched scoring of readings."""
