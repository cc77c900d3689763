"""Offline evaluation of detection quality on labelled data (benchmark corpora such as NAB)."""
