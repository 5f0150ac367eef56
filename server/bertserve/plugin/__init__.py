"""The plugin contract: everything a head plugin author imports, and nothing else.

``from bertserve.plugin import Head, hookimpl, ...``. A plugin module declares
``BERTSERVE_API_VERSION`` (the `API_VERSION` it targets) and implements hooks
(`hooks`) that register `Head` objects and, optionally, typed gRPC services
(`ServiceDefinition`). A head reads the shared encoder through `EncoderView`
and the settings through `PluginSettings`, takes and returns the task types
(`tasks`), and raises the errors below. The building blocks for heads that
tokenize, load head files or reuse the trained head modules are here too.

This package imports nothing of the server: the server is built on it. The
plugin guide, ``docs/plugins.md``, walks through it with a tested example.
"""

from __future__ import annotations

from bertserve.plugin.encoder import EncoderView, Text
from bertserve.plugin.errors import (
    BertServeError,
    DeadlineExceeded,
    FieldViolation,
    HeadFailed,
    HeadNotFound,
    HeadNotLoaded,
    HeadUnavailable,
    InputError,
    InvalidArgument,
    NotServing,
    QueueFull,
)
from bertserve.plugin.head import (
    WARMUP_TEXT,
    EncodedRow,
    EncoderOutputs,
    Head,
    HeadDescription,
    HeadLoadContext,
)
from bertserve.plugin.headfile import (
    HeadFileMetadata,
    frozen_linear,
    load_head_file,
    read_head_metadata,
    save_head_file,
)
from bertserve.plugin.hooks import API_VERSION, hookimpl
from bertserve.plugin.modules import EncoderHead, HeadArchitecture, MaskedLMModule
from bertserve.plugin.service import HeadRunner, InputFields, ServiceDefinition
from bertserve.plugin.settings import PluginSettings
from bertserve.plugin.tasks import (
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
from bertserve.plugin.text import context_room, encode, require_text, tokenize, tokenize_windows
from bertserve.plugin.trained import load_encoder_head, load_masked_lm, masked_lm_from_state

__all__ = [
    # hooks and versions
    "API_VERSION",
    "hookimpl",
    # the head and what it gets
    "Head",
    "HeadLoadContext",
    "HeadDescription",
    "EncodedRow",
    "EncoderOutputs",
    "EncoderView",
    "Text",
    "PluginSettings",
    "WARMUP_TEXT",
    # typed services
    "ServiceDefinition",
    "HeadRunner",
    "InputFields",
    # errors a plugin may raise
    "InputError",
    "HeadUnavailable",
    "BertServeError",
    "InvalidArgument",
    "FieldViolation",
    "HeadNotFound",
    "HeadNotLoaded",
    "HeadFailed",
    "NotServing",
    "QueueFull",
    "DeadlineExceeded",
    # the built-in tasks' inputs and outputs
    "FillMaskInput",
    "FillMaskOutput",
    "MaskPredictions",
    "TokenPrediction",
    "NextSentenceInput",
    "NextSentenceOutput",
    "TextClassificationInput",
    "ClassificationOutput",
    "LabelScore",
    "QuestionAnsweringInput",
    "QuestionAnsweringOutput",
    "AnswerSpan",
    # building blocks: tokenizing, head files, trained head modules
    "encode",
    "tokenize",
    "tokenize_windows",
    "context_room",
    "require_text",
    "HeadFileMetadata",
    "save_head_file",
    "load_head_file",
    "read_head_metadata",
    "frozen_linear",
    "EncoderHead",
    "HeadArchitecture",
    "MaskedLMModule",
    "load_encoder_head",
    "load_masked_lm",
    "masked_lm_from_state",
]
