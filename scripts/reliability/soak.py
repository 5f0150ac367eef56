"""Soak: mixed traffic against one server; resident memory must stay within 10% of its level after warm-up.

Starts ``bertserve serve`` (default: the offline default model, all four
heads), runs the `traffic.Mix` load (short, 512-token, batched, QA, pairs,
several heads, streams, malformed) from several callers, and samples the
server's resident memory every second. The baseline is the median RSS
over the window after the warm-up (by default the first minute); the
verdict compares with it the median over the last window of the load and
the RSS once the server has been idle for a few seconds. Prints start,
baseline, peak and both ends and the outcome counts; exits 1 when memory
grew more than ``--tolerance``, an outcome was unexpected (a valid request
that failed, a malformed one not refused as a client error) or the server died.

    python scripts/reliability/soak.py --minutes 60          # the long run
    python scripts/reliability/soak.py --seconds 60 --warmup-seconds 20 --window-seconds 10   # CI's
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from statistics import median

from traffic import ServerUnderTest, run_load, unexpected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=None, help="load duration in minutes")
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration in seconds (if no --minutes)")
    parser.add_argument("--warmup-seconds", type=float, default=60.0, help="the baseline is taken after this")
    parser.add_argument("--threads", type=int, default=4, help="concurrent callers")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed end/baseline growth")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle time before the end sample")
    parser.add_argument("--window-seconds", type=float, default=20.0, help="RSS medians over windows this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report-every", type=int, default=30, help="print the RSS every this many seconds")
    parser.add_argument("server_args", nargs="*", help="extra `bertserve serve` arguments (after --)")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    server = ServerUnderTest(args.server_args)
    try:
        return soak(server, seconds, args)
    finally:
        server.stop()


def soak(server: ServerUnderTest, seconds: float, args: argparse.Namespace) -> int:
    started = time.monotonic()
    start_rss = server.rss()
    samples: list[tuple[float, float]] = []

    def tick() -> None:
        elapsed = time.monotonic() - started
        samples.append((elapsed, server.rss()))
        if len(samples) % args.report_every == 0:
            print(f"  {elapsed:6.0f} s  rss {samples[-1][1]:6.0f} MiB", flush=True)

    counts = run_load(server.address, args.threads, seconds, args.seed, tick)
    time.sleep(args.idle_seconds)
    idle_rss = server.rss()
    window = args.window_seconds
    base = median([rss for at, rss in samples if args.warmup_seconds <= at < args.warmup_seconds + window])
    loaded = median([rss for at, rss in samples if at >= samples[-1][0] - window])
    peak = max(rss for _, rss in samples)
    total = sum(counts.values())
    print(f"soak: {total} requests in {seconds:.0f} s from {args.threads} callers ({total / seconds:.1f} req/s)")
    print(
        f"rss MiB: start {start_rss:.0f}, after warm-up {base:.0f}, peak {peak:.0f}, "
        f"end under load {loaded:.0f} ({100 * (loaded / base - 1):+.1f}%), "
        f"end idle {idle_rss:.0f} ({100 * (idle_rss / base - 1):+.1f}%); limit +{100 * args.tolerance:.0f}% "
        f"(medians over {window:.0f} s windows)"
    )
    print("outcomes: " + ", ".join(f"{key} {count}" for key, count in sorted(counts.items())))
    failures = verdict(base, loaded, idle_rss, counts, server, args.tolerance)
    for failure in failures:
        print("FAILED: " + failure)
    return 1 if failures else 0


def verdict(
    base: float, loaded: float, idle: float, counts: Counter[str], server: ServerUnderTest, tolerance: float
) -> list[str]:
    """What failed: memory grown past the tolerance (under load or idle), unexpected outcomes, a dead server."""
    failures = []
    for name, rss in (("under load", loaded), ("idle", idle)):
        if rss > base * (1 + tolerance):
            failures.append(f"resident memory {name} grew {100 * (rss / base - 1):.1f}% over its level after warm-up")
    if bad := unexpected(counts):
        failures.append(f"unexpected outcomes: {bad}")
    if not server.alive():
        failures.append("the server died")
    return failures


if __name__ == "__main__":
    sys.exit(main())
