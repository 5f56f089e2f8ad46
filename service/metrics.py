"""Prometheus metrics, one registry per app (per worker process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("charrnn_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram("charrnn_request_duration_seconds", "request latency (to the last byte for streams)",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttfc = Histogram("charrnn_time_to_first_char_seconds", "time to the first streamed character",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("charrnn_batch_size", "sequences per decode step", buckets=BATCH_BUCKETS, registry=r)
        self.prefill_batch = Histogram("charrnn_prefill_batch_size", "sequences per prompt-reading (prefill) turn",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.generated = Counter("charrnn_generated_chars", "characters generated", registry=r)
        self.prompt_chars = Counter("charrnn_prompt_chars", "prompt characters read (prefill)", registry=r)
        self.queue_depth = Gauge("charrnn_queue_depth", "sequences waiting to join the batch", registry=r)
        self.cache_hits = Gauge("charrnn_prefix_cache_hits", "prompts that reused a cached model state", registry=r)
        self.cache_lookups = Gauge("charrnn_prefix_cache_lookups", "prompts looked up in the prefix cache", registry=r)
        self.cache_bytes = Gauge("charrnn_prefix_cache_bytes", "tensor bytes held by the prefix cache's entries",
                                 registry=r)
        self.active = Gauge("charrnn_active_sequences", "sequences prefilling or decoding", registry=r)

    def step(self, batch: int):
        """Called by the engine after each decode step."""
        self.batch_size.observe(batch)
        self.generated.inc(batch)

    def prefill(self, rows: int):
        """Called by the engine after each prefill turn that read characters."""
        self.prefill_batch.observe(rows)

    def render(self, engine=None) -> bytes:
        if engine is not None:
            self.queue_depth.set(engine.queue_depth())
            self.active.set(engine.active())
            if engine.cache is not None:
                self.cache_hits.set(engine.cache.hits)
                self.cache_lookups.set(engine.cache.lookups)
                self.cache_bytes.set(engine.cache.nbytes)
        return generate_latest(self.registry)
