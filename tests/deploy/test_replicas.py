"""Scaling out on loopback: three server processes, one client balancing over them, one replica stopped mid-load.

This is what the Kubernetes manifests do with a headless Service: the client
resolves every replica, balances calls round-robin, watches each replica's
health, and retries refusals. Stopping a replica with SIGTERM (a rolling
update) must not fail a single request.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bertserve_client import BertServeClient, BertServeError
from processes import ServerProcess
from prometheus_client.parser import text_string_to_metric_families

SENTIMENT = "bertserve.v1.SentimentService/ClassifySentiment"


def answered_by(server: ServerProcess) -> int:
    """Sentiment requests the replica answered, from its own metrics endpoint."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "bertserve_requests_total"
            and sample.labels.get("method") == SENTIMENT
            and sample.labels.get("code") == "OK"
        )
    )


def test_three_replicas_round_robin_and_one_stopped_mid_load_loses_nothing(
    tiny_checkpoint: Path, head_files: dict[str, Path]
) -> None:
    args = [
        "--model",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--head-file",
        f"sentiment={head_files['sentiment']}",
        "--shutdown-grace-seconds",
        "20",
    ]
    with ThreadPoolExecutor(3) as pool:
        replicas = list(pool.map(lambda _: ServerProcess(args), range(3)))
    try:
        for replica in replicas:
            replica.wait_until_serving()
        texts = [f"review {i}: a {'fine' if i % 2 else 'dull'} film" for i in range(8)]
        sent = answered = 0
        failures: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        with BertServeClient([r.address for r in replicas], timeout=30) as client:

            def load() -> None:
                nonlocal sent, answered
                while not stop.is_set():
                    with lock:
                        sent += 1
                    try:
                        results = client.sentiment(texts)
                        assert len(results) == len(texts) and all(r.label for r in results)
                        with lock:
                            answered += 1
                    except (BertServeError, AssertionError) as error:
                        with lock:
                            failures.append(repr(error))

            threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
            for thread in threads:
                thread.start()
            time.sleep(3.0)
            shares_before = [answered_by(r) for r in replicas]
            stopped = replicas[1]
            stopped.terminate()
            code = stopped.wait(timeout=60)
            answered_at_stop = answered
            time.sleep(2.0)
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        survivors_after = [answered_by(r) for r in (replicas[0], replicas[2])]
    finally:
        for replica in replicas:
            replica.__exit__(None, None, None)

    in_progress = stopped.wait_for_log(re.compile(r"draining: (\d+) requests in progress"), timeout=1)
    refused = stopped.log.count("code=UNAVAILABLE")  # DRAINING refusals, each retried on a survivor
    print(
        f"\n3 replicas, one stopped mid-load: sent {sent}, answered {answered}, failed {len(failures)}; "
        f"per replica before the stop {shares_before}; survivors after {survivors_after}; "
        f"at SIGTERM {in_progress.group(1) if in_progress else '?'} in progress on the stopped replica, "
        f"{refused} refused while draining and retried"
    )
    assert failures == [], failures[:5]
    assert sent == answered > 0
    assert code == 0, stopped.log
    assert "drained: all accepted requests answered" in stopped.log
    # Round-robin: every replica carried a real share of the load before the stop.
    assert min(shares_before) >= 0.15 * sum(shares_before), shares_before
    # After the stop the two survivors carried the load.
    assert answered > answered_at_stop
    assert sum(survivors_after) > shares_before[0] + shares_before[2]
