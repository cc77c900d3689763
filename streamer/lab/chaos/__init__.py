"""``streamer chaos``: kill daemons and freeze the broker under load, then prove nothing was lost.

Modelled on the Kafka Streams system tests (SIGKILL/restart clients, bounce
brokers, classify ALL-RECORDS-DELIVERED / MORE / LESS) and faust's chaos
checker (rebuild the truth from the input topic, compare key by key).

The scenario (:func:`streamer.lab.chaos.scenario.run_chaos`):

1. Start the embedded Tansu broker on a free loopback port. Tansu keeps its
   data in memory, so an outage is a *hung* broker (SIGSTOP, then SIGCONT a
   few seconds later), never a restart, which would lose every topic.
2. Create the input, alert, dead-letter and compacted state topics, and start
   ``daemons`` ``streamer run`` processes in one consumer group (snapshots
   every ``snapshot_interval_s``, short session timeout), supervised like a
   Deployment: whatever dies is restarted after ``restart_delay_s``.
3. Produce a deterministic fleet (:mod:`streamer.lab.chaos.traffic`): seeded
   readings with injected anomalies of known windows and fixed event times,
   plus one hostile record every ``hostile_every`` steps (malformed, empty,
   oversized, wrong types, NaN, bad ids and timestamps, a key that disagrees
   with its device, a repeated and an older event time). Each record's
   partition and offset come from the broker's acknowledgement.
4. Meanwhile inject the planned faults (:mod:`streamer.lab.chaos.plan`, seeded,
   evenly spread after a warm-up lead): SIGKILL a random daemon (and, in the
   full run, bursts of two at once), SIGTERM one (a graceful drain under
   load), and freeze the broker, once for longer than the session timeout.
5. Stop producing, wait until the group's committed offsets cover every
   produced record, SIGTERM every daemon.
6. Verify from Kafka alone (:mod:`streamer.lab.chaos.evidence`; daemon metrics
   die with SIGKILLed processes): committed offsets, the input, alert and
   dead-letter topics read end to end by clients outside the group; then
   rebuild the fault-free truth by running the daemon's scoring code over the
   input topic in one process (:mod:`streamer.lab.chaos.reference`).
7. Judge (:mod:`streamer.lab.chaos.verdict`, where the rules are): LESS if a
   record is not covered by a commit, a rejected record is missing from the
   dead-letter topic, a valid reading was dead-lettered, or an alert of the
   reference (hence any anomaly it detects) was never published; MORE if an
   alert was published that the reference does not publish, copies of one id
   differ, or an id was repeated more often than the replays (SIGKILLs,
   non-zero exits, failed drains and commits in the daemon logs) explain;
   ALL-DELIVERED otherwise. Repeats after a SIGKILL are expected: work done
   after the last commit is redone by the next owner, with the same ids.

The JSON written by ``streamer chaos --json`` holds the verdict, the reasons,
``kills``, ``terms``, ``outages``, ``readings``, ``readings_accounted``,
``injected_anomalies``, ``alerted_anomalies``, ``duplicate_alerts`` and the
counts behind each rule. ``readings`` counts every record produced, hostile
ones included; ``readings_accounted`` those covered by a commit and, as the
reference decides, dead-lettered (rejected) or not (scored). Daemon logs,
configs and the broker log stay in the work directory it names.
"""
