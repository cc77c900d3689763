"""The model lifecycle around the daemon: the registry commands, retraining with a gate.

The daemon's own side (following the registry, swapping models between two
batches, shadow scoring) is in :mod:`streamer.runtime` and :mod:`streamer.scoring`.
"""
