"""Per-device dynamic thresholds on forecast residuals."""
