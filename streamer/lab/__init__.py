"""The lab: benchmarks, fault injection and evaluation on labelled corpora.

``bench/`` is `streamer bench`, ``chaos/`` is `streamer chaos`, ``evaluation/``
is `streamer evaluate`.

Nothing in the runtime imports this package: the command line loads one of its
subpackages only when its command is run, and an import contract (pyproject.toml,
``[tool.importlinter]``) keeps it that way.
"""
