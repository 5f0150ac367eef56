"""benchmarks/peer_report.py on a synthetic results folder of the peer kit: medians, ratios, targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_scripts import load_benchmark

peer_report = load_benchmark("peer_report")


def _run(server: str, c: int, rps: float, p50: float, p99: float, errors: int = 0) -> dict[str, object]:
    """One line of load.jsonl, as the kit's loadgen.py writes it."""
    return {
        "server": server,
        "C": c,
        "N": 100,
        "ok": 100 - errors,
        "errors": errors,
        "not_sent": 0,
        "wall_s": 1.0,
        "rps": rps,
        "p50": p50,
        "p95": p99,
        "p99": p99,
        "client_cpu_pct": 10.0,
        "first_error": None,
    }


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    rounds = [
        # (server, C=1 rps, C=1 p50, C=32 rps, C=32 p99) per round; medians: naive 55/17.7/51/720,
        # mosec 30/33/60/700, bertserve 40/19.0/99/650
        [("naive", 55, 17.7, 51, 720), ("mosec", 30, 33, 60, 700), ("bertserve-abc1234", 40, 19.0, 99, 650)],
        [("naive", 50, 18.5, 49, 760), ("mosec", 31, 32, 58, 690), ("bertserve-abc1234", 38, 19.5, 90, 640)],
        [("naive", 56, 17.0, 53, 700), ("mosec", 29, 34, 61, 705), ("bertserve-abc1234", 41, 18.0, 100, 900)],
    ]
    lines = []
    for round_ in rounds:
        for server, rps1, p50, rps32, p99 in round_:
            lines.append(_run(server, 1, rps1, p50, p50 * 2))
            lines.append(_run(server, 32, rps32, 500.0, p99, errors=1 if server == "mosec" else 0))
    (tmp_path / "load.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "ceiling_start.json").write_text(json.dumps({"implied_rps": 120.0, "encoder_tokens_per_s": 6600}))
    (tmp_path / "ceiling_end.json").write_text(json.dumps({"implied_rps": 150.0, "encoder_tokens_per_s": 8300}))
    return tmp_path


def test_medians_ratios_and_targets(results: Path) -> None:
    summary = peer_report.summarize(*peer_report.read_results(results))

    assert summary.concurrency == 32
    assert summary.new == "bertserve-abc1234"  # found by its name
    stats = {s.name: s for s in summary.servers}
    assert [s.name for s in summary.servers] == ["naive", "mosec", "bertserve-abc1234"]
    assert (stats["naive"].c1_rps, stats["naive"].c1_p50, stats["naive"].cn_rps, stats["naive"].cn_p99) == (
        55,
        17.7,
        51,
        720,
    )
    assert stats["mosec"].errors == 3 and stats["mosec"].rounds == 3
    me = stats["bertserve-abc1234"]
    assert (me.c1_p50, me.cn_rps, me.cn_p99) == (19.0, 99, 650)

    assert summary.best_peer is not None and summary.best_peer.name == "mosec"  # 60 > 51 req/s
    assert summary.rps_vs_best_peer == pytest.approx(99 / 60)
    assert summary.rps_vs_ceiling_start == pytest.approx(99 / 120)
    assert summary.rps_vs_ceiling_end == pytest.approx(99 / 150)
    assert summary.ceiling_median_rps == pytest.approx(135.0)
    assert summary.rps_vs_ceiling_median == pytest.approx(99 / 135)
    assert summary.rps_vs_ceiling_range == pytest.approx((99 / 150, 99 / 120))
    assert summary.p50_minus_naive_ms == pytest.approx(19.0 - 17.7)
    assert summary.best_p99_peer is not None and summary.best_p99_peer.name == "mosec"  # 700 < 720 ms
    assert summary.p99_vs_best_peer == pytest.approx(650 / 700)

    verdicts = [t.passed for t in summary.targets]
    # 1.65x >= 1.5x; 73% < 75%; 650 <= 700 ms; +1.3 <= 1.5 ms
    assert verdicts == [True, False, True, True]

    text = peer_report.render(summary)
    assert "| **bertserve-abc1234** | 3 | 40.0 | 19.0 | 99.0 | 650.0 | 0 |" in text
    assert "| mosec | 3 | 30.0 | 33.0 | 60.0 | 700.0 | 3 |" in text
    assert "1.65x" in text and "0.73 (0.66-0.82)" in text and "+1.3 ms" in text
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("- ")] == [
        "- PASS",
        "- MISS",
        "- PASS",
        "- PASS",
    ]


def test_missing_pieces_read_na(results: Path) -> None:
    rows, _, _ = peer_report.read_results(results)
    only_mosec = [r for r in rows if r["server"] != "naive"]
    summary = peer_report.summarize(only_mosec, None, None, new="bertserve-abc1234")
    assert summary.rps_vs_ceiling_median is None and summary.p50_minus_naive_ms is None
    assert [t.passed for t in summary.targets] == [True, None, True, None]
    assert "n/a" in peer_report.render(summary)

    nobody = peer_report.summarize([r for r in rows if not r["server"].startswith("bertserve")])
    assert nobody.new is None and not nobody.targets
    assert "no ratios" in peer_report.render(nobody)


def test_main_prints_the_report(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert peer_report.main([str(results), "--new", "bertserve-abc1234"]) == 0
    assert "PASS: C=32 req/s >= 1.5x the best peer's" in capsys.readouterr().out
