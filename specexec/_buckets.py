"""Histogram bucket bounds for latency metrics (no dependency: the probe daemon tallies with them too)."""

from __future__ import annotations

LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Seconds: the GenAI semantic conventions' buckets for ``gen_ai.client.operation.duration``."""
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""Seconds: the GenAI semantic conventions' buckets for time to first token."""
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format 0.0.4 (what every Prometheus reads; the names here need nothing newer)."""
