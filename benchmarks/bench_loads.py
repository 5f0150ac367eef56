"""Benchmark: long texts, several heads and memory, served vs the bare encoder, in one sitting.

`bertserve serve` runs in its own process on the real default encoder (all-MiniLM-L6-v2) with
its four default heads; this process drives it with closed-loop loads (the asyncio client, C
callers on one channel) and reads the server's Prometheus metrics before and after each load
(encoder forward seconds, rows, real tokens). One table per part, then a summary of ratios:

a. long text: question answering on 200-500-token contexts (the QA head reads windows of
   min(max_sequence_length, 384) tokens, so the longer contexts are split into overlapping
   windows, doc_stride 128) and sentiment on 200-500-token texts (under the encoder's 512-token
   max length, so no truncation; a probe checks that a longer text is refused unless the request
   sets truncate), at concurrency 1 and 8: req/s, latency, encoder rows and real tokens per request,
   the encoder's share of wall time, and the served tokens/s as a fraction of the ceiling (c).
b. mixed heads: the same kind of texts, each with one [MASK], through ONE Analyze call running
   sentiment and fill-mask on one encoder pass, against one call per head (the two calls sent
   together), alternating in rounds (4; --quick 2) so machine noise hits both ways alike (C=1 and 8;
   --quick: 8). Next-sentence reads text pairs and question-answering has no Analyze text fields, so
   neither can share a single-text pass (the script reads the heads' text_fields from ListHeads and
   says so). Reported: texts/s, latency and the server's encoder seconds each way, and their ratio.
c. the ceiling, measured before the server starts and after it stops: the bare encoder's tokens/s
   with `SharedEncoder.forward_packed` on the same rows as each load (batches of up to 8 rows), and
   the transformers BertModel padded forward at 32 x 64 tokens (as the peer kit's ceiling.py does).
   Fractions use the higher of the two measurements (what the machine showed it can do). The
   default heads own private encoder layers (ListHeads says how many: e.g. sentiment 3), which the
   server's forward runs on top of the shared ones, so each load is also compared with the ceiling
   scaled by shared / (shared + private) layers; the Analyze/separate ratio expected from the layer
   counts is printed next to the measured one.
d. resident memory: VmRSS and VmHWM (/proc/PID/status) of the server after warm-up and after the
   loads, against a process that only loads transformers BertModel from the default model and runs
   one forward (1 x 128 tokens); target: the served process under 1.25x.

All processes use torch's default thread count. Text lengths count the text's own tokens, without
[CLS]/[SEP]. Texts are seeded: reruns send the same requests.

Usage:
    python benchmarks/bench_loads.py            # full run, ~4 min on 2 idle cores (up to ~8 when busy)
    python benchmarks/bench_loads.py --quick    # smoke run, ~1 min
Options: --n1 N / --n8 N (requests per load at C=1 / C=8), --rounds R (part b), --ceiling-s S
(seconds per ceiling measurement), --server-arg=ARG (repeatable, extra `bertserve serve` arguments),
--server-log FILE. The 1-minute load average is printed at the start and the end: anything else
running on the machine skews every number (compare only within one run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertserve.runtime.memory import IDLE_TRIM_SECONDS

CONCURRENCY = 8
QA_DOC_STRIDE = 128
QA_QUESTION = "Where was the old key hidden?"
QA_PLACES = ("lisbon", "the north tower", "a blue box", "the kitchen drawer", "oslo", "the garden shed")
CEILING_BATCH_ROWS = 8
ANALYZE_HEADS = ("sentiment", "fill-mask")
RSS_TARGET = 1.25

WORDS = """the a an this that these those my your our their his her its one two three some many few
movie film story plot actor actress director scene music score script ending camera cast character
book song show game meal service hotel room staff food price product phone screen battery delivery
was is were are be been felt seemed looked sounded became remained stayed turned
good great bad awful wonderful terrible boring exciting brilliant dull funny sad beautiful ugly
slow fast cheap expensive friendly rude clean dirty loud quiet warm cold fresh stale perfect broken
very really quite rather too so extremely barely hardly almost truly simply just never always often
and but or because although while since until after before when if though yet so
i we you they he she it people everyone nobody someone friends family kids critics fans
loved hated liked enjoyed watched read bought tried ordered returned recommended expected wanted
in on at with without about from into over under through during between against for of to by
time day night week year hour minute moment end start middle part half rest
not no more less most least much little enough again still even also only
cinematography soundtrack screenplay underwhelming breathtaking unforgettable predictable
disappointing atmosphere performances storytelling melodramatic overlong heartfelt""".split()


# ---------------------------------------------------------------------------------------------
# Pure helpers: texts, metrics parsing, /proc parsing, percentiles (tests/benchmarks/test_bench_loads.py)
# ---------------------------------------------------------------------------------------------


def long_texts(
    count: int,
    low: int,
    high: int,
    tokens: Callable[[str], int],
    *,
    seed: int = 0,
    extras: Callable[[random.Random], Sequence[str]] | None = None,
) -> list[str]:
    """`count` seeded English-ish texts of `low`..`high` tokens each, as `tokens(text)` counts them.

    `tokens` counts a text's tokens without special tokens. Texts are sentences of 6-18 words
    from a fixed word list. `extras(rng)` gives phrases to put into each text at sentence
    boundaries (e.g. a [MASK] or a fact), counted in its length. Every text is checked with
    `tokens` on the whole text; a WordPiece tokenizer counts a text as the sum of its
    whitespace-separated words, so the check passes on the first try.
    """
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high; got {low}, {high}")
    rng = random.Random(seed)
    cost: dict[str, int] = {}

    def word_cost(word: str) -> int:
        if word not in cost:
            cost[word] = tokens(word)
        return cost[word]

    out: list[str] = []
    while len(out) < count:
        for _attempt in range(20):
            target = rng.randint(low, high)
            phrases = list(extras(rng)) if extras else []
            budget = target - sum(tokens(phrase) for phrase in phrases)
            words: list[str] = []
            used, left_in_sentence = 0, 0
            while True:
                left_in_sentence = left_in_sentence or rng.randint(6, 18)
                word = rng.choice(WORDS) + ("." if left_in_sentence == 1 else "")
                if used + word_cost(word) > budget:
                    break
                words.append(word)
                used += word_cost(word)
                left_in_sentence -= 1
            boundaries = [0] + [i + 1 for i, word in enumerate(words) if word.endswith(".")]
            for phrase in phrases:
                words.insert(rng.choice(boundaries), phrase)
            text = " ".join(words)
            text = text[:1].upper() + text[1:]
            if low <= tokens(text) <= high:
                out.append(text)
                break
        else:
            raise RuntimeError(f"could not make a text of {low}-{high} tokens with this tokenizer")
    return out


def with_mask(mask_token: str) -> Callable[[random.Random], Sequence[str]]:
    """`long_texts` extras: one mask token per text (fill-mask needs one)."""
    return lambda rng: [mask_token]


def qa_fact(rng: random.Random) -> Sequence[str]:
    """`long_texts` extras: the sentence that answers QA_QUESTION."""
    return [f"The old key was hidden in {rng.choice(QA_PLACES)}."]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPE = re.compile(r"\\(.)")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition -> {(sample name, sorted label pairs): value}."""
    samples: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        name, labels_text, value = match.groups()
        labels = []
        for label in _LABEL.finditer(labels_text or ""):
            value_text = _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), label.group(2))
            labels.append((label.group(1), value_text))
        samples[(name, tuple(sorted(labels)))] = float(value)
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0.0 when there are none)."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in samples.items() if sample == name and wanted <= set(pairs))


def parse_proc_status(text: str) -> dict[str, int]:
    """/proc/PID/status -> {field: bytes} for the memory fields given in kB (VmRSS, VmHWM, ...)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) * 1024
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank on the sorted values), nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def private_layers(reason: str) -> int:
    """Private encoder layers a head runs on top of the shared ones, from its ListHeads reason
    (e.g. "head file .../sentiment.safetensors (3 private layer(s), mean + linear)"); 0 if none."""
    match = re.search(r"(\d+) private layer", reason)
    return int(match.group(1)) if match else 0


# ---------------------------------------------------------------------------------------------
# The server process and its metrics
# ---------------------------------------------------------------------------------------------

FORWARD_SUM = "bertserve_encoder_forward_seconds_sum"
FORWARD_COUNT = "bertserve_encoder_forward_seconds_count"
TOKENS = "bertserve_encoder_tokens_total"
ROWS = "bertserve_encoder_rows_total"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def scrape(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            return parse_metrics(reply.read().decode())

    def memory(self) -> dict[str, int]:
        return parse_proc_status(Path(f"/proc/{self.process.pid}/status").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(extra: Sequence[str], log_path: str) -> Server:
    port, metrics_port = free_port(), free_port()
    executable = Path(sys.executable).with_name("bertserve")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "bertserve"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port), *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = open(log_path, "wb")  # noqa: SIM115 (lives as long as the server)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Server(process, port, metrics_port)


async def wait_ready(client: Any, server: Server, log_path: str, timeout: float = 300.0) -> float:
    """Poll the health service until SERVING; seconds it took. Fails fast when the server exits."""
    from bertserve_client.errors import UnavailableError

    started = time.monotonic()
    while True:
        try:
            await client.wait_until_ready(timeout=2.0)
            return time.monotonic() - started
        except UnavailableError:
            if server.process.poll() is not None:
                tail = Path(log_path).read_text(errors="replace").splitlines()[-10:]
                raise RuntimeError(f"bertserve exited with {server.process.returncode}:\n" + "\n".join(tail)) from None
            if time.monotonic() - started > timeout:
                raise


def stop_server(server: Server) -> int | None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    return server.process.returncode


# ---------------------------------------------------------------------------------------------
# Closed-loop loads
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    name: str
    concurrency: int
    sent: int
    latencies: list[float]
    errors: int
    first_error: str | None
    wall_s: float
    forward_s: float
    forwards: float
    rows: float
    real_tokens: float
    rows_ceiling: str = ""  # which row set of the ceiling this load is compared with
    head_layers: float = 0.0  # private layers of the heads reading a row, mean over the load's rows
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    @property
    def served_tokens_per_s(self) -> float:
        return self.real_tokens / self.wall_s if self.wall_s else 0.0


async def closed_loop(
    call: Callable[[int], Awaitable[object]], indices: Iterable[int], concurrency: int
) -> tuple[list[float], int, str | None, float]:
    """`concurrency` callers send call(i) for each index once; (latencies s, errors, first error, wall s)."""
    latencies: list[float] = []
    errors = 0
    first: str | None = None
    it = iter(indices)

    async def caller() -> None:
        nonlocal errors, first
        for i in it:  # shared iterator: each index is sent once
            started = time.perf_counter()
            try:
                await call(i)
            except Exception as error:  # noqa: BLE001 - every failure is counted, the load goes on
                errors += 1
                first = first or f"{type(error).__name__}: {str(error)[:160]}"
            else:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, errors, first, time.perf_counter() - started


async def run_load(
    server: Server,
    name: str,
    call: Callable[[int], Awaitable[object]],
    *,
    n: int,
    concurrency: int,
    pool: int,
    rows_ceiling: str,
    quiet: bool = False,
    warmup: bool = True,
) -> LoadResult:
    """Warm up with `concurrency` calls, then send `n` calls cycling over a pool of `pool` inputs."""
    if warmup:
        await closed_loop(call, (i % pool for i in range(concurrency)), concurrency)
    before = await asyncio.to_thread(server.scrape)
    latencies, errors, first, wall = await closed_loop(
        call, (i % pool for i in range(concurrency, concurrency + n)), concurrency
    )
    after = await asyncio.to_thread(server.scrape)

    def delta(metric_name: str, **labels: str) -> float:
        return metric(after, metric_name, **labels) - metric(before, metric_name, **labels)

    result = LoadResult(
        name=name,
        concurrency=concurrency,
        sent=n,
        latencies=latencies,
        errors=errors,
        first_error=first,
        wall_s=wall,
        forward_s=delta(FORWARD_SUM),
        forwards=delta(FORWARD_COUNT),
        rows=delta(ROWS),
        real_tokens=delta(TOKENS, kind="real"),
        rows_ceiling=rows_ceiling,
    )
    if not quiet:
        _progress(result)
    return result


def _progress(result: LoadResult) -> None:
    print(
        f"  {result.name} C={result.concurrency}: {result.ok}/{result.sent} ok, {result.rps:.1f}/s, "
        f"p50 {1000 * percentile(result.latencies, 0.5):.0f} ms"
        + (f", {result.errors} errors, first: {result.first_error}" if result.errors else ""),
        flush=True,
    )


def combine(parts: Sequence[LoadResult]) -> LoadResult:
    """Several chunks of one load (run alternating with another load) as one result."""
    first = parts[0]
    errors = sum(p.errors for p in parts)
    return LoadResult(
        name=first.name,
        concurrency=first.concurrency,
        sent=sum(p.sent for p in parts),
        latencies=[x for p in parts for x in p.latencies],
        errors=errors,
        first_error=next((p.first_error for p in parts if p.first_error), None),
        wall_s=sum(p.wall_s for p in parts),
        forward_s=sum(p.forward_s for p in parts),
        forwards=sum(p.forwards for p in parts),
        rows=sum(p.rows for p in parts),
        real_tokens=sum(p.real_tokens for p in parts),
        rows_ceiling=first.rows_ceiling,
    )


# ---------------------------------------------------------------------------------------------
# The ceiling (in this process, while no server runs) and the encoder-only process
# ---------------------------------------------------------------------------------------------


def measure_ceiling(encoder: Any, bert: Any, row_sets: Mapping[str, Sequence[Any]], min_s: float) -> dict[str, float]:
    """Tokens/s of the bare encoder: forward_packed on each row set, BertModel at 32 x 64 padded.

    A row set runs in batches of up to 8 rows, cycling over its batches for at least `min_s`
    seconds (and at least 3 batches) after one warm-up batch; the rate is the timed tokens over
    the timed seconds. The padded forward's rate uses the median call, as the peer kit's ceiling.py.
    """
    import torch

    out: dict[str, float] = {}
    for name, rows in row_sets.items():
        batches = [rows[i : i + CEILING_BATCH_ROWS] for i in range(0, len(rows), CEILING_BATCH_ROWS)]
        encoder.forward_packed(batches[0])
        tokens, seconds, calls = 0, 0.0, 0
        while seconds < min_s or calls < 3:
            batch = batches[calls % len(batches)]
            started = time.perf_counter()
            encoder.forward_packed(batch)
            seconds += time.perf_counter() - started
            tokens += sum(len(row) for row in batch)
            calls += 1
        out[name] = tokens / seconds
    ids = torch.randint(1000, 20000, (32, 64), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    times: list[float] = []
    with torch.inference_mode():
        bert(input_ids=ids, attention_mask=mask)
        while sum(times) < min_s or len(times) < 3:
            started = time.perf_counter()
            bert(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - started)
    out["padded 32x64"] = 32 * 64 / statistics.median(times)
    return out


ENCODER_ONLY = """
import json, sys, torch
from transformers import BertModel
model = BertModel.from_pretrained(sys.argv[1]).eval()
ids = torch.randint(1000, 20000, (1, 128), generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
status = open("/proc/self/status").read().splitlines()
print(json.dumps({k: int(v.split()[0]) * 1024 for k, _, v in (s.partition(":") for s in status)
                  if k in ("VmRSS", "VmHWM")}))
"""


def encoder_only_memory(model_path: str) -> dict[str, int]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", ENCODER_ONLY, model_path], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Workload:
    sentiment_texts: list[str]
    masked_texts: list[str]
    qa_contexts: list[str]
    row_sets: dict[str, list[Any]]  # ceiling name -> EncodedRow list, as the server builds them
    qa_windows: list[int]


def make_workload(encoder: Any, pool: int) -> Workload:
    from bertserve.plugin import EncodedRow, context_room, encode, tokenize_windows
    from bertserve_heads.question_answering import MAX_WINDOW

    tokenizer = encoder.tokenizer

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    sentiment = long_texts(pool, 200, 500, count, seed=1)
    masked = long_texts(pool, 200, 500, count, seed=2, extras=with_mask(tokenizer.mask_token))
    contexts = long_texts(pool, 200, 500, count, seed=3, extras=qa_fact)
    limit = encoder.max_sequence_length

    def rows(texts: Sequence[str]) -> list[Any]:
        return [encode(tokenizer, text, max_length=limit, truncate=False) for text in texts]

    window = min(limit, MAX_WINDOW)
    stride = min(QA_DOC_STRIDE, window // 2, context_room(tokenizer, QA_QUESTION, window=window) - 1)
    qa_rows, windows = [], []
    for context in contexts:
        encoding = tokenize_windows(tokenizer, QA_QUESTION, context, window=window, stride=stride)
        ids, types = encoding["input_ids"], encoding["token_type_ids"]
        windows.append(len(ids))
        qa_rows += [EncodedRow(input_ids=list(i), token_type_ids=list(t)) for i, t in zip(ids, types)]
    return Workload(
        sentiment_texts=sentiment,
        masked_texts=masked,
        qa_contexts=contexts,
        row_sets={"sentiment": rows(sentiment), "masked": rows(masked), "qa": qa_rows},
        qa_windows=windows,
    )


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


_NUMBER = re.compile(r"^[-+]?[\d.]+(?:[%x]|/\d+)?$")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(_NUMBER.match(row[i]) for row in cells[1:]) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        line = "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric))
        print(("  " + line).rstrip())
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))


async def drive(args: argparse.Namespace, workload: Workload, server: Server, log_path: str) -> dict[str, Any]:
    """Everything that needs the server: readiness, probes, parts a and b, its memory."""
    from bertserve_client import AsyncBertServeClient
    from bertserve_client.errors import BertServeError

    found: dict[str, Any] = {}
    async with AsyncBertServeClient(server.target, timeout=300.0) as client:
        found["ready_s"] = await wait_ready(client, server, log_path)
        found["memory_ready"] = server.memory()
        info = await client.server_info()
        found["info"] = info
        heads = await client.list_heads()
        found["heads"] = heads
        found["text_fields"] = {head.name: tuple(head.text_fields) for head in heads}
        private = found["private_layers"] = {head.name: private_layers(head.reason) for head in heads}
        print(
            f"server up in {found['ready_s']:.0f} s: {info.model_type} on {info.device} ({info.dtype}), "
            f"max_sequence_length {info.max_sequence_length}, {info.num_layers} layers; heads' private layers: "
            f"{private}, Analyze text fields: {found['text_fields']}",
            flush=True,
        )
        over = " ".join(["word"] * (info.max_sequence_length + 50))
        try:
            await client.sentiment(over)
            found["over_long"] = "accepted without truncate"
        except BertServeError as error:
            found["over_long"] = f"refused without truncate ({type(error).__name__})"
        await client.sentiment(over, truncate=True)
        found["over_long"] += "; accepted with truncate=True"

        s_texts, m_texts, contexts = workload.sentiment_texts, workload.masked_texts, workload.qa_contexts
        pool = len(s_texts)
        loads: list[LoadResult] = []
        print("a. long text", flush=True)
        for concurrency, n in ((1, args.n1), (CONCURRENCY, args.n8)):

            async def qa(i: int) -> object:
                return await client.answer(QA_QUESTION, contexts[i], doc_stride=QA_DOC_STRIDE)

            async def sentiment(i: int) -> object:
                return await client.sentiment(s_texts[i])

            loads.append(await run_load(server, "qa", qa, n=n, concurrency=concurrency, pool=pool, rows_ceiling="qa"))
            loads[-1].head_layers = private["question-answering"]
            loads.append(
                await run_load(
                    server, "sentiment", sentiment, n=n, concurrency=concurrency, pool=pool, rows_ceiling="sentiment"
                )
            )
            loads[-1].head_layers = private["sentiment"]
        found["loads"] = loads

        print(f"b. mixed heads ({args.rounds} alternating rounds per way)", flush=True)
        mixed: list[LoadResult] = []
        levels = [(CONCURRENCY, args.n8)] if args.quick else [(1, args.n1), (CONCURRENCY, args.n8)]

        async def analyze(i: int) -> object:
            return await client.analyze(m_texts[i], list(ANALYZE_HEADS))

        async def separate(i: int) -> object:
            return await asyncio.gather(client.sentiment(m_texts[i]), client.fill_mask(m_texts[i]))

        for concurrency, n in levels:
            chunks: dict[str, list[LoadResult]] = {"Analyze": [], "separate": []}
            for round_index in range(args.rounds):
                order = [("Analyze", analyze), ("separate", separate)]
                for name, call in order if round_index % 2 == 0 else order[::-1]:
                    chunks[name].append(
                        await run_load(
                            server,
                            name,
                            call,
                            n=max(1, n // args.rounds),
                            concurrency=concurrency,
                            pool=pool,
                            rows_ceiling="masked",
                            quiet=True,
                            warmup=round_index == 0,
                        )
                    )
            both = sum(private[head] for head in ANALYZE_HEADS)
            for name, parts in chunks.items():
                result = combine(parts)
                result.head_layers = both if name == "Analyze" else both / len(ANALYZE_HEADS)
                mixed.append(result)
                _progress(result)
        found["mixed"] = mixed
        found["memory_loaded"] = server.memory()
        time.sleep(IDLE_TRIM_SECONDS + 1.5)  # the server gives freed buffers back once idle
        found["memory_idle"] = server.memory()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N and short ceilings: a smoke run of ~1 min")
    parser.add_argument("--n1", type=int, help="requests per load at C=1 (default 64; --quick 6)")
    parser.add_argument("--n8", type=int, help="requests per load at C=8 (default 240; --quick 16)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per way in part b (default 4; --quick 2)")
    parser.add_argument("--ceiling-s", type=float, help="seconds per ceiling measurement (default 3; --quick 0.5)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `bertserve serve` argument")
    parser.add_argument("--server-log", help="keep the server's log in this file")
    args = parser.parse_args()
    args.n1 = args.n1 or (6 if args.quick else 64)
    args.n8 = args.n8 or (16 if args.quick else 240)
    args.ceiling_s = args.ceiling_s or (0.5 if args.quick else 3.0)
    args.rounds = args.rounds or (2 if args.quick else 4)
    pool = 16 if args.quick else 64

    import torch
    from bertserve.model.default_model import default_model_path
    from bertserve.model.encoder import SharedEncoder
    from transformers import BertModel

    started = time.monotonic()
    load_start = os.getloadavg()[0]
    model_path = str(default_model_path())
    encoder = SharedEncoder.load(model_path, device="cpu")
    bert = BertModel.from_pretrained(model_path).eval()
    workload = make_workload(encoder, pool)
    print(
        f"bench_loads: {model_path}, torch threads {torch.get_num_threads()}, {len(workload.sentiment_texts)} texts "
        f"of 200-500 tokens per load, QA windows per context: {statistics.mean(workload.qa_windows):.2f} "
        f"(max {max(workload.qa_windows)}); N={args.n1} at C=1, N={args.n8} at C={CONCURRENCY}",
        flush=True,
    )
    print("c. ceiling (start)", flush=True)
    ceiling_start = measure_ceiling(encoder, bert, workload.row_sets, args.ceiling_s)

    with tempfile.TemporaryDirectory() as folder:
        log_path = args.server_log or str(Path(folder) / "server.log")
        server = start_server(args.server_arg, log_path)
        try:
            found = asyncio.run(drive(args, workload, server, log_path))
        finally:
            exit_code = stop_server(server)
    print("c. ceiling (end)", flush=True)
    ceiling_end = measure_ceiling(encoder, bert, workload.row_sets, args.ceiling_s)
    del encoder, bert
    encoder_only = encoder_only_memory(model_path)
    found["load_average"] = (load_start, os.getloadavg()[0])
    report(args, workload, found, ceiling_start, ceiling_end, encoder_only, exit_code, time.monotonic() - started)


def report(
    args: argparse.Namespace,
    workload: Workload,
    found: dict[str, Any],
    ceiling_start: dict[str, float],
    ceiling_end: dict[str, float],
    encoder_only: dict[str, int],
    exit_code: int | None,
    elapsed: float,
) -> None:
    info = found["info"]
    layers = info.num_layers
    ceiling = {name: max(ceiling_start[name], ceiling_end[name]) for name in ceiling_start}
    padded = ceiling["padded 32x64"]

    def with_heads(load: LoadResult) -> float:
        """The packed ceiling on the load's rows, scaled by the shared layers over all layers a row goes
        through (the heads' private layers run on top of the shared encoder, in the server's forward)."""
        return ceiling[load.rows_ceiling] * layers / (layers + load.head_layers)

    def busy(load: LoadResult) -> float:
        return load.forward_s / load.wall_s if load.wall_s else 0.0

    print_table(
        f"heads of the server ({layers} shared encoder layers; a head with private layers runs them on top, "
        "on its own rows)",
        ["head", "Analyze text fields", "private layers", "weights"],
        [
            [
                head.name,
                ", ".join(head.text_fields) or "(none: not in Analyze)",
                found["private_layers"][head.name],
                re.sub(r"head file (\S+)", lambda m: f"head file {Path(m.group(1)).name}", head.reason),
            ]
            for head in found["heads"]
        ],
    )
    print_table(
        "c. ceiling: bare encoder tokens/s in this process (no server running), start / end / used (higher)",
        ["rows", "mean tokens/row", "start tok/s", "end tok/s", "used tok/s"],
        [
            [
                f"forward_packed, {name} rows" if name in workload.row_sets else f"BertModel {name}",
                f"{statistics.mean(len(r) for r in workload.row_sets[name]):.0f}" if name in workload.row_sets else 64,
                f"{ceiling_start[name]:.0f}",
                f"{ceiling_end[name]:.0f}",
                f"{ceiling[name]:.0f}",
            ]
            for name in ceiling
        ],
    )

    def load_row(load: LoadResult) -> list[object]:
        per = max(load.ok, 1)
        return [
            load.name,
            load.concurrency,
            f"{load.ok}/{load.sent}",
            f"{load.rps:.2f}",
            f"{1000 * percentile(load.latencies, 0.5):.0f}",
            f"{1000 * percentile(load.latencies, 0.9):.0f}",
            f"{load.rows / per:.2f}",
            f"{load.real_tokens / per:.0f}",
            f"{load.rows / max(load.forwards, 1):.1f}",
            _pct(busy(load)),
            f"{load.served_tokens_per_s:.0f}",
            _pct(load.served_tokens_per_s / ceiling[load.rows_ceiling]),
            _pct(load.served_tokens_per_s / with_heads(load)),
            _pct(load.served_tokens_per_s / padded),
        ]

    header = ["load", "C", "ok/N", "req/s", "p50 ms", "p90 ms", "rows/req", "tok/req", "rows/fwd", "enc busy"]
    header += ["served tok/s", "of packed ceiling", "of it + head layers", "of padded 32x64"]
    loads: list[LoadResult] = found["loads"]
    print_table(
        f"a. long text (200-500 tokens; max_sequence_length {info.max_sequence_length}, QA window "
        f"{min(info.max_sequence_length, 384)}, doc_stride {QA_DOC_STRIDE}; over-long text: {found['over_long']})",
        header,
        [load_row(load) for load in loads],
    )

    mixed: list[LoadResult] = found["mixed"]
    fields = found["text_fields"]
    rows = []
    for load in mixed:
        per = max(load.ok, 1)
        rows.append(
            [
                load.name,
                load.concurrency,
                f"{load.ok}/{load.sent}",
                f"{load.rps:.2f}",
                f"{1000 * percentile(load.latencies, 0.5):.0f}",
                f"{load.forward_s:.2f}",
                f"{1000 * load.forward_s / per:.0f}",
                f"{load.rows / per:.2f}",
                f"{load.real_tokens / per:.0f}",
                _pct(busy(load)),
                f"{load.served_tokens_per_s:.0f}",
                _pct(load.served_tokens_per_s / ceiling[load.rows_ceiling]),
                _pct(load.served_tokens_per_s / with_heads(load)),
            ]
        )
    pair_heads = sorted(name for name, f in fields.items() if len(f) == 2)
    no_text = sorted(name for name, f in fields.items() if not f)
    print_table(
        f"b. mixed heads: Analyze({', '.join(ANALYZE_HEADS)}) vs one call per head, same texts with one mask each; "
        f"pair heads {pair_heads} and heads without text fields {no_text} cannot share a single-text pass",
        ["way", "C", "ok/N", "texts/s", "p50 ms", "encoder s", "enc ms/text", "rows/text", "tok/text", "enc busy"]
        + ["served tok/s", "of packed ceiling", "of it + head layers"],
        rows,
    )
    private = sum(found["private_layers"][head] for head in ANALYZE_HEADS)
    expected = (layers + private) / (len(ANALYZE_HEADS) * layers + private)
    ratios = []
    for analyze, separate in zip(mixed[0::2], mixed[1::2]):
        a = analyze.forward_s / max(analyze.ok, 1)
        s = separate.forward_s / max(separate.ok, 1)
        ratios.append((analyze.concurrency, a / s if s else float("nan"), analyze.rps / separate.rps))

    memory = [
        ("bertserve serve, 4 default heads, after warm-up", found["memory_ready"]),
        ("bertserve serve, after the loads", found["memory_loaded"]),
        (f"bertserve serve, then idle {IDLE_TRIM_SECONDS + 1.5:.1f} s", found["memory_idle"]),
        ("encoder only (BertModel, one forward of 1 x 128)", encoder_only),
    ]
    print_table(
        "d. resident memory (MiB)",
        ["process", "VmRSS", "VmHWM", "VmRSS / encoder only", "VmHWM / encoder only"],
        [
            [
                name,
                _mib(m["VmRSS"]),
                _mib(m["VmHWM"]),
                f"{m['VmRSS'] / encoder_only['VmRSS']:.2f}x",
                f"{m['VmHWM'] / encoder_only['VmHWM']:.2f}x",
            ]
            for name, m in memory
        ],
    )

    print("\nsummary")
    for load in loads:
        print(
            f"  {load.name:<9} C={load.concurrency}: served {load.served_tokens_per_s:.0f} tok/s = "
            f"{_pct(load.served_tokens_per_s / ceiling[load.rows_ceiling])} of the packed ceiling on its rows "
            f"({_pct(load.served_tokens_per_s / with_heads(load))} counting the head's {load.head_layers:g} private "
            f"layers), {_pct(load.served_tokens_per_s / padded)} of the padded 32x64 one; encoder busy "
            f"{_pct(busy(load))} of the wall time"
        )
    for concurrency, ratio, speed in ratios:
        print(
            f"  Analyze / separate calls, C={concurrency}: encoder seconds per text {ratio:.2f}x "
            f"({'< 1: PASS' if ratio < 1 else '>= 1: MISS'}; {expected:.2f}x from layer counts: "
            f"{layers}+{private} vs {len(ANALYZE_HEADS)}x{layers}+{private}), texts/s {speed:.2f}x"
        )
    for what, key in (
        ("after warm-up", "memory_ready"),
        ("after the loads", "memory_loaded"),
        ("after the loads and idle", "memory_idle"),
    ):
        ratio = found[key]["VmRSS"] / encoder_only["VmRSS"]
        verdict = "PASS" if ratio < RSS_TARGET else "MISS"
        print(f"  RSS {what} / encoder only: {ratio:.2f}x (target < {RSS_TARGET}x: {verdict})")
    peak = found["memory_loaded"]["VmHWM"] / encoder_only["VmHWM"]
    print(f"  peak RSS (VmHWM) / encoder only's peak: {peak:.2f}x")
    before, after = found["load_average"]
    print(
        f"  server exit code after SIGTERM: {exit_code}; whole run {elapsed:.0f} s; "
        f"1-min load average {before:.2f} at the start, {after:.2f} at the end (this run alone adds ~2)"
    )


if __name__ == "__main__":
    main()
