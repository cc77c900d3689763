"""A scripted Alertmanager: answers each POST from a script, records what was posted."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamer.alertmanager.client import AlertmanagerUnavailable, PostResult

Answer = PostResult | AlertmanagerUnavailable


class FakePoster:
    """Answers come from ``script`` in turn (then 200); ``refuse`` refuses matching alerts with a 400."""

    def __init__(self, script: Sequence[Answer] = (),
                 refuse: Callable[[Mapping[str, Any]], bool] = lambda alert: False) -> None:
        self.script = list(script)
        self.refuse = refuse
        self.posts: list[list[Mapping[str, Any]]] = []
        self.accepted: list[Mapping[str, Any]] = []

    async def post(self, alerts: Sequence[Mapping[str, Any]]) -> PostResult:
        self.posts.append(list(alerts))
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, AlertmanagerUnavailable):
                raise answer
            if not answer.accepted:
                return answer
        good = [alert for alert in alerts if not self.refuse(alert)]
        self.accepted.extend(good)  # Alertmanager 0.25 stores the valid alerts of a refused batch too
        return PostResult(200) if len(good) == len(alerts) else PostResult(400, '"bad alert"')

    def states(self) -> dict[str, str]:
        """The last state posted per alert_id: firing or resolved (by endsAt against startsAt)."""
        out: dict[str, str] = {}
        for alert in self.accepted:
            out[alert["labels"]["alert_id"]] = "resolved" if alert["annotations"]["event"] == "resolve" \
                else "firing"
        return out
