"""Head files this project trained for the offline default encoder.

They are served automatically when the running encoder is exactly the one a
file was trained on (same fingerprint), so they never attach to another model.
How they were made and how good they are: ``docs/default-model.md``.
"""

from __future__ import annotations

from pathlib import Path

from bertserve.plugin import HeadLoadContext, read_head_metadata

DEFAULT_HEADS_DIR = Path(__file__).parent


def packaged_head_file(head_name: str, context: HeadLoadContext) -> Path | None:
    """The packaged head file for `head_name` trained on this encoder, if any."""
    candidate = DEFAULT_HEADS_DIR / f"{head_name}.safetensors"
    if not candidate.is_file():
        return None
    metadata = read_head_metadata(candidate)
    if metadata is None or metadata.encoder_fingerprint != context.encoder.fingerprint:
        return None
    return candidate


def configured_or_packaged(head_name: str, context: HeadLoadContext) -> Path | None:
    """The head file the operator gave, else the packaged one for this encoder."""
    return context.head_file if context.head_file is not None else packaged_head_file(head_name, context)
