"""Tiny randomly initialised BERT checkpoints and head files, made in tests.

Nothing here is downloaded: the vocabulary is a word list, the weights are
seeded random numbers, saved in the `from_pretrained` layout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.headfile import HeadFileMetadata, save_head_file
from transformers import BertConfig, BertForPreTraining, BertModel, BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an of to in is was and or but not it this that he she they we you i on at by for with from "
    "capital city country france paris berlin germany rome italy river long old new big small good bad "
    "great terrible movie film book story plot actor acting music love hate like liked boring fun funny "
    "what who where when why how which did does do be been are were has have had will would can could "
    "john mary went go goes gone home school work day night year years time people man woman child "
    "red blue green cat dog bird tree house car road water fire sun moon star sky rain snow . , ? ! ' -"
).split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##y", "##n", "##e", "##a", "##o", "##r", "##t"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
VOCAB = SPECIAL_TOKENS + WORDS + PIECES + LETTERS + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]


def make_tokenizer() -> BertTokenizerFast:
    vocab = {token: index for index, token in enumerate(dict.fromkeys(VOCAB))}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)


def make_checkpoint(folder: Path, *, seed: int = 0, pretraining_heads: bool = True, max_positions: int = 64) -> Path:
    """Save a 2-layer, 32-wide BERT (with or without MLM/NSP heads) to `folder`."""
    tokenizer = make_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=max_positions,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = BertForPreTraining(config) if pretraining_heads else BertModel(config)
    with torch.no_grad():  # default init is near-uniform; widen it so rankings are clear
        for name, parameter in model.named_parameters():
            if "LayerNorm" not in name:
                parameter.normal_(0.0, 0.2)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_sentiment_head(
    path: Path, checkpoint: Path, labels: tuple[str, ...] = ("negative", "neutral", "positive"), seed: int = 1
) -> Path:
    """A random classifier head file in BertForSequenceClassification layout."""
    encoder = SharedEncoder.load(str(checkpoint), device="cpu")
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        "classifier.weight": torch.randn(len(labels), encoder.hidden_size, generator=generator),
        "classifier.bias": torch.randn(len(labels), generator=generator),
    }
    save_head_file(path, tensors, head_metadata(encoder, "sentiment", "pooled-linear", labels))
    return path


def make_qa_head(path: Path, checkpoint: Path, *, seed: int = 2, supports_no_answer: bool = False) -> Path:
    """A random start/end head file in BertForQuestionAnswering layout."""
    encoder = SharedEncoder.load(str(checkpoint), device="cpu")
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        "qa_outputs.weight": torch.randn(2, encoder.hidden_size, generator=generator),
        "qa_outputs.bias": torch.randn(2, generator=generator),
    }
    metadata = head_metadata(encoder, "question-answering", "token-linear", (), supports_no_answer=supports_no_answer)
    save_head_file(path, tensors, metadata)
    return path


def head_metadata(
    encoder: SharedEncoder, task: str, architecture: str, labels: tuple[str, ...], **extra: object
) -> HeadFileMetadata:
    return HeadFileMetadata(
        task=task,
        architecture=architecture,
        encoder_name=encoder.model_name,
        encoder_fingerprint=encoder.fingerprint,
        hidden_size=encoder.hidden_size,
        labels=labels,
        extra=dict(extra),
    )
