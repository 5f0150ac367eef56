"""Comparing another language's JSON output with the Python client's answers (the Node and Go interop tests)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bertserve_client import HeadInfo

SCORE_TOLERANCE = 1e-5


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
