"""bertserve: a gRPC model server for one shared BERT encoder with plugin heads.

This module is the public API for head plugins: the `Head` contract, the
`hookimpl` marker, the task input/output types, and helpers.
"""

from __future__ import annotations

from .encoder import SharedEncoder
from .errors import BertServeError, HeadUnavailable, InputError
from .head_modules import EncoderHead, HeadArchitecture, MaskedLMModule
from .headfile import HeadFileMetadata, frozen_linear, load_head_file, read_head_metadata, save_head_file
from .heads import WARMUP_TEXT, EncodedRow, EncoderOutputs, Head, HeadDescription, HeadLoadContext
from .hookspecs import API_VERSION, hookimpl
from .runtime import HeadRunner
from .service_definition import ServiceDefinition
from .tasks import (
    AnswerSpan,
    ClassificationOutput,
    FillMaskInput,
    FillMaskOutput,
    LabelScore,
    MaskPredictions,
    NextSentenceInput,
    NextSentenceOutput,
    QuestionAnsweringInput,
    QuestionAnsweringOutput,
    TextClassificationInput,
    TokenPrediction,
)
from .text import context_room, encode, require_text, tokenize, tokenize_windows
from .trained_heads import load_encoder_head, load_masked_lm, masked_lm_from_state

__version__ = "0.1.0"

__all__ = [
    "API_VERSION",
    "WARMUP_TEXT",
    "HeadRunner",
    "ServiceDefinition",
    "AnswerSpan",
    "BertServeError",
    "ClassificationOutput",
    "EncodedRow",
    "EncoderHead",
    "EncoderOutputs",
    "FillMaskInput",
    "FillMaskOutput",
    "Head",
    "HeadArchitecture",
    "HeadDescription",
    "HeadFileMetadata",
    "HeadLoadContext",
    "HeadUnavailable",
    "InputError",
    "LabelScore",
    "MaskPredictions",
    "MaskedLMModule",
    "NextSentenceInput",
    "NextSentenceOutput",
    "QuestionAnsweringInput",
    "QuestionAnsweringOutput",
    "SharedEncoder",
    "TextClassificationInput",
    "TokenPrediction",
    "context_room",
    "encode",
    "frozen_linear",
    "hookimpl",
    "load_encoder_head",
    "load_head_file",
    "load_masked_lm",
    "masked_lm_from_state",
    "read_head_metadata",
    "require_text",
    "save_head_file",
    "tokenize",
    "tokenize_windows",
    "__version__",
]
