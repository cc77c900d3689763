"""Operators in the loop: feedback messages and the per-device adjustments they make."""
