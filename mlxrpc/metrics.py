"""Prometheus metrics of one engine process (prometheus-client, own registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class Metrics:
    """Every metric the engine and the gRPC service record."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mlxrpc_requests", "RPCs by method and status code",
                                ["method", "code"], registry=r)
        self.prompt_tokens = Counter("mlxrpc_prompt_tokens", "Prompt tokens processed",
                                     ["model"], registry=r)
        self.cached_tokens = Counter("mlxrpc_cached_prompt_tokens",
                                     "Prompt tokens served from the prefix cache", ["model"], registry=r)
        self.generation_tokens = Counter("mlxrpc_generation_tokens", "Tokens generated",
                                         ["model"], registry=r)
        self.draft_tokens = Counter("mlxrpc_speculative_draft_tokens",
                                    "Draft tokens verified by the target, by result (accepted, rejected)",
                                    ["model", "result"], registry=r)
        self.prefix_cache = Counter("mlxrpc_prefix_cache_lookups",
                                    "Prefix cache lookups by result (hit, miss)", ["result"], registry=r)
        self.ttft = Histogram("mlxrpc_time_to_first_token_seconds", "Arrival to first token",
                              ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("mlxrpc_queue_seconds", "Arrival to first prefill step",
                                    ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("mlxrpc_inter_token_latency_seconds", "Time between tokens of a stream",
                             ["model"], buckets=_ITL_BUCKETS, registry=r)
        self.load_time = Gauge("mlxrpc_model_load_seconds", "Time the last load of a model took",
                               ["model"], registry=r)
        self.queue_depth = Gauge("mlxrpc_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.running = Gauge("mlxrpc_running_sequences", "Sequences in the decode batch", registry=r)
        self.in_flight = Gauge("mlxrpc_in_flight_requests", "Admitted requests not yet finished",
                               registry=r)
        self.models = Gauge("mlxrpc_models_loaded", "Models loaded", registry=r)
        self.collective = Histogram("mlxrpc_collective_seconds",
                                    "Distributed world: rank 0's broadcast of each step's changes to the other ranks",
                                    buckets=_ITL_BUCKETS, registry=r)

    def watch(self, queue_depth: Callable[[], float], running: Callable[[], float],
              in_flight: Callable[[], float], models: Callable[[], float]) -> None:
        """Gauges read at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.running.set_function(running)
        self.in_flight.set_function(in_flight)
        self.models.set_function(models)

    def watch_kv(self, read: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        """KV-cache gauges read at scrape time from ``read()``: (budget, model id → KVUsage)."""
        self.registry.register(_KVCollector(read))

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


class _KVCollector(Collector):
    """mlxrpc_kv_cache_bytes{model,state} (reserved, in_use, cached), the budget and waiting requests."""

    def __init__(self, read: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total, usage = self._read()
        kv = GaugeMetricFamily("mlxrpc_kv_cache_bytes", "KV-cache bytes by model and state: reserved by "
                               "admitted requests, in use by the running batch, cached for prefix reuse",
                               labels=["model", "state"])
        waiting = GaugeMetricFamily("mlxrpc_kv_waiting_requests", "Requests waiting for KV-cache room",
                                    labels=["model"])
        budget = GaugeMetricFamily("mlxrpc_kv_budget_bytes", "KV bytes requests may reserve (--kv-cache-bytes)")
        for model_id, u in usage.items():
            for state in ("reserved", "in_use", "cached"):
                kv.add_metric([model_id, state], getattr(u, state))
            waiting.add_metric([model_id], u.waiting)
        budget.add_metric([], total)
        yield kv
        yield waiting
        yield budget
