"""Dynamic int8 quantization of the shared encoder, for CPU serving (``--dtype int8``).

What is quantized: every `torch.nn.Linear` inside the encoder's layer stack
(``bert.encoder``: the query, key, value and attention-output projections
and both feed-forward layers of every layer) becomes a dynamically quantized
linear layer: int8 weights with one scale per output channel; each call
quantizes its float32 input to 8 bits with one scale for the whole input
tensor (the batch's packed tokens), multiplies in int8 and returns float32.
Activations between layers stay float32. The embeddings, every LayerNorm,
the pooler and the pretraining heads stay float32, and so does every task
head: heads build their own modules from their head files, in the encoder's
activation dtype (float32), so heads trained on the float32 encoder load
unchanged and a head's private layers are never quantized.

Accuracy notes, measured on the default encoder (`benchmarks/bench_int8.py`):
per-channel weight scales instead of PyTorch's per-tensor default, and 8-bit
instead of PyTorch's reduced 7-bit input range, each roughly halve the drift
from float32. The reduced range exists because fbgemm's int8 kernels can
saturate intermediate sums on x86 CPUs without AVX-512 VNNI, so the full
range is used only where the CPU reports ``avx512_vnni``. Because the input
scale is per tensor, a row's result depends slightly on the rows it is
batched with (float32's does not, up to rounding).

The route is PyTorch's eager `torch.ao.quantization.quantize_dynamic`
(fbgemm/x86 kernels, CPU only). PyTorch marks it deprecated in favour of the
separate `torchao` package; it works in the installed PyTorch, and its
deprecation warnings are silenced here so start-up stays quiet.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

log = logging.getLogger(__name__)

INT8 = "int8"


class FullRangeDynamicLinear(DynamicLinear):
    """A dynamic int8 linear layer quantizing its input to all 8 bits (`reduce_range=False`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
        return out.to(x.dtype)


def check_device(device: torch.device) -> None:
    """Raise ValueError unless `device` is the CPU: the dynamic int8 kernels are CPU-only."""
    if device.type != "cpu":
        raise ValueError(
            f"dtype int8 (dynamic quantization) runs on the CPU only; got device {device}. "
            "Use --device cpu, or float16/bfloat16 on CUDA"
        )


def full_range_is_safe() -> bool:
    """True when 8-bit inputs cannot saturate: the x86 fbgemm kernels on a CPU with AVX-512 VNNI."""
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        return False
    return bool(torch.cpu.get_capabilities().get("avx512_vnni", False))


def quantize_linear_layers(module: torch.nn.Module, *, full_range: bool | None = None) -> int:
    """Replace, in place, every `torch.nn.Linear` under `module` by a dynamic int8 one; returns how many.

    `full_range` None decides by `full_range_is_safe`.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if full_range is None:
        full_range = full_range_is_safe()
    mapping = {torch.nn.Linear: FullRangeDynamicLinear if full_range else DynamicLinear}
    count = sum(1 for child in module.modules() if type(child) is torch.nn.Linear)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*quantized tensor creation functions.*deprecated", UserWarning)
        spec = {torch.nn.Linear: per_channel_dynamic_qconfig}
        quantize_dynamic(module, spec, dtype=torch.qint8, mapping=mapping, inplace=True)
    return count


def quantize_encoder(bert: torch.nn.Module) -> None:
    """Quantize the linear layers of `bert.encoder` (a float32 `BertModel` on the CPU) to int8."""
    full_range = full_range_is_safe()
    count = quantize_linear_layers(bert.get_submodule("encoder"), full_range=full_range)
    log.info(
        "int8: %d linear layers of the encoder quantized (per-channel weights, %d-bit inputs); "
        "embeddings, LayerNorm and pooler stay float32",
        count,
        8 if full_range else 7,
    )


def is_quantized_linear(module: torch.nn.Module) -> bool:
    """True for a dynamically quantized linear layer (what `quantize_linear_layers` puts in)."""
    return isinstance(module, DynamicLinear)
