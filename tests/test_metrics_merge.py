"""tlog/server/metrics.py: the merged view of ``tlog serve --workers N`` — the sequencer process's
registry with the workers' snapshots of counters and histograms added in, gauges its own."""

from __future__ import annotations

import json

from tlog.server.metrics import Metrics


def _samples(text: bytes) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _sequencer_and_workers() -> tuple[Metrics, Metrics, Metrics]:
    seq, a, b = Metrics(), Metrics(), Metrics()
    seq.bind(lambda: None, lambda: 0, lambda: 7, lambda: True)
    for w in (a, b):  # a worker's gauges must not leak into the sum
        w.bind(lambda: None, lambda: 0, lambda: 1000, lambda: False)
    seq.batch_size.observe(5)
    a.count_request("GET", "/checkpoint", 200)
    b.count_request("GET", "/checkpoint", 200)
    b.count_request("POST", "/v1/entries", 201)
    a.receipt.observe(0.003)
    b.receipt.observe(0.02)
    return seq, a, b


def test_counters_and_histograms_are_summed_gauges_are_the_sequencers():
    seq, a, b = _sequencer_and_workers()
    merged = _samples(seq.render_merged([a.snapshot(), b.snapshot()]))
    assert merged['tlog_http_requests_total{method="GET",route="/checkpoint",status="200"}'] == 2
    assert merged['tlog_http_requests_total{method="POST",route="/v1/entries",status="201"}'] == 1  # one worker only
    assert merged['tlog_receipt_latency_seconds_count'] == 2
    assert merged['tlog_receipt_latency_seconds_bucket{le="0.005"}'] == 1
    assert merged['tlog_receipt_latency_seconds_bucket{le="0.025"}'] == 2
    assert merged['tlog_receipt_latency_seconds_bucket{le="+Inf"}'] == 2
    assert abs(merged['tlog_receipt_latency_seconds_sum'] - 0.023) < 1e-12
    assert merged['tlog_batch_size_count'] == 1  # the sequencer process's own
    assert merged['tlog_backlog'] == 7 and merged['tlog_writes_stopped'] == 1  # not 2,007 / 1
    assert not any(name.endswith("_created") for name in merged)


def test_merged_text_equals_one_registry_that_counted_everything():
    """The oracle: one Metrics that saw every event gives the same samples as the merge."""
    seq, a, b = _sequencer_and_workers()
    one = Metrics()
    one.bind(lambda: None, lambda: 0, lambda: 7, lambda: True)
    one.batch_size.observe(5)
    for route, method, status in (("/checkpoint", "GET", 200), ("/checkpoint", "GET", 200),
                                  ("/v1/entries", "POST", 201)):
        one.count_request(method, route, status)
    one.receipt.observe(0.003)
    one.receipt.observe(0.02)
    expected = {k: v for k, v in _samples(one.render()).items() if "_created" not in k}
    merged = _samples(seq.render_merged([a.snapshot(), b.snapshot()]))
    assert merged.keys() == expected.keys()
    assert all(abs(merged[k] - expected[k]) < 1e-12 for k in expected)


def test_snapshot_holds_no_gauges_and_no_created_samples():
    seq, a, _ = _sequencer_and_workers()
    names = {name for name, _, _ in json.loads(a.snapshot())}
    assert "tlog_http_requests_total" in names and "tlog_receipt_latency_seconds_bucket" in names
    assert not names & {"tlog_tree_size", "tlog_backlog", "tlog_writes_stopped", "tlog_checkpoint_age_seconds"}
    assert not any(n.endswith("_created") for n in names)


def test_no_snapshots_is_the_registry_itself():
    seq, _, _ = _sequencer_and_workers()
    plain = {k: v for k, v in _samples(seq.render()).items() if "_created" not in k}
    assert _samples(seq.render_merged([])) == plain
