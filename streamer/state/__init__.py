"""Per-device detector state held in preallocated numpy tables."""
