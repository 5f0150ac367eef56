"""Benchmark: what the production surface costs per request, side by side in one run.

Two servers on the real default encoder answer the same short sentiment
requests, one call at a time, alternating between them so both see the same
machine state:

- plain: no tokens, no metrics endpoint, request logs off (INFO);
- production: bearer-token check, metrics recorded and scraped, and a JSON
  request log line written for every call (DEBUG level, to /dev/null).

Both include what every request now pays (admission, request id, the
interceptors). Prints p50 / p90 latency and the difference. Usage:

    python benchmarks/bench_request_path.py [--requests 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import time
import urllib.request

from bertserve.background import BackgroundServer
from bertserve.config import LoggingConfig, MetricsConfig, SecurityConfig, ServerConfig
from bertserve.wire.logs import REQUEST_LOGGER, configure_logging
from bertserve_client import BertServeClient

TEXT = "the acting was honest and warm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()

    base = ServerConfig(device="cpu", port=0)
    production = dataclasses.replace(
        base, security=SecurityConfig(tokens=("bench-token-1",)), metrics=MetricsConfig(port=0)
    )
    with open(os.devnull, "w") as sink:
        configure_logging(LoggingConfig(level="INFO", format="json"), sink)
        with BackgroundServer(base) as plain_server, BackgroundServer(production) as prod_server:
            plain = BertServeClient(plain_server.address, retry=None)
            prod = BertServeClient(prod_server.address, token="bench-token-1", retry=None)
            for client in (plain, prod):  # warm both paths
                for _ in range(20):
                    client.sentiment(TEXT)
            request_logger = logging.getLogger(REQUEST_LOGGER)
            times: dict[str, list[float]] = {"plain": [], "production": []}
            for _ in range(args.requests):
                for name, client in (("plain", plain), ("production", prod)):
                    request_logger.setLevel(logging.DEBUG if name == "production" else logging.INFO)
                    started = time.perf_counter()
                    client.sentiment(TEXT)
                    times[name].append(1000 * (time.perf_counter() - started))
            scrape_url = f"http://127.0.0.1:{prod_server._server.metrics_port}/metrics"
            started = time.perf_counter()
            with urllib.request.urlopen(scrape_url, timeout=10) as response:
                size = len(response.read())
            scrape_ms = 1000 * (time.perf_counter() - started)
            plain.close()
            prod.close()

    def percentile(values: list[float], q: float) -> float:
        return sorted(values)[int(q * (len(values) - 1))]

    print(f"{args.requests} sequential sentiment calls per server, alternating (ms):")
    print(f"{'server':<12} {'p50':>7} {'p90':>7} {'mean':>7}")
    for name, values in times.items():
        print(
            f"{name:<12} {percentile(values, 0.5):7.2f} {percentile(values, 0.9):7.2f} {statistics.mean(values):7.2f}"
        )
    delta = percentile(times["production"], 0.5) - percentile(times["plain"], 0.5)
    print(f"production - plain, p50: {delta:+.2f} ms; one metrics scrape: {scrape_ms:.1f} ms ({size} bytes)")


if __name__ == "__main__":
    main()
