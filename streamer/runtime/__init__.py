"""The daemon's runtime: one reading's way from fetch to commit, one module per job.

- ``application``: wires the engines to Kafka; start-up, periodic commit and
  snapshot, graceful drain, shutdown (:class:`Application`, what `streamer run` runs);
- ``fetcher``: ``getmany``, decoding, backpressure, offset resets;
- ``score_loop``: micro-batches scored and handed to the alert sink;
- ``scorer``: where device state is touched, one thread at a time;
- ``commits``: the commit protocol (finished offsets, acknowledgements,
  snapshot-then-commit);
- ``ownership``: rebalances and partition takeover with device state;
- ``supervision``: watchdog, broker probe, gauges;
- ``batches``: fetches and micro-batches on their way;
- ``seams``: the protocols the engines are driven through (consumer,
  committer, alert sink, clock).
"""
