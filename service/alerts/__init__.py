"""Alert channels: anomaly incidents to webhooks, Slack, email and commands, routed by a typed config.

- :mod:`.config`: the typed ``--alerts-config`` file (sinks, routes, rate limits, retries);
- :mod:`.routing`: which routes an anomaly revision matches, and whether it is news for one;
- :mod:`.ratelimit`: per-route token buckets, and the tally of what they held back;
- :mod:`.message`: a notification as JSON, Slack blocks or text, and email;
- :mod:`.sinks`: one delivery try per sink (webhook, Slack, SMTP, command);
- :mod:`.dispatch`: the hub subscriber that ties them together, with retries.

``runwatch serve --alerts-config deploy/alerts.example.json`` turns them on.
"""

from runwatch.service.alerts.config import AlertsConfig, load_alerts_config
from runwatch.service.alerts.dispatch import AlertDispatcher, AlertStats

__all__ = ["AlertDispatcher", "AlertStats", "AlertsConfig", "load_alerts_config"]
