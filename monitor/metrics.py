"""Prometheus metrics of one monitor process (a private registry, served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.verified_size = Gauge("tlog_monitor_verified_tree_size",
                                   "Tree size of the largest verified checkpoint (the head)", ["origin"], registry=r)
        self.served_size = Gauge("tlog_monitor_log_served_tree_size",
                                 "Largest tree size the log itself served this monitor", ["origin"], registry=r)
        self.checkpoint_age = Gauge("tlog_monitor_checkpoint_age_seconds",
                                    "Seconds since the verified head last advanced", ["origin"], registry=r)
        self.answer_age = Gauge("tlog_monitor_last_answer_age_seconds",
                                "Seconds since the log last answered with a valid checkpoint", ["origin"],
                                registry=r)
        self.stale = Gauge("tlog_monitor_stale", "1 while the log is stale (spec/monitor.md §2.3)", ["origin"],
                           registry=r)
        self.alerts = Counter("tlog_monitor_alerts", "Alerts raised, by kind and severity",
                              ["origin", "kind", "severity"], registry=r)
        self.checkpoints = Counter("tlog_monitor_checkpoints", "Checkpoints classified, by source and verdict",
                                   ["origin", "source", "verdict"], registry=r)
        self.gossip_errors = Counter("tlog_monitor_gossip_errors", "Failed gossip exchanges, by peer", ["peer"],
                                     registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
