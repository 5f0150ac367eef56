"""Comparing another language's JSON output with the Python client's answers (the Node and Go interop tests)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bertserve_client import HeadInfo

SCORE_TOLERANCE = 1e-5
# Question-answering inputs whose contexts hold multi-byte characters: precomposed accents
# (2 UTF-8 bytes), CJK (3 bytes), emoji outside the BMP (4 bytes, two UTF-16 units) with a
# ZWJ family, combining marks, and mathematical letters (4 bytes). Every language's test
# slices these contexts by the answers' offsets in its own string type.
MULTIBYTE_QA_INPUTS = [
    ("who went to the café?", "Zoë and Renée went to the café in Köln; the crème brûlée was great."),
    ("who lives in tokyo?", "東京 is where 山田 lives, and 北京 is far from 大阪 ."),
    ("what happened?", "john 🎉 went home 😀 at night 🏠 and mary 👩\u200d👩\u200d👧 stayed ."),
    ("who won?", "Zoe\u0308 and Rene\u0301e went to the cafe\u0301, then 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🚀 won ."),
]


def assert_matches(actual: Any, expected: Any, where: str = "") -> None:
    """Deep equality, with floats compared within SCORE_TOLERANCE; `where` names the spot that differs."""
    if isinstance(expected, float):
        # JSON may spell a float that is a whole number (0.0, 1.0) as an int.
        is_number = isinstance(actual, (int, float)) and not isinstance(actual, bool)
        assert is_number, f"{where}: {actual!r} is not a number"
        close = math.isclose(actual, expected, rel_tol=0.0, abs_tol=SCORE_TOLERANCE)
        assert close, f"{where}: {actual!r} != {expected!r} (tolerance {SCORE_TOLERANCE})"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_matches(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != {len(expected)}"
        for index, (got, want) in enumerate(zip(actual, expected)):
            assert_matches(got, want, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
        assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"


def python_head(head: HeadInfo) -> dict[str, Any]:
    """A HeadInfo shaped like the proto message, its schemas as JSON values."""
    fields = dataclasses.asdict(head)
    fields["state"] = f"HEAD_STATE_{head.state.value}"
    return fields
