"""Build served head modules from head files (or the checkpoint's own heads).

Head files written by `bertserve train-head` have architecture
``encoder-head`` (an `EncoderHead`, its `HeadArchitecture` in the metadata
under ``head``) or ``masked-lm`` (a `MaskedLMModule`). The older single-layer
layouts ``pooled-linear`` (``classifier.*``, as in
`BertForSequenceClassification`) and ``token-linear`` (``qa_outputs.*``, as
in `BertForQuestionAnswering`) load as the equivalent `EncoderHead`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bertserve.plugin.encoder import EncoderView
from bertserve.plugin.errors import HeadUnavailable
from bertserve.plugin.headfile import HeadFileMetadata, load_head_file
from bertserve.plugin.modules import EncoderHead, HeadArchitecture, MaskedLMModule

ENCODER_HEAD = "encoder-head"
MASKED_LM = "masked-lm"
# Legacy one-layer layouts: architecture name -> (pooling, tensor prefix).
_LINEAR_LAYOUTS = {"pooled-linear": ("pooled", "classifier"), "token-linear": ("tokens", "qa_outputs")}


def load_encoder_head(
    path: Path | None, *, head_name: str, task: str, encoder: EncoderView, num_outputs: int | None = None
) -> tuple[EncoderHead, HeadFileMetadata]:
    """An `EncoderHead` from a head file, frozen, on the encoder's device and dtype.

    `num_outputs` fixes the output width (2 for QA start/end and NSP); None
    takes it from the file's labels. Raises `HeadUnavailable` naming what
    does not fit.
    """
    tensors, metadata = load_head_file(
        path, head_name=head_name, task=task, architecture=(ENCODER_HEAD, *_LINEAR_LAYOUTS), encoder=encoder
    )
    if metadata.architecture in _LINEAR_LAYOUTS:
        pooling, prefix = _LINEAR_LAYOUTS[metadata.architecture]
        architecture = HeadArchitecture(pooling=pooling)
        tensors = {name.replace(f"{prefix}.", "output.", 1): tensor for name, tensor in tensors.items()}
    else:
        architecture = HeadArchitecture.from_dict(metadata.extra.get("head", {}))
    try:
        architecture.check(encoder.config, has_pooler=encoder.has_pooler)
    except ValueError as error:
        raise HeadUnavailable(f"{path}: {error}") from None
    width = num_outputs if num_outputs is not None else len(metadata.labels)
    if width < 1:
        raise HeadUnavailable(f"{path} names no labels")
    module = EncoderHead(architecture, encoder.config, width, pooler=encoder.pooler)
    _load_state(module, tensors, path)
    return module.to(device=encoder.device, dtype=encoder.dtype).eval().requires_grad_(False), metadata


def load_masked_lm(path: Path | None, *, head_name: str, encoder: EncoderView) -> MaskedLMModule:
    """A trained masked-LM head from a head file, decoder tied to the encoder."""
    tensors, metadata = load_head_file(
        path, head_name=head_name, task="fill-mask", architecture=MASKED_LM, encoder=encoder
    )
    spec = metadata.extra.get("head", {})
    private_layers = int(spec.get("private_layers", 0))
    if not 0 <= private_layers <= int(encoder.config.num_hidden_layers):
        raise HeadUnavailable(f"{path}: {private_layers} private layers do not fit this encoder")
    return masked_lm_from_state(
        tensors, encoder, path, layer_mix=bool(spec.get("layer_mix", False)), private_layers=private_layers
    )


def masked_lm_from_state(
    state: dict[str, torch.Tensor],
    encoder: EncoderView,
    source: object,
    *,
    layer_mix: bool = False,
    private_layers: int = 0,
) -> MaskedLMModule:
    """A frozen `MaskedLMModule` from ``cls.predictions``-style tensors."""
    module = MaskedLMModule(encoder.config, encoder.word_embeddings, layer_mix=layer_mix, private_layers=private_layers)
    kept = {name: tensor for name, tensor in state.items() if not name.startswith("decoder.")}
    if "bias" not in kept and "decoder.bias" in state:
        kept["bias"] = state["decoder.bias"]
    _load_state(module, kept, source)
    return module.to(device=encoder.device, dtype=encoder.dtype).eval().requires_grad_(False)


def _load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: object) -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        summary = str(error).splitlines()[0]
        raise HeadUnavailable(f"{source}: weights do not fit this head and encoder ({summary})") from None
