"""Benchmark: ``--dtype int8`` against float32 on the CPU, with the real default encoder and heads.

Two measurements, side by side in one run:

1. Encoder throughput: the default encoder (all-MiniLM-L6-v2) loaded twice
   in-process, float32 and int8, runs `SharedEncoder.forward_packed` on the
   same batches of tokenized sentences, after one untimed pass, one batch of
   each alternating (this machine is noisy; alternating makes the ratio
   robust). Prints tokens/s of
   each, their ratio and the mean cosine similarity of the last hidden states.
2. Agreement: an in-process server (`BackgroundServer`, CPU, the four default
   heads) per dtype, both up at once, answers the same inputs through the
   Python client, 16 inputs a call, calls alternating between the servers;
   for every head the share of inputs where int8 gives the float32 answer,
   the float32 answer's mean probability (low: the answers are unsure), the
   mean absolute difference of that probability between the two, and the
   seconds each server took for that head (whole requests, sequential: the
   heads' own private layers stay float32, see `bertserve.nn.quantize`).

Inputs are made offline and deterministically (seed 0) from the peer kit's
seeded pool of 512 sentences of 5-100 words (``../shared/peers/sentences.py``
when it exists, else a seeded word-list stand-in); they are word salad, not
natural text, so more of them sit near a head's decision boundary:

- sentiment: the sentences; agreement = same label.
- fill-mask: each sentence with one random word replaced by ``[MASK]``;
  agreement = same top-1 token.
- next-sentence: (sentence i, sentence i+1) for even i, (sentence i, a random
  sentence) for odd i; agreement = same ``is_next`` decision.
- question-answering: context = sentences i, i+1, i+2; question = one of them
  (chosen at random) with one random word replaced by "what", ending in "?";
  agreement = exact match of the best answer's text (and no-answer flag).

Usage:

    python benchmarks/bench_int8.py [--n 200] [--encoder-rows 128] [--batch-rows 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bertserve.app import load_encoder
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncodedRow
from bertserve.plugin.text import encode
from bertserve_client import BertServeClient

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"
WORDS = (
    "the movie was a great fun and the plot kept me on the edge of my seat though some scenes dragged "
    "service food staff slow cold rude friendly warm wonderful terrible boring loved hated really never"
).split()
DTYPES = ("float32", "int8")
CHUNK = 16


@dataclass
class HeadRun:
    """One head's comparable answers from one server, and the seconds they took."""

    answers: list[Any]
    probabilities: list[float]
    seconds: float


def sentences(count: int = 512) -> list[str]:
    """The peer kit's seeded pool of 5-100-word sentences, or a seeded stand-in."""
    if (PEERS / "sentences.py").exists():
        sys.path.insert(0, str(PEERS))
        from sentences import make_sentences

        return list(make_sentences())[:count]
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 100))).capitalize() + "." for _ in range(count)]


def replace_word(sentence: str, rng: random.Random, by: str) -> str:
    """`sentence` with one random word (never the final punctuation) replaced by `by`."""
    words = sentence.rstrip(".").split()
    words[rng.randrange(len(words))] = by
    return " ".join(words)


def make_inputs(pool: Sequence[str], n: int, seed: int = 0) -> dict[str, list[Any]]:
    """`n` inputs per head, built from `pool` as the module docstring describes."""
    rng = random.Random(seed)
    texts = [pool[i % len(pool)] for i in range(n)]
    masked = [replace_word(text, rng, "[MASK]") + "." for text in texts]
    pairs = [(pool[i % len(pool)], pool[(i + 1) % len(pool)] if i % 2 == 0 else rng.choice(pool)) for i in range(n)]
    questions = []
    for i in range(n):
        context = [pool[(i + k) % len(pool)] for k in range(3)]
        questions.append((replace_word(rng.choice(context), rng, "what") + "?", " ".join(context)))
    return {"sentiment": texts, "fill-mask": masked, "next-sentence": pairs, "question-answering": questions}


def time_forward(encoder: SharedEncoder, batch: Sequence[EncodedRow]) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    output = encoder.forward_packed(batch).sequence_output
    return time.perf_counter() - started, output


def encoder_throughput(pool: Sequence[str], rows: int, batch_rows: int, repeats: int) -> dict[str, float]:
    """Tokens/s of the float32 and int8 encoders on the same batches, alternating, and their agreement."""
    encoders = {dtype: load_encoder(ServerConfig(device="cpu", dtype=dtype)) for dtype in DTYPES}
    tokenizer, limit = encoders["float32"].tokenizer, encoders["float32"].max_sequence_length
    encoded = [encode(tokenizer, pool[i % len(pool)], max_length=limit, truncate=True) for i in range(rows)]
    batches = [encoded[i : i + batch_rows] for i in range(0, rows, batch_rows)]
    for batch in batches:  # warm-up: one untimed pass (the first forwards of a process run slow)
        for encoder in encoders.values():
            encoder.forward_packed(batch)
    seconds = dict.fromkeys(DTYPES, 0.0)
    cosines: list[float] = []
    for _ in range(repeats):
        for batch in batches:
            (t32, out32), (t8, out8) = (time_forward(encoders[dtype], batch) for dtype in DTYPES)
            seconds["float32"] += t32
            seconds["int8"] += t8
            cosines.append(torch.nn.functional.cosine_similarity(out32, out8, dim=-1).mean().item())
    tokens = repeats * sum(len(row) for row in encoded)
    return {
        "float32": tokens / seconds["float32"],
        "int8": tokens / seconds["int8"],
        "tokens": float(tokens),
        "cosine": statistics.fmean(cosines),
    }


def head_calls(client: BertServeClient) -> dict[str, Callable[[list[Any]], list[Any]]]:
    """For each head, a call answering a list of its inputs."""
    return {
        "sentiment": lambda chunk: client.sentiment(chunk),
        "fill-mask": lambda chunk: client.fill_mask(chunk, top_k=1),
        "next-sentence": lambda chunk: client.next_sentence(chunk),
        "question-answering": lambda chunk: client.answer(chunk),
    }


def timed(call: Callable[[list[Any]], list[Any]], chunk: list[Any]) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    results = call(chunk)
    return time.perf_counter() - started, results


def run_heads(clients: dict[str, BertServeClient], inputs: dict[str, list[Any]]) -> dict[str, dict[str, HeadRun]]:
    """Every head's answers from every server, chunk by chunk alternating between the servers."""
    calls = {dtype: head_calls(client) for dtype, client in clients.items()}
    runs: dict[str, dict[str, HeadRun]] = {dtype: {} for dtype in clients}
    for head, items in inputs.items():
        for dtype in clients:
            calls[dtype][head](items[:2])  # warm-up
            runs[dtype][head] = HeadRun([], [], 0.0)
        for start in range(0, len(items), CHUNK):
            for dtype in clients:
                seconds, results = timed(calls[dtype][head], list(items[start : start + CHUNK]))
                run = runs[dtype][head]
                run.seconds += seconds
                for answer, probability in (summarize(head, result) for result in results):
                    run.answers.append(answer)
                    run.probabilities.append(probability)
    return runs


def summarize(head: str, result: Any) -> tuple[Any, float]:
    """What agreement compares for one answer, and the probability whose difference is reported."""
    if head == "sentiment":
        return result.label, result.score
    if head == "fill-mask":
        best = result.masks[0].predictions[0]
        return best.token, best.score
    if head == "next-sentence":
        return result.is_next, result.is_next_probability
    best = result.answers[0] if result.answers else None
    return ((best.text, best.no_answer) if best else ("", True)), (best.score if best else 0.0)


def serve_and_run(inputs: dict[str, list[Any]]) -> dict[str, dict[str, HeadRun]]:
    """A float32 and an int8 server (default heads, CPU), both up, answering `inputs`."""
    with contextlib.ExitStack() as stack:
        clients = {}
        for dtype in DTYPES:
            server = stack.enter_context(BackgroundServer(ServerConfig(device="cpu", dtype=dtype, port=0)))
            clients[dtype] = stack.enter_context(BertServeClient(server.address, timeout=300.0))
        return run_heads(clients, inputs)


METRICS = {
    "sentiment": "label",
    "fill-mask": "top-1 token",
    "next-sentence": "is_next",
    "question-answering": "best answer (exact)",
}


def print_table(throughput: dict[str, float], runs: dict[str, dict[str, HeadRun]], n: int) -> None:
    ratio = throughput["int8"] / throughput["float32"]
    print(
        f"\nencoder forward_packed, {int(throughput['tokens'])} tokens: float32 {throughput['float32']:.0f} tok/s, "
        f"int8 {throughput['int8']:.0f} tok/s, ratio {ratio:.2f}x; "
        f"mean cosine of last hidden states {throughput['cosine']:.4f}"
    )
    print(f"\n| head | agreement on | agreement ({n} inputs) | float32 mean p | mean abs diff | float32 s | int8 s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for head, metric in METRICS.items():
        want, got = runs["float32"][head], runs["int8"][head]
        agree = sum(a == b for a, b in zip(want.answers, got.answers)) / len(want.answers)
        diff = statistics.fmean(abs(a - b) for a, b in zip(want.probabilities, got.probabilities))
        mean = statistics.fmean(want.probabilities)
        print(f"| {head} | {metric} | {agree:.1%} | {mean:.3f} | {diff:.4f} | {want.seconds:.1f} | {got.seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200, help="inputs per head")
    parser.add_argument("--encoder-rows", type=int, default=128, help="sentences in the throughput measurement")
    parser.add_argument("--batch-rows", type=int, default=32, help="rows per encoder forward")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the throughput batches")
    args = parser.parse_args()
    pool = sentences()
    started = time.perf_counter()
    throughput = encoder_throughput(pool, args.encoder_rows, args.batch_rows, args.repeats)
    inputs = make_inputs(pool, args.n)
    runs = serve_and_run(inputs)
    print_table(throughput, runs, args.n)
    print(f"\n({time.perf_counter() - started:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
