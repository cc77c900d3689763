"""The Alertmanager bridge (``streamer alertmanager``): alert episodes from Kafka to Alertmanager.

One job per module:

- ``events``: decoding a record of the alert topic (the alert, and its
  optional ``drivers`` explanation), or the reason it is rejected;
- ``payload``: an episode as an Alertmanager v2 alert (labels, annotations,
  severity, startsAt/endsAt);
- ``firing``: the episodes firing now, per partition, and the offset each
  partition may commit without losing them;
- ``backoff``: retry delays (exponential, capped, full jitter);
- ``client``: one POST to ``/api/v2/alerts`` and what its answer means;
- ``delivery``: posting until Alertmanager accepts, splitting a refused batch;
- ``metrics``: the bridge's Prometheus series;
- ``bridge``: the loop (fetch, post, commit, resend) and why a restart loses
  no firing episode.
"""
