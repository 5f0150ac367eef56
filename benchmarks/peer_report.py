"""Summary of one peer-kit sitting: bertserve against the serving peers, with its targets.

Reads the results folder that the peer kit's ``run_all.sh`` writes (``benchmarks/peers.sh``
runs it): ``load.jsonl`` (one JSON line per server, concurrency and round, as the kit's
``loadgen.py`` writes it), ``ceiling_start.json`` and ``ceiling_end.json`` (the kit's
``ceiling.py``, measured before and after the servers in the same sitting). Prints markdown:

- per server: C=1 req/s, C=1 p50 ms, C=32 req/s and C=32 p99 ms, each the median over rounds
  (C is the kit's high concurrency, 32 unless ``C`` was set), and the errors of all rounds;
- bertserve's ratios: C=32 req/s over the best peer's; over the unpadded ceiling's implied req/s
  (the bare encoder's token rate at 32 x 64 over the load's mean tokens per request) from the
  start, from the end and from their median (with the range the two span); C=1 p50 minus the
  naive server's C=1 p50; C=32 p99 over the lowest C=32 p99 of any peer;
- a PASS / MISS line per target: C=32 req/s at least 1.5x the best peer's, at least 75% of the
  unpadded ceiling (median of start and end), C=32 p99 no higher than the best peer p99, C=1 p50
  within 1.5 ms of naive's. A target whose inputs are missing reads "n/a".

The new server is the one named by ``--new``, else the one whose name starts with "bertserve".

Usage: python benchmarks/peer_report.py RESULTS_DIR [--new NAME] [--naive naive]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_VS_PEER = 1.5  # C=N req/s over the best peer's
TARGET_VS_CEILING = 0.75  # C=N req/s over the unpadded ceiling's implied req/s
TARGET_P50_MS = 1.5  # C=1 p50 at most this much above the naive server's


@dataclass(frozen=True)
class ServerStats:
    """One server's medians over rounds (None where that run is missing)."""

    name: str
    rounds: int
    c1_rps: float | None
    c1_p50: float | None
    cn_rps: float | None
    cn_p99: float | None
    errors: int


@dataclass(frozen=True)
class Target:
    """One target: passed is None when it could not be judged."""

    what: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class PeerSummary:
    """Everything the report prints; computed by `summarize` from parsed results only."""

    concurrency: int | None
    servers: list[ServerStats]
    new: str | None
    best_peer: ServerStats | None = None  # highest C=N req/s among the peers
    rps_vs_best_peer: float | None = None
    ceiling_start_rps: float | None = None
    ceiling_end_rps: float | None = None
    ceiling_median_rps: float | None = None
    rps_vs_ceiling_start: float | None = None
    rps_vs_ceiling_end: float | None = None
    rps_vs_ceiling_median: float | None = None
    rps_vs_ceiling_range: tuple[float, float] | None = None
    naive: ServerStats | None = None
    p50_minus_naive_ms: float | None = None
    best_p99_peer: ServerStats | None = None  # lowest C=N p99 among the peers
    p99_vs_best_peer: float | None = None
    targets: list[Target] = field(default_factory=list)


def read_results(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None]:
    """The load runs and the start and end ceilings of one results folder (missing ceilings: None)."""
    folder = Path(folder)
    rows = [json.loads(line) for line in (folder / "load.jsonl").read_text().splitlines() if line.strip()]
    ceilings = []
    for when in ("start", "end"):
        path = folder / f"ceiling_{when}.json"
        ceilings.append(json.loads(path.read_text()) if path.exists() else None)
    return rows, ceilings[0], ceilings[1]


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [float(run[key]) for run in runs if run.get(key) is not None and run.get("ok", 1)]
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(
    rows: list[dict[str, Any]],
    ceiling_start: dict[str, Any] | None = None,
    ceiling_end: dict[str, Any] | None = None,
    *,
    new: str | None = None,
    naive: str = "naive",
) -> PeerSummary:
    """Medians per server and bertserve's ratios and targets, from parsed load rows and ceilings."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        runs.setdefault(row["server"], {}).setdefault(int(row["C"]), []).append(row)
    levels = sorted({c for by_c in runs.values() for c in by_c if c != 1})
    high = levels[-1] if levels else None
    servers = []
    for name, by_c in runs.items():
        c1, cn = by_c.get(1, []), by_c.get(high, []) if high is not None else []
        servers.append(
            ServerStats(
                name=name,
                rounds=max(len(c1), len(cn)),
                c1_rps=_median(c1, "rps"),
                c1_p50=_median(c1, "p50"),
                cn_rps=_median(cn, "rps"),
                cn_p99=_median(cn, "p99"),
                errors=sum(int(r.get("errors", 0)) + int(r.get("not_sent", 0)) for rs in by_c.values() for r in rs),
            )
        )
    if new is None:
        candidates = [s.name for s in servers if s.name.lower().startswith("bertserve")]
        new = candidates[-1] if candidates else None
    me = next((s for s in servers if s.name == new), None)
    if me is None:
        return PeerSummary(concurrency=high, servers=servers, new=None)
    peers = [s for s in servers if s is not me]
    with_rps = [s for s in peers if s.cn_rps is not None]
    best = max(with_rps, key=lambda s: s.cn_rps or 0.0) if with_rps else None
    with_p99 = [s for s in peers if s.cn_p99 is not None]
    best_p99 = min(with_p99, key=lambda s: s.cn_p99 or 0.0) if with_p99 else None
    naive_stats = next((s for s in peers if s.name == naive), None)

    start = float(ceiling_start["implied_rps"]) if ceiling_start else None
    end = float(ceiling_end["implied_rps"]) if ceiling_end else None
    known = [c for c in (start, end) if c is not None]
    median = statistics.median(known) if known else None
    rps = me.cn_rps
    span = (rps / max(known), rps / min(known)) if rps is not None and known else None

    p50_delta = (
        me.c1_p50 - naive_stats.c1_p50
        if me.c1_p50 is not None and naive_stats is not None and naive_stats.c1_p50 is not None
        else None
    )
    summary = PeerSummary(
        concurrency=high,
        servers=servers,
        new=new,
        best_peer=best,
        rps_vs_best_peer=_ratio(rps, best.cn_rps if best else None),
        ceiling_start_rps=start,
        ceiling_end_rps=end,
        ceiling_median_rps=median,
        rps_vs_ceiling_start=_ratio(rps, start),
        rps_vs_ceiling_end=_ratio(rps, end),
        rps_vs_ceiling_median=_ratio(rps, median),
        rps_vs_ceiling_range=span,
        naive=naive_stats,
        p50_minus_naive_ms=p50_delta,
        best_p99_peer=best_p99,
        p99_vs_best_peer=_ratio(me.cn_p99, best_p99.cn_p99 if best_p99 else None),
    )
    summary.targets.extend(_targets(summary, me))
    return summary


def _targets(s: PeerSummary, me: ServerStats) -> list[Target]:
    c = s.concurrency
    out = []
    best, ratio = s.best_peer, s.rps_vs_best_peer
    detail = "no peer result"
    if best is not None and ratio is not None:
        detail = f"{ratio:.2f}x ({me.cn_rps:.1f} vs {best.name} {best.cn_rps:.1f} req/s)"
    out.append(Target(f"C={c} req/s >= {TARGET_VS_PEER}x the best peer's", _at_least(ratio, TARGET_VS_PEER), detail))

    ratio = s.rps_vs_ceiling_median
    detail = "no ceiling"
    if ratio is not None:
        detail = f"{100 * ratio:.0f}% of {s.ceiling_median_rps:.1f} implied req/s"
        if s.rps_vs_ceiling_range is not None:
            low, high = s.rps_vs_ceiling_range
            detail += f" (against start and end: {100 * low:.0f}-{100 * high:.0f}%)"
    what = f"C={c} req/s >= {100 * TARGET_VS_CEILING:.0f}% of the unpadded ceiling (median of start and end)"
    out.append(Target(what, _at_least(ratio, TARGET_VS_CEILING), detail))

    best, p99 = s.best_p99_peer, me.cn_p99
    passed, detail = None, "no peer result"
    if best is not None and best.cn_p99 is not None and p99 is not None:
        passed, detail = p99 <= best.cn_p99, f"{p99:.1f} ms vs {best.name} {best.cn_p99:.1f} ms"
    out.append(Target(f"C={c} p99 <= the best peer's p99", passed, detail))

    naive, delta = s.naive, s.p50_minus_naive_ms
    passed, detail = None, "no naive result"
    if naive is not None and naive.c1_p50 is not None and delta is not None:
        passed, detail = delta <= TARGET_P50_MS, f"{delta:+.1f} ms ({me.c1_p50:.1f} vs {naive.c1_p50:.1f} ms)"
    out.append(Target(f"C=1 p50 within {TARGET_P50_MS} ms of naive's", passed, detail))
    return out


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _num(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def render(s: PeerSummary) -> str:
    """The summary as markdown."""
    c = s.concurrency
    rounds = max((x.rounds for x in s.servers), default=0)
    lines = [f"### Peers, C=1 and C={c}, median over {rounds} round(s)", ""]
    lines.append(f"| server | rounds | C=1 req/s | C=1 p50 ms | C={c} req/s | C={c} p99 ms | errors |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for x in s.servers:
        name = f"**{x.name}**" if x.name == s.new else x.name
        lines.append(
            f"| {name} | {x.rounds} | {_num(x.c1_rps)} | {_num(x.c1_p50)} | {_num(x.cn_rps)} | {_num(x.cn_p99)} "
            f"| {x.errors} |"
        )
    lines.append("")
    if s.new is None:
        lines.append("No bertserve run in these results (pass --new NAME): no ratios.")
        return "\n".join(lines)
    lines += [f"### {s.new}: ratios", "", "| ratio | value |", "| --- | ---: |"]
    best = s.best_peer
    lines.append(
        f"| C={c} req/s / best peer's C={c} req/s ({best.name if best else 'n/a'} "
        f"{_num(best.cn_rps if best else None)}) | {_num(s.rps_vs_best_peer, '.2f', 'x')} |"
    )
    for label, rps, ratio in (
        ("start", s.ceiling_start_rps, s.rps_vs_ceiling_start),
        ("end", s.ceiling_end_rps, s.rps_vs_ceiling_end),
    ):
        lines.append(f"| C={c} req/s / unpadded ceiling, {label} ({_num(rps)} implied req/s) | {_num(ratio, '.2f')} |")
    span = s.rps_vs_ceiling_range
    known = [x for x in (s.ceiling_start_rps, s.ceiling_end_rps) if x is not None]
    ceiling_span = f", range {min(known):.1f}-{max(known):.1f}" if known else ""
    lines.append(
        f"| C={c} req/s / unpadded ceiling, median ({_num(s.ceiling_median_rps)}{ceiling_span}) "
        f"| {_num(s.rps_vs_ceiling_median, '.2f')}" + (f" ({span[0]:.2f}-{span[1]:.2f})" if span else "") + " |"
    )
    naive = s.naive
    lines.append(
        f"| C=1 p50 - naive's C=1 p50 ({_num(naive.c1_p50 if naive else None)} ms) "
        f"| {_num(s.p50_minus_naive_ms, '+.1f', ' ms')} |"
    )
    bp = s.best_p99_peer
    lines.append(
        f"| C={c} p99 / best peer's C={c} p99 ({bp.name if bp else 'n/a'} {_num(bp.cn_p99 if bp else None)} ms) "
        f"| {_num(s.p99_vs_best_peer, '.2f', 'x')} |"
    )
    lines.append("")
    for t in s.targets:
        verdict = "n/a" if t.passed is None else ("PASS" if t.passed else "MISS")
        lines.append(f"- {verdict}: {t.what}: {t.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a results folder of the peer kit's run_all.sh")
    parser.add_argument("--new", help="the server to judge (default: the one named bertserve...)")
    parser.add_argument("--naive", default="naive", help="the server C=1 p50 is compared with")
    args = parser.parse_args(argv)
    rows, start, end = read_results(args.results)
    print(render(summarize(rows, start, end, new=args.new, naive=args.naive)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
