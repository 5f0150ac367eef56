"""`PluginSettings`: the server settings a plugin may read.

Hooks get it as their `config` argument and heads as `HeadLoadContext.config`.
It holds what a head may need to decide how to load; the rest of the server's
configuration (ports, tokens, TLS files) is not a plugin's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True)
class PluginSettings:
    """Read-only settings for plugins.

    `model` is the encoder checkpoint as configured (None: the offline
    default); `device` and `dtype` as configured (``auto`` resolves at load:
    read `EncoderView.device` and `dtype` for what was chosen);
    `max_sequence_length` the configured cap (None: the checkpoint's);
    `head_files` maps head names to the files given with ``--head-file``.
    """

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_sequence_length: int | None = None
    head_files: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
