"""Trainable head modules on the frozen shared encoder.

The same module classes are trained by `bertserve train-head` and served by
the heads, so a served head computes exactly what was trained. A module
reads the encoder in two steps: `select_features` picks from the encoder's
outputs what the head needs (this is what training caches), and `forward`
turns those features into logits.

Architectures (`HeadArchitecture`):

- ``pooling``: ``first`` ([CLS] hidden state), ``mean`` (mean over real
  tokens), ``pooled`` (the checkpoint's pooler on [CLS]) or ``tokens``
  (one output per token, for span heads).
- ``layer_mix``: a learned softmax-weighted mix of every encoder layer's
  pooled vector (embeddings included) instead of the last layer only.
- ``mlp_hidden``: 0 for a linear layer, else a one-hidden-layer MLP.
- ``private_layers``: k > 0 gives the head its own trainable copy of the
  encoder's top k layers, fed the shared encoder's hidden state k layers
  below the top; the rest of the encoder stays shared.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer, BertPredictionHeadTransform

from bertserve.nn import packed
from bertserve.plugin.head import EncoderOutputs

POOLINGS = ("first", "mean", "pooled", "tokens")

# What `EncoderHead.select_features` returns: a pooled tensor, or token states and their mask.
HeadFeatures = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class HeadArchitecture:
    """How a head reads the shared encoder and what it puts on top."""

    pooling: str = "first"
    layer_mix: bool = False
    mlp_hidden: int = 0
    private_layers: int = 0
    dropout: float = 0.1

    def check(self, config: BertConfig, *, has_pooler: bool = True) -> None:
        """Raise ValueError, naming the setting, when this does not fit `config`."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")
        layers = int(config.num_hidden_layers)
        if not 0 <= self.private_layers <= layers:
            raise ValueError(f"private_layers must be between 0 and {layers}; got {self.private_layers}")
        if self.layer_mix and (self.private_layers or self.pooling in ("pooled", "tokens")):
            raise ValueError("layer_mix works with first or mean pooling and no private layers")
        if self.mlp_hidden < 0:
            raise ValueError(f"mlp_hidden must be 0 (linear) or positive; got {self.mlp_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.pooling == "pooled" and not has_pooler:
            raise ValueError("pooling 'pooled' needs the checkpoint's pooler weights, which this encoder lacks")

    def needs_hidden_states(self) -> bool:
        """True when the head reads layers below the top."""
        return self.layer_mix or self.private_layers > 0

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``mean of 7-layer mix + MLP(256)``."""
        source = f"{self.private_layers} private layer(s), " if self.private_layers else ""
        if self.pooling == "tokens":
            read = "every token"
        else:
            read = {"first": "[CLS]", "mean": "mean", "pooled": "pooler"}[self.pooling]
            read += " of the layer mix" if self.layer_mix else ""
        top = f"MLP({self.mlp_hidden})" if self.mlp_hidden else "linear"
        return f"{source}{read} + {top}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadArchitecture:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (batch, 1, 1, tokens) mask that adds 0 on real tokens and -inf-ish on padding."""
    blocked = (attention_mask[:, None, None, :] == 0).to(dtype)
    return blocked * torch.finfo(dtype).min


def copy_top_layers(config: BertConfig, count: int, init: list[torch.nn.Module] | None) -> torch.nn.ModuleList | None:
    """`count` trainable encoder layers: copies of the top `count` of `init`, or fresh ones; None for 0."""
    if not count:
        return None
    layers = [copy.deepcopy(layer) for layer in init[-count:]] if init else [BertLayer(config) for _ in range(count)]
    return torch.nn.ModuleList(layers).requires_grad_(True)


def run_layers(layers: torch.nn.ModuleList, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`hidden` through `layers`, padding masked out.

    When serving (eval mode) the layers run on the real tokens only, packed
    like the shared encoder's forward, and padding positions come back zero;
    in training they run padded, with their dropout.
    """
    if not layers.training:
        flat, layout = packed.pack_padded(hidden, attention_mask)
        for layer in layers:
            flat = packed.run_layer(layer, flat, layout)
        out = hidden.new_zeros(hidden.shape)
        out[attention_mask.bool()] = flat
        return out
    mask = additive_attention_mask(attention_mask, hidden.dtype)
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask)
    return hidden


class LayerMix(torch.nn.Module):
    """A learned softmax-weighted, scaled sum over the layer dimension (dim 1)."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.layer_weights = torch.nn.Parameter(torch.zeros(layers))
        self.layer_scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        weights = self.layer_weights.softmax(dim=0).to(stacked.dtype)
        return self.layer_scale.to(stacked.dtype) * (stacked * weights[None, :, None]).sum(dim=1)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` over the real tokens of each row."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class EncoderHead(torch.nn.Module):
    """A classification or per-token head on the shared encoder.

    `pooler` is the shared encoder's pooler module, used (never copied or
    trained) when ``pooling == "pooled"``. `private_layer_init` optionally
    gives the encoder's own top layers, copied as the private layers' start.
    """

    def __init__(
        self,
        architecture: HeadArchitecture,
        config: BertConfig,
        num_outputs: int,
        *,
        pooler: torch.nn.Module | None = None,
        private_layer_init: list[torch.nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.architecture = architecture
        self.num_outputs = num_outputs
        hidden_size = int(config.hidden_size)
        self.private_layers = copy_top_layers(config, architecture.private_layers, private_layer_init)
        if architecture.layer_mix:
            self.mix = LayerMix(int(config.num_hidden_layers) + 1)
        # A tuple keeps the shared pooler out of this module's parameters and state.
        self._pooler = (pooler,)
        self.dropout = torch.nn.Dropout(architecture.dropout)
        if architecture.mlp_hidden:
            self.hidden = torch.nn.Linear(hidden_size, architecture.mlp_hidden)
            self.activation = torch.nn.GELU()
            self.output = torch.nn.Linear(architecture.mlp_hidden, num_outputs)
        else:
            self.output = torch.nn.Linear(hidden_size, num_outputs)

    def select_features(self, outputs: EncoderOutputs) -> HeadFeatures:
        """What `forward` reads, taken from the shared encoder's outputs."""
        arch = self.architecture
        if arch.private_layers:
            assert outputs.hidden_states is not None, "encoder outputs lack hidden states"
            return outputs.hidden_states[-(arch.private_layers + 1)], outputs.attention_mask
        if arch.pooling == "tokens":
            return outputs.sequence_output, outputs.attention_mask
        if arch.pooling == "pooled":
            assert outputs.pooled_output is not None, "encoder has no pooler"
            return outputs.pooled_output
        if arch.layer_mix:
            assert outputs.hidden_states is not None, "encoder outputs lack hidden states"
            return torch.stack([self._pool(layer, outputs.attention_mask) for layer in outputs.hidden_states], dim=1)
        return self._pool(outputs.sequence_output, outputs.attention_mask)

    def forward(self, features: HeadFeatures) -> torch.Tensor:
        """Logits: (rows, outputs), or (rows, tokens, outputs) for ``tokens``."""
        arch = self.architecture
        if arch.private_layers:
            assert isinstance(features, tuple) and self.private_layers is not None
            hidden, attention_mask = features
            hidden = run_layers(self.private_layers, hidden, attention_mask)
            if arch.pooling == "tokens":
                summary = hidden
            elif arch.pooling == "pooled":
                pooler = self._pooler[0]
                assert pooler is not None, "pooled head built without the encoder's pooler"
                summary = pooler(hidden)
            else:
                summary = self._pool(hidden, attention_mask)
        elif isinstance(features, tuple):
            summary = features[0]
        elif arch.layer_mix:
            summary = self.mix(features)
        else:
            summary = features
        summary = self.dropout(summary)
        if arch.mlp_hidden:
            summary = self.dropout(self.activation(self.hidden(summary)))
        return self.output(summary)  # type: ignore[no-any-return]

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.architecture.pooling == "mean":
            return mean_pool(hidden, attention_mask)
        return hidden[:, 0]


class MaskedLMModule(torch.nn.Module):
    """BERT's masked-LM head: transform (dense, activation, LayerNorm) and an
    output bias, with the decoder tied to the encoder's word embeddings.

    Parameter names follow ``cls.predictions`` of `BertForPreTraining`, so a
    checkpoint's own head and a trained head file load the same way. With
    `layer_mix` the transform reads a learned mix of every layer's hidden
    state at the mask position instead of the last layer's; with
    `private_layers` k it reads the output of its own copy of the top k
    layers, run on the shared encoder's hidden states k layers below the top.
    """

    def __init__(
        self,
        config: BertConfig,
        word_embeddings: torch.Tensor,
        *,
        layer_mix: bool = False,
        private_layers: int = 0,
        private_layer_init: list[torch.nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if layer_mix and private_layers:
            raise ValueError("a masked-LM head takes layer_mix or private_layers, not both")
        self.layer_mix = layer_mix
        self.private_layers = copy_top_layers(config, private_layers, private_layer_init)
        if layer_mix:
            self.mix = LayerMix(int(config.num_hidden_layers) + 1)
        self.transform = BertPredictionHeadTransform(config)
        self.bias = torch.nn.Parameter(torch.zeros(int(config.vocab_size)))
        # Tied, never copied: a tuple keeps the embedding matrix out of this module's state.
        self._decoder = (word_embeddings,)

    @property
    def decoder_weight(self) -> torch.Tensor:
        return self._decoder[0]

    @property
    def needs_hidden_states(self) -> bool:
        return self.layer_mix or self.private_layers is not None

    def select_features(self, outputs: EncoderOutputs, row_index: torch.Tensor, token_index: torch.Tensor) -> Any:
        """What `forward` reads for the mask positions (row_index[i], token_index[i]):
        their hidden states (positions, hidden), or (positions, layers, hidden)
        with `layer_mix`; with private layers, the whole rows' hidden states
        below them, the attention mask and the positions."""
        if self.private_layers is not None:
            assert outputs.hidden_states is not None, "encoder outputs lack hidden states"
            below = outputs.hidden_states[-(len(self.private_layers) + 1)]
            return below, outputs.attention_mask, row_index, token_index
        if not self.layer_mix:
            return outputs.sequence_output[row_index, token_index]
        assert outputs.hidden_states is not None, "encoder outputs lack hidden states"
        return torch.stack([layer[row_index, token_index] for layer in outputs.hidden_states], dim=1)

    def forward(self, features: Any) -> torch.Tensor:
        """Vocabulary logits from `select_features`' output, (positions, vocab)."""
        if self.private_layers is not None:
            hidden, attention_mask, row_index, token_index = features
            hidden = run_layers(self.private_layers, hidden, attention_mask)[row_index, token_index]
        elif self.layer_mix:
            hidden = self.mix(features)
        else:
            hidden = features
        decoder = self._decoder[0]
        return self.transform(hidden) @ decoder.T.to(hidden.dtype) + self.bias.to(hidden.dtype)
