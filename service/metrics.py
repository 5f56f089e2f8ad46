"""Prometheus metrics, one registry per app (per worker process). Every request metric carries the
model's id (`model`; empty when the request never reached one, e.g. a 404 for an unknown id, so a
client cannot mint label values)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("charrnn_requests", "HTTP requests by endpoint, status and model",
                                ["endpoint", "status", "model"], registry=r)
        self.latency = Histogram("charrnn_request_duration_seconds", "request latency (to the last byte for streams)",
                                 ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttfc = Histogram("charrnn_time_to_first_char_seconds", "time to the first streamed character",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("charrnn_batch_size", "sequences per decode step", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.prefill_batch = Histogram("charrnn_prefill_batch_size", "sequences per prompt-reading (prefill) turn",
                                       ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.generated = Counter("charrnn_generated_chars", "characters generated", ["model"], registry=r)
        self.prompt_chars = Counter("charrnn_prompt_chars", "prompt characters read (prefill)", ["model"], registry=r)
        self.queue_depth = Gauge("charrnn_queue_depth", "sequences waiting to join a batch", registry=r)
        self.active = Gauge("charrnn_active_sequences", "sequences prefilling or decoding", registry=r)
        self._per_step: dict[str, tuple] = {}
        self.loaded = Gauge("charrnn_model_loaded", "1 for each model in memory", ["model"], registry=r)
        self.model_loads = Counter("charrnn_model_loads", "model loads by result: loaded, reloaded, unloaded, error",
                                   ["model", "result"], registry=r)
        self.cache_hits = Gauge("charrnn_prefix_cache_hits", "prompts that reused a cached model state", ["model"],
                                registry=r)
        self.cache_lookups = Gauge("charrnn_prefix_cache_lookups", "prompts looked up in the prefix cache", ["model"],
                                   registry=r)
        self.cache_bytes = Gauge("charrnn_prefix_cache_bytes", "tensor bytes held by the prefix cache's entries",
                                 ["model"], registry=r)

    def step(self, model: str, batch: int):
        """Called by the engine after each decode step of a model (its labelled series looked up once)."""
        series = self._per_step.get(model)
        if series is None:
            series = self._per_step[model] = (self.batch_size.labels(model), self.generated.labels(model))
        series[0].observe(batch)
        series[1].inc(batch)

    def prefill(self, model: str, rows: int):
        """Called by the engine after each prefill turn that read characters."""
        self.prefill_batch.labels(model).observe(rows)

    def render(self, engine=None) -> bytes:
        if engine is not None:
            self.queue_depth.set(engine.queue_depth())
            self.active.set(engine.active())
            served = {lane.name: lane for lane in engine.lanes if not lane.retired}
            for name, lane in served.items():
                if lane.cache is not None:
                    self.cache_hits.labels(name).set(lane.cache.hits)
                    self.cache_lookups.labels(name).set(lane.cache.lookups)
                    self.cache_bytes.labels(name).set(lane.cache.nbytes)
        return generate_latest(self.registry)

    def model_event(self, model: str, result: str):
        """Called by the registry: a model loaded, reloaded, unloaded, or failed to load."""
        self.model_loads.labels(model, result).inc()
        if result != "error":
            self.loaded.labels(model).set(0 if result == "unloaded" else 1)
