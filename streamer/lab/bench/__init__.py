"""Benchmarks: ``streamer bench ...`` (measurement code; the CLI glue is in ``command.py``)."""
