"""bertserve: a gRPC model server for one shared BERT encoder with plugin heads.

The package's public names are few: `ServerConfig`, `create_server` and
`BertServeServer` to embed a server, `BackgroundServer` to run one on a thread
(tests, notebooks), and `__version__`. Plugin authors import from
`bertserve.plugin`, the plugin contract. Everything else is implementation,
laid out in layers that import downward only: `plugin` (the contract),
`model`, `runtime`, `wire`, then the app (`app`, `cli`, `settings`).
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from bertserve import _moved
from bertserve.version import __version__

_moved.install()

if TYPE_CHECKING:
    from bertserve.app import BertServeServer, create_server
    from bertserve.background import BackgroundServer
    from bertserve.config import ServerConfig

__all__ = ["BackgroundServer", "BertServeServer", "ServerConfig", "__version__", "create_server"]

_PUBLIC = {
    "BackgroundServer": "bertserve.background",
    "BertServeServer": "bertserve.app",
    "ServerConfig": "bertserve.config",
    "create_server": "bertserve.app",
}

# Plugin API 1.0 imported the contract from the top level; those names still
# resolve, with a DeprecationWarning pointing at `bertserve.plugin`.
_MOVED_TO_PLUGIN = {
    "API_VERSION", "WARMUP_TEXT", "AnswerSpan", "BertServeError", "ClassificationOutput", "EncodedRow",
    "EncoderHead", "EncoderOutputs", "FillMaskInput", "FillMaskOutput", "Head", "HeadArchitecture",
    "HeadDescription", "HeadFileMetadata", "HeadLoadContext", "HeadRunner", "HeadUnavailable", "InputError",
    "LabelScore", "MaskPredictions", "MaskedLMModule", "NextSentenceInput", "NextSentenceOutput",
    "QuestionAnsweringInput", "QuestionAnsweringOutput", "ServiceDefinition", "TextClassificationInput",
    "TokenPrediction", "context_room", "encode", "frozen_linear", "hookimpl", "load_encoder_head", "load_head_file",
    "load_masked_lm", "masked_lm_from_state", "read_head_metadata", "require_text", "save_head_file", "tokenize",
    "tokenize_windows",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _MOVED_TO_PLUGIN:
        warnings.warn(
            f"bertserve.{name} moved to bertserve.plugin.{name} (plugin API 1.1); import it from bertserve.plugin",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("bertserve.plugin"), name)
    if name == "SharedEncoder":
        warnings.warn(
            "bertserve.SharedEncoder is no longer public; heads get a bertserve.plugin.EncoderView",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("bertserve.model.encoder").SharedEncoder
    raise AttributeError(f"module 'bertserve' has no attribute {name!r}")
