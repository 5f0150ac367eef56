"""Device variants of the exactness tests, and the ranking comparison they share.

Every exactness test takes the `served` fixture, parametrised over three
variants: the CPU float32 server of conftest (exact, 1e-4), a CUDA float32
server (exact, 1e-4) and a CUDA bfloat16 server (5e-2 on probabilities, best
candidate only). The CUDA variants start their own server per test module and
are skipped where `torch.cuda.is_available()` is False. The reference always
runs in float32 on the CPU.

Set ``BERTSERVE_REDUCED_PRECISION_ON_CPU=1`` to run the "cuda" variants on the
CPU instead (same dtypes), which exercises the reduced-precision comparisons
on a machine without a GPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pytest
import torch
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig

_ON_CPU = os.environ.get("BERTSERVE_REDUCED_PRECISION_ON_CPU") == "1"


@dataclass(frozen=True)
class Variant:
    """Where the server runs and how closely it must match the float32 reference."""

    device: str
    dtype: str
    score_tol: float  # absolute, on probabilities and span scores
    logit_tol: float  # absolute, on raw logits
    logit_rtol: float  # relative, on raw logits (added to logit_tol)
    tie_tol: float  # reference scores this close may come in either order
    top_only: bool  # compare the best candidate only

    @property
    def exact(self) -> bool:
        return self.dtype == "float32"


_EXACT = {"score_tol": 1e-4, "logit_tol": 1e-4, "logit_rtol": 0.0, "tie_tol": 1e-6, "top_only": False}
CPU_FLOAT32 = Variant("cpu", "float32", **_EXACT)
CUDA_FLOAT32 = Variant("cuda", "float32", **_EXACT)
# bfloat16 keeps 8 significant bits (one rounding: relative error <= 2**-8).
# Measured with bfloat16 on the CPU against float32 on the tiny model: hidden
# states move by <= 0.035, probabilities by <= 3e-3, QA logits (up to ~10 in
# magnitude, where one bfloat16 step is 0.06) by <= 0.13. The tolerances leave
# a margin for other kernels; rankings are compared at the top only, and
# reference scores within tie_tol of each other may come in either order.
CUDA_BFLOAT16 = Variant(
    "cuda", "bfloat16", score_tol=5e-2, logit_tol=0.25, logit_rtol=2e-2, tie_tol=5e-2, top_only=True
)

VARIANTS = [
    pytest.param(CPU_FLOAT32, id="cpu-float32"),
    pytest.param(CUDA_FLOAT32, id="cuda-float32"),
    pytest.param(CUDA_BFLOAT16, id="cuda-bfloat16"),
]


@dataclass(frozen=True)
class Served:
    """A running server and the variant it was started for."""

    server: BackgroundServer
    variant: Variant

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture(scope="module", params=VARIANTS)
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The server for one variant: conftest's shared CPU server, or a CUDA one."""
    variant: Variant = request.param
    if variant.device == "cpu":
        yield Served(request.getfixturevalue("server"), variant)
        return
    device = variant.device
    if _ON_CPU:
        device = "cpu"
    elif not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    tiny_checkpoint = request.getfixturevalue("tiny_checkpoint")
    head_files = request.getfixturevalue("head_files")
    config = ServerConfig(
        model=str(tiny_checkpoint), head_files=dict(head_files), device=device, dtype=variant.dtype, port=0
    )
    with BackgroundServer(config) as running:
        yield Served(running, variant)


def assert_same_ranking(
    got: Sequence[tuple[Hashable, float]],
    expected: Sequence[tuple[Hashable, float]],
    reference: Mapping[Hashable, float],
    variant: Variant,
    what: str,
) -> None:
    """Compare a server ranking with the reference ranking of the same length.

    `got` and `expected` are (candidate, score) lists, best first; `reference`
    holds the reference score of every candidate the server may return. Each
    rank must hold the reference's candidate, or one whose reference score is
    within `tie_tol` of it (near-ties may come in either order); each score
    must be within `score_tol` of the reference's score for that rank and for
    that candidate.
    """
    assert len(got) == len(expected), f"{what}: {len(got)} candidates, reference has {len(expected)}"
    keys = [key for key, _ in got]
    assert len(set(keys)) == len(keys), f"{what}: duplicate candidates {keys}"
    scores = [score for _, score in got]
    assert all(a >= b for a, b in zip(scores, scores[1:])), f"{what}: scores not in decreasing order {scores}"
    if variant.top_only:
        got, expected = got[:1], expected[:1]
    for rank, ((key, score), (expected_key, expected_score)) in enumerate(zip(got, expected)):
        assert math.isclose(score, expected_score, rel_tol=0, abs_tol=variant.score_tol), (
            f"{what}, rank {rank}: score {score} differs from reference {expected_score} ({expected_key!r})"
        )
        assert key in reference, f"{what}, rank {rank}: {key!r} is not a candidate of the reference"
        assert math.isclose(score, reference[key], rel_tol=0, abs_tol=variant.score_tol), (
            f"{what}, rank {rank}: {key!r} scored {score}, reference {reference[key]}"
        )
        if key != expected_key:
            assert abs(reference[key] - expected_score) <= variant.tie_tol, (
                f"{what}, rank {rank}: server has {key!r} (reference {reference[key]}), "
                f"reference has {expected_key!r} ({expected_score}); not a near-tie"
            )
