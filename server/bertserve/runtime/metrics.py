"""Prometheus metrics of one server, and the HTTP endpoint that serves them.

Every server owns its own registry, so several servers in one process (tests)
do not mix their numbers. Names follow the Prometheus conventions: a
``bertserve_`` prefix, base units (seconds, bytes), ``_total`` on counters.
Rates, such as tokens per second, are the PromQL ``rate()`` of a counter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bertserve.runtime.timing import HeadTiming

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class BatchCounts:
    """The batching counters, read live from the metrics registry (tests, benchmarks)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def _value(self, name: str, **labels: str) -> int:
        return int(self._registry.get_sample_value(name, labels) or 0)

    @property
    def forwards(self) -> int:
        return self._value("bertserve_encoder_forward_seconds_count")

    @property
    def rows(self) -> int:
        return self._value("bertserve_encoder_rows_total")

    @property
    def tokens(self) -> int:
        return self._value("bertserve_encoder_tokens_total", kind="real")

    @property
    def dropped_cancelled(self) -> int:
        return self._value("bertserve_dropped_rows_total", reason="cancelled")

    @property
    def dropped_expired(self) -> int:
        return self._value("bertserve_dropped_rows_total", reason="deadline")


class ServerMetrics:
    """The server's metrics; the batcher, the request interceptor and the runtime record into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._add_request_metrics()
        self._add_batch_metrics()
        self._add_state_metrics()

    def _add_request_metrics(self) -> None:
        registry = self.registry
        self.requests = Counter(
            "bertserve_requests",
            "Finished RPCs by method, head and gRPC status code.",
            ["method", "head", "code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "bertserve_request_duration_seconds",
            "End-to-end RPC latency in the server, by method and head.",
            ["method", "head"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "bertserve_rejected_requests",
            "Requests refused before any work; reason=queue_full, deadline_unreachable, too_many_requests, "
            "draining or loading.",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge("bertserve_requests_in_flight", "RPCs in progress.", registry=registry)

    def _add_batch_metrics(self) -> None:
        registry = self.registry
        self.queue_wait_seconds = Histogram(
            "bertserve_queue_wait_seconds",
            "Time an encoder row waited in the batch queue before its forward started.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.forward_seconds = Histogram(
            "bertserve_encoder_forward_seconds",
            "Time of one batch: the shared encoder forward and the heads on its rows.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "bertserve_batch_rows", "Rows per encoder batch.", buckets=_ROW_BUCKETS, registry=registry
        )
        self.batch_tokens = Histogram(
            "bertserve_batch_tokens",
            "Tokens per encoder batch (all real: the encoder computes no padding).",
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "bertserve_encoder_tokens",
            "Tokens through the encoder (kind=real: none are padded). rate() gives tokens per second.",
            ["kind"],
            registry=registry,
        )
        self.rows = Counter("bertserve_encoder_rows", "Rows through the encoder.", registry=registry)
        self.dropped_rows = Counter(
            "bertserve_dropped_rows",
            "Queued rows dropped before the encoder; reason=cancelled or deadline.",
            ["reason"],
            registry=registry,
        )
        self.queue_rows = Gauge("bertserve_queue_rows", "Rows waiting in the batch queue.", registry=registry)
        self._add_head_metrics()

    def _add_head_metrics(self) -> None:
        """The batch figures by head (label: the head's name, so as many series as heads)."""
        registry = self.registry
        self.head_rows = Counter(
            "bertserve_head_rows",
            "Encoder rows each head's module ran on (a row Analyze shares counts once per head reading it).",
            ["head"],
            registry=registry,
        )
        self.head_tokens = Counter(
            "bertserve_head_tokens", "Tokens of the rows each head's module ran on.", ["head"], registry=registry
        )
        self.head_forward_seconds = Histogram(
            "bertserve_head_forward_seconds",
            "Time of one head's module on its rows of one batch (after the shared encoder).",
            ["head"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def _add_state_metrics(self) -> None:
        registry = self.registry
        self.device_memory = Gauge(
            "bertserve_device_memory_bytes",
            "Device memory: kind=weights (encoder and heads' parameters), allocated and reserved (CUDA only).",
            ["device", "kind"],
            registry=registry,
        )
        self.ready = Gauge("bertserve_ready", "1 when the server is SERVING, else 0.", registry=registry)
        self.stuck_forwards = Counter(
            "bertserve_stuck_forwards",
            "Forwards that ran past server.forward_timeout_seconds, by where they were (encoder or a head's name).",
            ["stage"],
            registry=registry,
        )
        self.forward_stuck = Gauge(
            "bertserve_forward_stuck", "1 while a forward runs past its time limit, else 0.", registry=registry
        )
        self.info = Gauge(
            "bertserve_build_info",
            "Constant 1, labelled with the version and the encoder.",
            ["version", "model"],
            registry=registry,
        )

    def batch_counts(self) -> BatchCounts:
        """The batching counters (forwards, rows, tokens, dropped rows), read live."""
        return BatchCounts(self.registry)

    def record_batch(self, *, rows: int, tokens: int, seconds: float, heads: Sequence[HeadTiming] = ()) -> None:
        """One encoder batch finished; `heads` are its heads' runs on their rows."""
        self.forward_seconds.observe(seconds)
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(tokens)
        self.tokens.labels("real").inc(tokens)
        self.rows.inc(rows)
        for head in heads:
            self.head_rows.labels(head.head).inc(head.rows)
            self.head_tokens.labels(head.head).inc(head.tokens)
            self.head_forward_seconds.labels(head.head).observe(head.end - head.start)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsEndpoint:
    """``GET /metrics`` on its own port, on a daemon thread; optionally behind a bearer token."""

    def __init__(
        self,
        metrics: ServerMetrics,
        host: str,
        port: int,
        *,
        authorize: Callable[[str | None], bool] | None = None,
    ) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self._reply(404, b"not found: scrape /metrics\n", "text/plain")
                elif endpoint._authorize is not None and not endpoint._authorize(self.headers.get("Authorization")):
                    self._reply(401, b"this endpoint needs 'Authorization: Bearer <token>'\n", "text/plain")
                else:
                    self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", "Bearer")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
                pass

        self._authorize = authorize
        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(target=self._http.serve_forever, name="bertserve-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
