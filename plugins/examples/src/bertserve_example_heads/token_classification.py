"""Token classification (named entities, part of speech): a linear layer on every token.

The head file holds ``classifier.weight`` and ``classifier.bias`` in the
layout of `BertForTokenClassification` and the label names (e.g. ``O``,
``B-PER``, ``I-PER``, ...); `save_token_classification_head` writes one.

Entities follow the transformers ``token-classification`` pipeline exactly:
a softmax per token, special tokens skipped, subwords detected from the
character offsets, the aggregation strategies ``none``, ``simple``,
``first``, ``average`` and ``max``, B-/I- grouping, and `ignore_labels`
applied last. Logits are computed on the inference thread (`forward`); the
aggregation runs in `postprocess`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from bertserve.plugin import (
    EncodedRow,
    EncoderOutputs,
    EncoderView,
    Head,
    HeadDescription,
    HeadFileMetadata,
    HeadLoadContext,
    HeadUnavailable,
    InputError,
    PluginSettings,
    frozen_linear,
    hookimpl,
    load_head_file,
    require_text,
    save_head_file,
    tokenize,
)

__all__ = [
    "ARCHITECTURE",
    "Aggregation",
    "Entity",
    "TokenClassificationHead",
    "TokenClassificationInput",
    "TokenClassificationOutput",
    "register_heads",
    "save_token_classification_head",
]

TASK = "token-classification"
ARCHITECTURE = "token-linear-classifier"

# The plugin API version this module targets.
BERTSERVE_API_VERSION = "1.1"

Aggregation = Literal["none", "simple", "first", "average", "max"]
_AGGREGATIONS: tuple[str, ...] = ("none", "simple", "first", "average", "max")
_WORD_AGGREGATIONS = frozenset({"first", "average", "max"})


@dataclass(frozen=True)
class TokenClassificationInput:
    """One text whose tokens to label."""

    text: str = field(metadata={"description": "the text", "minLength": 1})
    aggregation: Aggregation = field(
        default="simple",
        metadata={
            "description": "how tokens become entities, as in the transformers pipeline: none (one entity per "
            "token), simple (adjacent tokens with the same tag), first/average/max (whole words, tagged by their "
            "first token, average scores or highest-scoring token)"
        },
    )
    ignore_labels: tuple[str, ...] = field(
        default=("O",), metadata={"description": "drop entities with these labels (entity groups when aggregated)"}
    )
    truncate: bool = field(default=False, metadata={"description": "cut an over-long text instead of rejecting it"})


@dataclass(frozen=True)
class Entity:
    """One labelled token (aggregation none) or entity group: `text[start:end]` in code points."""

    label: str = field(metadata={"description": "the tag; without its B-/I- prefix when aggregated"})
    score: float = field(metadata={"description": "the probability (mean over the group when aggregated)"})
    word: str = field(metadata={"description": "the tokens joined back as the tokenizer decodes them"})
    start: int = field(metadata={"description": "offset of the first character, in code points"})
    end: int = field(metadata={"description": "offset after the last character, in code points"})
    token_index: int | None = field(
        default=None, metadata={"description": "position of the token in the encoder input; null when aggregated"}
    )


@dataclass(frozen=True)
class TokenClassificationOutput:
    """Entities in text order."""

    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class _Tokens:
    """What postprocess needs about one encoded text besides its logits."""

    offsets: tuple[tuple[int, int], ...]
    special: tuple[bool, ...]


@dataclass
class _PreEntity:
    word: str
    scores: np.ndarray
    start: int
    end: int
    index: int
    is_subword: bool


@dataclass
class _Tagged:
    entity: str
    score: Any  # a numpy float32, as the pipeline keeps it until the end
    word: str
    start: int
    end: int
    index: int | None = None


class TokenClassificationHead(Head[TokenClassificationInput, TokenClassificationOutput]):
    """Labels every token with a linear classifier (BertForTokenClassification layout)."""

    name = "token-classification"
    task = TASK
    description = "token classification / NER from a head file (token output + linear layer)"
    input_type = TokenClassificationInput
    output_type = TokenClassificationOutput
    text_fields = ("text",)

    def __init__(self) -> None:
        self._encoder: EncoderView | None = None
        self._classifier: torch.nn.Linear | None = None
        self._word_aware = False
        self.labels: tuple[str, ...] = ()

    def load(self, context: HeadLoadContext) -> HeadDescription:
        encoder = context.encoder
        tensors, metadata = load_head_file(
            context.head_file, head_name=self.name, task=self.task, architecture=ARCHITECTURE, encoder=encoder
        )
        if not metadata.labels:
            raise HeadUnavailable(f"{context.head_file} names no labels; a token classifier needs at least one")
        self._classifier = frozen_linear(tensors, "classifier", len(metadata.labels), encoder, context.head_file)
        self._encoder = encoder
        self.labels = metadata.labels
        # As the pipeline: a tokenizer that marks continuing subwords (WordPiece "##") tells words apart exactly.
        backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
        self._word_aware = bool(backend is not None and getattr(backend.model, "continuing_subword_prefix", None))
        return HeadDescription(source=f"head file {context.head_file}", labels=metadata.labels)

    def preprocess(self, item: TokenClassificationInput) -> list[EncodedRow]:
        assert self._encoder is not None, "head used before load()"
        require_text(item.text, field="text")
        if item.aggregation not in _AGGREGATIONS:
            raise InputError(
                f"aggregation must be one of {', '.join(_AGGREGATIONS)}; got {item.aggregation!r}", field="aggregation"
            )
        encoding = tokenize(
            self._encoder.tokenizer,
            item.text,
            max_length=self._encoder.max_sequence_length,
            truncate=item.truncate,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        input_ids = list(encoding["input_ids"])
        tokens = _Tokens(
            offsets=tuple((int(start), int(end)) for start, end in encoding["offset_mapping"]),
            special=tuple(bool(flag) for flag in encoding["special_tokens_mask"]),
        )
        return [EncodedRow(input_ids=input_ids, token_type_ids=list(encoding["token_type_ids"]), data=tokens)]

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        assert self._classifier is not None, "head used before load()"
        logits = self._classifier(outputs.sequence_output).float().cpu().numpy()
        return [logits[i, : len(row)] for i, row in enumerate(rows)]

    def postprocess(
        self, item: TokenClassificationInput, rows: Sequence[EncodedRow], results: Sequence[Any]
    ) -> TokenClassificationOutput:
        assert self._encoder is not None, "head used before load()"
        row, logits = rows[0], results[0]
        tokens: _Tokens = row.data
        pre_entities = self._gather_pre_entities(item.text, row.input_ids, _softmax(logits), tokens)
        ignored = set(item.ignore_labels)
        entities: list[Entity] = []
        for tagged in self._aggregate(pre_entities, item.aggregation):
            if tagged.entity in ignored:
                continue
            entities.append(
                Entity(
                    label=tagged.entity,
                    score=float(tagged.score),
                    word=tagged.word,
                    start=tagged.start,
                    end=tagged.end,
                    token_index=tagged.index,
                )
            )
        return TokenClassificationOutput(entities=tuple(entities))

    # The methods below follow TokenClassificationPipeline's, step for step.

    def _gather_pre_entities(
        self, sentence: str, input_ids: Sequence[int], scores: np.ndarray, tokens: _Tokens
    ) -> list[_PreEntity]:
        assert self._encoder is not None
        tokenizer = self._encoder.tokenizer
        pre_entities = []
        for index, token_scores in enumerate(scores):
            if tokens.special[index]:
                continue
            word = str(tokenizer.convert_ids_to_tokens(int(input_ids[index])))
            start, end = tokens.offsets[index]
            word_ref = sentence[start:end]
            if self._word_aware:
                is_subword = len(word) != len(word_ref)
            else:  # the pipeline's fallback: a token not after a space continues a word
                is_subword = start > 0 and " " not in sentence[start - 1 : start + 1]
            if int(input_ids[index]) == tokenizer.unk_token_id:
                word = word_ref
                is_subword = False
            pre_entities.append(_PreEntity(word, token_scores, start, end, index, is_subword))
        return pre_entities

    def _aggregate(self, pre_entities: list[_PreEntity], aggregation: str) -> list[_Tagged]:
        if aggregation in ("none", "simple"):
            entities = []
            for pre in pre_entities:
                best = int(pre.scores.argmax())
                entities.append(_Tagged(self.labels[best], pre.scores[best], pre.word, pre.start, pre.end, pre.index))
        else:
            entities = self._aggregate_words(pre_entities, aggregation)
        if aggregation == "none":
            return entities
        return self._group_entities(entities)

    def _aggregate_word(self, entities: list[_PreEntity], aggregation: str) -> _Tagged:
        assert self._encoder is not None
        word = self._encoder.tokenizer.convert_tokens_to_string([entity.word for entity in entities])
        if aggregation == "first":
            scores = entities[0].scores
        elif aggregation == "max":
            scores = max(entities, key=lambda entity: entity.scores.max()).scores
        else:  # average
            scores = np.nanmean(np.stack([entity.scores for entity in entities]), axis=0)
        best = int(scores.argmax())
        return _Tagged(self.labels[best], scores[best], word, entities[0].start, entities[-1].end)

    def _aggregate_words(self, entities: list[_PreEntity], aggregation: str) -> list[_Tagged]:
        """Force the tokens of a word to agree on one tag (the first token opens a word)."""
        assert aggregation in _WORD_AGGREGATIONS
        words: list[_Tagged] = []
        group: list[_PreEntity] = []
        for entity in entities:
            if group and not entity.is_subword:
                words.append(self._aggregate_word(group, aggregation))
                group = []
            group.append(entity)
        if group:
            words.append(self._aggregate_word(group, aggregation))
        return words

    def _group_sub_entities(self, entities: list[_Tagged]) -> _Tagged:
        assert self._encoder is not None
        tag = entities[0].entity.split("-", 1)[-1]
        score = np.mean(np.nanmean([entity.score for entity in entities]))
        word = self._encoder.tokenizer.convert_tokens_to_string([entity.word for entity in entities])
        return _Tagged(tag, score, word, entities[0].start, entities[-1].end)

    def _group_entities(self, entities: list[_Tagged]) -> list[_Tagged]:
        """Merge adjacent entities with the same tag unless the later one begins (B-) a new entity."""
        groups: list[_Tagged] = []
        current: list[_Tagged] = []
        for entity in entities:
            if current:
                bi, tag = _split_tag(entity.entity)
                _, last_tag = _split_tag(current[-1].entity)
                if tag != last_tag or bi == "B":
                    groups.append(self._group_sub_entities(current))
                    current = []
            current.append(entity)
        if current:
            groups.append(self._group_sub_entities(current))
        return groups


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _split_tag(label: str) -> tuple[str, str]:
    """("B" or "I", tag); a label without a B-/I- prefix continues (I)."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def save_token_classification_head(
    path: str | Path,
    encoder: EncoderView,
    weight: torch.Tensor,
    bias: torch.Tensor,
    labels: Sequence[str],
) -> Path:
    """Write a head file for `TokenClassificationHead` trained on `encoder`.

    `weight` is ``[len(labels), hidden_size]`` and `bias` ``[len(labels)]``,
    as ``BertForTokenClassification.classifier``; label i names output i.
    """
    labels = tuple(labels)
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct and non-empty; got {list(labels)}")
    expected = (len(labels), encoder.hidden_size)
    if tuple(weight.shape) != expected or tuple(bias.shape) != (len(labels),):
        raise ValueError(
            f"weight is {tuple(weight.shape)} and bias {tuple(bias.shape)}; "
            f"expected {expected} and {(len(labels),)} for {len(labels)} labels on this encoder"
        )
    metadata = HeadFileMetadata(
        task=TASK,
        architecture=ARCHITECTURE,
        encoder_name=encoder.model_name,
        encoder_fingerprint=encoder.fingerprint,
        hidden_size=encoder.hidden_size,
        labels=labels,
    )
    save_head_file(path, {"classifier.weight": weight, "classifier.bias": bias}, metadata)
    return Path(path)


@hookimpl
def register_heads(register: Callable[[Head[Any, Any]], None], config: PluginSettings) -> None:
    register(TokenClassificationHead())
