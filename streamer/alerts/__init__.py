"""Alert episodes: when an alert opens and when it resolves."""
