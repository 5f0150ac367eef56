"""The padding-free forward equals the `transformers` encoder on the same weights.

Mixed-length batches of 1 to 512 tokens go through `SharedEncoder.forward_packed`
and through `BertModel` itself (each row alone, unpadded, and the whole batch
right-padded with an attention mask); every layer's output and the pooled
output must agree on every real token. Private-layer heads run their layers
the same packed way in serving and padded in training: both must agree too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bertserve.model.encoder import SharedEncoder
from bertserve.nn import packed
from bertserve.plugin.head import EncodedRow
from bertserve.plugin.modules import copy_top_layers, run_layers
from tiny_models import make_checkpoint
from transformers import BertModel

LENGTHS = [1, 2, 7, 64, 130, 512, 3, 255]
TOLERANCE = {"atol": 2e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def long_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("long") / "model", seed=5, max_positions=512)


@pytest.fixture(scope="module")
def encoder(long_checkpoint: Path) -> SharedEncoder:
    return SharedEncoder.load(str(long_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(long_checkpoint: Path) -> BertModel:
    return BertModel.from_pretrained(str(long_checkpoint)).eval()


def random_rows(lengths: list[int], vocab_size: int, seed: int = 0) -> list[EncodedRow]:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for length in lengths:
        ids = torch.randint(5, vocab_size, (length,), generator=generator).tolist()
        split = int(torch.randint(0, length + 1, (1,), generator=generator))
        rows.append(EncodedRow(ids, [0] * split + [1] * (length - split)))
    return rows


def reference_alone(model: BertModel, row: EncodedRow) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    with torch.inference_mode():
        out = model(
            input_ids=torch.tensor([row.input_ids]),
            token_type_ids=torch.tensor([row.token_type_ids]),
            output_hidden_states=True,
        )
    return tuple(h[0] for h in out.hidden_states), out.pooler_output[0]


def test_packed_forward_equals_each_row_run_alone(encoder: SharedEncoder, reference: BertModel) -> None:
    rows = random_rows(LENGTHS, reference.config.vocab_size)
    out = encoder.forward_packed(rows)
    assert out.layout.lengths == LENGTHS and out.sequence_output.shape == (sum(LENGTHS), encoder.hidden_size)
    assert len(out.hidden_states) == reference.config.num_hidden_layers + 1
    assert out.pooled_output is not None
    for i, row in enumerate(rows):
        want_states, want_pooled = reference_alone(reference, row)
        start, end = out.layout.offsets[i], out.layout.offsets[i + 1]
        for layer, (got, want) in enumerate(zip(out.hidden_states, want_states)):
            torch.testing.assert_close(got[start:end], want, **TOLERANCE, msg=f"row {i} layer {layer}")
        torch.testing.assert_close(out.pooled_output[i], want_pooled, **TOLERANCE, msg=f"row {i} pooled")


def test_padded_views_equal_the_padded_reference_on_real_tokens(encoder: SharedEncoder, reference: BertModel) -> None:
    rows = random_rows(LENGTHS, reference.config.vocab_size, seed=1)
    width = max(LENGTHS)
    ids = torch.tensor([row.input_ids + [0] * (width - len(row)) for row in rows])
    types = torch.tensor([row.token_type_ids + [0] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    with torch.inference_mode():
        want = reference(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
    picked = [5, 0, 3]  # a head's rows: any subset, any order
    view = encoder.forward_packed(rows).view(picked, hidden_states=True)
    assert view.hidden_states is not None and view.pooled_output is not None
    lengths = [LENGTHS[i] for i in picked]
    assert view.sequence_output.shape == (3, max(lengths), encoder.hidden_size)
    assert view.attention_mask.tolist() == [[1] * n + [0] * (max(lengths) - n) for n in lengths]
    for slot, (row, n) in enumerate(zip(picked, lengths)):
        torch.testing.assert_close(view.sequence_output[slot, :n], want.last_hidden_state[row, :n], **TOLERANCE)
        torch.testing.assert_close(view.hidden_states[2][slot, :n], want.hidden_states[2][row, :n], **TOLERANCE)
        torch.testing.assert_close(view.pooled_output[slot], want.pooler_output[row], **TOLERANCE)
        assert not view.sequence_output[slot, n:].any(), "padding positions are zero"


def test_a_batch_answers_each_row_as_if_it_ran_alone(encoder: SharedEncoder) -> None:
    rows = random_rows([40, 3, 17], encoder.config.vocab_size, seed=2)
    together = encoder.forward_packed(rows)
    for i, row in enumerate(rows):
        alone = encoder.forward_packed([row])
        start, end = together.layout.offsets[i], together.layout.offsets[i + 1]
        torch.testing.assert_close(together.sequence_output[start:end], alone.sequence_output, **TOLERANCE)


def test_private_layers_packed_in_serving_equal_padded_in_training(encoder: SharedEncoder) -> None:
    layers = copy_top_layers(encoder.config, 2, list(encoder.bert.encoder.layer))
    assert layers is not None
    rows = random_rows([9, 1, 30], encoder.config.vocab_size, seed=3)
    view = encoder.forward_rows(rows)
    assert view.hidden_states is not None
    below = view.hidden_states[-3]
    with torch.inference_mode():
        served = run_layers(layers.eval(), below, view.attention_mask)
        trained = run_layers(layers.train(), below, view.attention_mask)  # dropout is 0 in the tiny config
    real = view.attention_mask.bool()
    torch.testing.assert_close(served[real], trained[real], **TOLERANCE)
    torch.testing.assert_close(served[real], view.sequence_output[real], **TOLERANCE)  # copies of the top layers
    assert not served[~real].any()


def test_pack_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="no empty rows"):
        packed.pack([([1, 2], [0, 0]), ([], [])], torch.device("cpu"))
    with pytest.raises(ValueError, match="at least one row"):
        packed.pack([], torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_packed_forward_on_cuda_follows_the_float32_reference(
    long_checkpoint: Path, reference: BertModel, dtype: str
) -> None:
    """Variable-length flash attention (half precision) or per-row attention (float32) on CUDA."""
    encoder = SharedEncoder.load(str(long_checkpoint), device="cuda", dtype=dtype)
    rows = random_rows(LENGTHS, reference.config.vocab_size, seed=4)
    out = encoder.forward_packed(rows)
    # One rounding of half precision per op, over two layers of a 32-wide model (gpu.py measures 0.035).
    tolerance = TOLERANCE if dtype == "float32" else {"atol": 0.1, "rtol": 0.05}
    for i, row in enumerate(rows):
        want_states, _ = reference_alone(reference, row)
        start, end = out.layout.offsets[i], out.layout.offsets[i + 1]
        got = out.sequence_output[start:end].float().cpu()
        torch.testing.assert_close(got, want_states[-1], **tolerance, msg=f"row {i}")
