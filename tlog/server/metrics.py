"""Prometheus metrics of one log (``GET /metrics``), in a registry of its own.

Each :class:`Metrics` owns a ``CollectorRegistry`` (never the process-global one: tests run many
apps in one process).  Counters are moved by the code that knows the outcome (LogState for appends
and payload reads, the sequencer's ``on_batch`` hook for what was integrated, the request middleware
for HTTP requests); gauges are read from the log when scraped.  Label values are bounded: key ids
come from the registry (an unregistered key is ``unknown``), token ids from the tokens table, routes
are route templates.

With ``tlog serve --workers N`` every process counts what it does (the workers HTTP requests and
appends, the sequencer process batches, key events, erasures, retention), and ``GET /metrics``, on
whichever worker the request lands, answers with the sum: each worker sends a :meth:`Metrics.snapshot`
of its counters and histograms to the sequencer process once a second and with every scrape, and the
sequencer process adds them to its own (:meth:`Metrics.render_merged`).  Gauges are the sequencer
process's (the tree size, the backlog and whether writes are stopped are known there).  A worker's
counts are at most a second old in a scrape through another worker; they never go backwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition
from prometheus_client.core import Metric

from ..entry import Erasure, KeyEvent, Leaf, decode_body
from ..errors import TlogError
from ..registry import EntryRejected, Registry
from .storage import Head, NewLeaf

__all__ = ["Metrics", "CONTENT_TYPE", "reason_of"]

#: The classic text format (0.0.4) that every Prometheus server scrapes.
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def reason_of(exc: Exception) -> str:
    """A short, bounded label for why an append failed: the registry's reason (spec/keys.md §3), else
    the error class (``too_large``, ``rate_limited``, ``format``, ``backlog_full`` …)."""
    if isinstance(exc, EntryRejected):
        return str(exc.reason).replace(" ", "_")
    name = type(exc).__name__.removesuffix("Error") or "error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _key_label(body: bytes, registry: Registry | None) -> str:
    """The writer key id of a (possibly bad) body: hex when registered, else ``unknown`` / ``none``."""
    try:
        entry = decode_body(body)
    except TlogError:
        return "none"
    key_id = getattr(entry, "key_id", None)
    if not isinstance(key_id, bytes):
        return "none"
    return key_id.hex() if registry is not None and key_id in registry.keys else "unknown"


class Metrics:
    """Every metric of one log.  :meth:`bind` connects the gauges to the running log."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple, object] = {}
        r = self.registry
        self.appends = Counter("tlog_appends", "Writer appends (POST /v1/entries) by outcome, reason and key id",
                               ["outcome", "reason", "key_id"], registry=r)
        self.operator_appends = Counter(
            "tlog_operator_appends", "Operator entries submitted (POST /v1/operator-entries) by outcome and reason",
            ["outcome", "reason"], registry=r)
        self.key_events = Counter("tlog_key_events", "Key events integrated into the tree, by action",
                                  ["action"], registry=r)
        self.erasures = Counter("tlog_erasures", "Erasure entries integrated (payload and salt deleted)",
                                registry=r)
        self.retention_runs = Counter("tlog_retention_runs", "Retention passes, by outcome", ["outcome"],
                                      registry=r)
        self.batch_size = Histogram("tlog_batch_size", "Leaves per committed batch", buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.integration = Histogram(
            "tlog_integration_latency_seconds",
            "From handing a verified entry to the sequencer until it is durable under a signed checkpoint",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.receipt = Histogram("tlog_receipt_latency_seconds",
                                 "From receiving an append until its receipt (with inclusion proof) is ready",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.payload_reads = Counter("tlog_payload_reads", "Payloads (and salts) returned, by reader token id",
                                     ["token_id"], registry=r)
        self.payload_refusals = Counter("tlog_payload_refusals",
                                        "Requests refused for a missing scope or an invalid token, by reason",
                                        ["reason"], registry=r)
        self.http = Counter("tlog_http_requests", "HTTP requests by method, route template and status",
                            ["method", "route", "status"], registry=r)
        self.tree_size = Gauge("tlog_tree_size", "Size of the latest published checkpoint", registry=r)
        self.checkpoint_age = Gauge("tlog_checkpoint_age_seconds",
                                    "Seconds since the latest checkpoint was signed", registry=r)
        self.backlog = Gauge("tlog_backlog", "Entries waiting for integration", registry=r)
        self.writes_stopped = Gauge("tlog_writes_stopped", "1 when writes are stopped after a failure",
                                    registry=r)

    def bind(self, head: Callable[[], Head | None], clock_ms: Callable[[], int], backlog: Callable[[], int],
             stopped: Callable[[], bool]) -> None:
        def size() -> float:
            h = head()
            return float(h.size) if h else 0.0

        def age() -> float:
            h = head()
            return max(0.0, (clock_ms() - h.timestamp_ms) / 1000) if h else 0.0

        self.tree_size.set_function(size)
        self.checkpoint_age.set_function(age)
        self.backlog.set_function(lambda: float(backlog()))
        self.writes_stopped.set_function(lambda: 1.0 if stopped() else 0.0)

    # -- appends ----------------------------------------------------------------------------------

    def append_done(self, duplicate: bool, body: bytes, seconds: float) -> None:
        entry = decode_body(body)
        self.child(self.appends, "duplicate" if duplicate else "accepted", "", entry.key_id.hex()).inc()
        self.receipt.observe(seconds)

    def count_request(self, method: str, route: str, status: int) -> None:
        self.child(self.http, method, route, str(status)).inc()

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, remembered: the hot paths count into the same few children, and
        looking one up in prometheus-client costs more than the increment (label values stay bounded, as
        the module docstring says, so this cache is too)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def append_failed(self, exc: Exception, body: bytes, registry: Registry | None) -> None:
        self.appends.labels("rejected", reason_of(exc), _key_label(body, registry)).inc()

    def operator_failed(self, exc: Exception) -> None:
        self.operator_appends.labels("rejected", reason_of(exc)).inc()

    def on_batch(self, leaves: list[NewLeaf], head: Head) -> None:
        """The sequencer's hook: one committed batch."""
        self.batch_size.observe(len(leaves))
        for x in leaves:
            if not x.operator:
                continue
            entry = Leaf.decode(x.leaf).entry
            if isinstance(entry, KeyEvent):
                self.key_events.labels(entry.action.text).inc()
            elif isinstance(entry, Erasure):
                self.erasures.inc()

    def render(self) -> bytes:
        return exposition.generate_latest(self.registry)

    def snapshot(self) -> bytes:
        """This process's counters and histograms (not gauges), for :meth:`render_merged` in another
        process: JSON ``[[sample name, {label: value}, value], ...]`` (``_created`` samples left out)."""
        out = []
        for family in self.registry.collect():
            if family.type not in _SUMMED:
                continue
            out.extend([s.name, s.labels, s.value] for s in family.samples if not s.name.endswith("_created"))
        return json.dumps(out, separators=(",", ":")).encode()

    def render_merged(self, snapshots: Iterable[bytes]) -> bytes:
        """This registry's text with the counters and histograms of ``snapshots`` added in (the
        sequencer process answering a worker's scrape).  A snapshot that does not parse is a
        :class:`ValueError` (both ends are this code: a broken one is a bug, not input)."""
        extra: dict[tuple[str, tuple], float] = {}
        for raw in snapshots:
            for name, labels, value in json.loads(raw):
                key = (name, tuple(sorted(labels.items())))
                extra[key] = extra.get(key, 0.0) + float(value)
        families = []
        for family in self.registry.collect():
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            if family.type in _SUMMED:
                values: dict[tuple[str, tuple], float] = {}
                for s in family.samples:
                    if not s.name.endswith("_created"):
                        values[(s.name, tuple(sorted(s.labels.items())))] = s.value
                prefix = family.name + "_"
                for key, value in extra.items():
                    if key[0].startswith(prefix) and key[0][len(prefix):] in _SUFFIXES[family.type]:
                        values[key] = values.get(key, 0.0) + value
                for (name, labels), value in sorted(values.items(), key=_sample_order):
                    merged.add_sample(name, dict(labels), value)
            else:
                merged.samples = list(family.samples)
            families.append(merged)
        registry = CollectorRegistry()
        registry.register(_Fixed(families))
        return exposition.generate_latest(registry)


_SUMMED = ("counter", "histogram")
_SUFFIXES = {"counter": ("total",), "histogram": ("bucket", "count", "sum")}


def _sample_order(item: tuple[tuple[str, tuple], float]) -> tuple:
    """Samples of a family grouped by labels (without ``le``), buckets in ascending ``le``, then
    ``_count`` and ``_sum``: the order prometheus-client itself writes."""
    (name, labels), _ = item
    rest = tuple((k, v) for k, v in labels if k != "le")
    le = dict(labels).get("le")
    bound = float(le) if le is not None else float("inf")
    return (rest, 0 if name.endswith("_bucket") else 1 if name.endswith("_count") else 2, bound, name)


class _Fixed:
    """A collector that yields the given metric families (for rendering a merged view)."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
