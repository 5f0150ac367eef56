"""Checks a plugin's hooks and a registered head's structure before the server relies on them.

Both checks are pure: they return what is wrong, each with the fix, and the
plugin manager turns that into a refused plugin or a FAILED head. Nothing a
plugin declares wrongly stops the server or breaks an RPC of another head.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from typing import Any

from bertserve.plugin.head import Head
from bertserve.plugin.schema import json_schema

HEAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Each method of the contract and the arguments it takes after `self`.
_METHODS = {"load": 1, "preprocess": 1, "forward": 2, "postprocess": 3}


def hook_problems(plugin: object, hook_names: set[str], project_name: str) -> list[str]:
    """Hook implementations of `plugin` that match no hook, each with the closest hook name."""
    problems = []
    for name in dir(plugin):
        try:
            value = getattr(plugin, name)
        except Exception:  # a property that raises is not a hook
            continue
        if not callable(value) or not hasattr(value, f"{project_name}_impl") or name in hook_names:
            continue
        close = difflib.get_close_matches(name, sorted(hook_names), n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(sorted(hook_names))}"
        problems.append(f"@hookimpl {name!r} is not a bertserve hook; {fix}")
    return problems


def head_name_problem(head: object) -> str | None:
    """Why `head` cannot even be recorded (not a Head, or no usable name), or None."""
    if not isinstance(head, Head):
        return f"registered {head!r}, which is not a Head; subclass bertserve.plugin.Head"
    name = getattr(head, "name", None)
    if not isinstance(name, str) or not HEAD_NAME.match(name):
        return (
            f"registered {type(head).__name__} with name {name!r}; set `name` to 1-128 letters, digits, "
            "'.', '_' or '-' (starting with a letter or digit)"
        )
    return None


def head_problems(head: Head[Any, Any]) -> list[str]:
    """What is wrong with a head's declared structure (task, types, text fields, methods), with fixes."""
    problems = []
    if not isinstance(head.task, str) or not head.task:
        problems.append("`task` is empty; set it to the task the head serves, e.g. 'sentiment'")
    for attribute in ("input_type", "output_type"):
        problems += _type_problems(head, attribute)
    if not problems:
        problems += _text_field_problems(head)
    if not isinstance(head.needs_hidden_states, bool):
        problems.append("`needs_hidden_states` must be True or False")
    for method, arguments in _METHODS.items():
        problem = _method_problem(head, method, arguments)
        if problem:
            problems.append(problem)
    return problems


def _type_problems(head: Head[Any, Any], attribute: str) -> list[str]:
    declared = getattr(head, attribute, None)
    if declared is None:
        return [f"`{attribute}` is not set; set it to a frozen dataclass"]
    if not (isinstance(declared, type) and dataclasses.is_dataclass(declared)):
        return [f"`{attribute}` is {declared!r}, not a dataclass; decorate the class with @dataclass(frozen=True)"]
    try:
        json_schema(declared)
    except Exception as error:
        return [
            f"`{attribute}` {declared.__name__} has no JSON Schema ({error}); use str, int, float, bool, "
            "tuples, lists, dicts with str keys, Literal, Optional and nested dataclasses"
        ]
    return []


def _text_field_problems(head: Head[Any, Any]) -> list[str]:
    fields = head.text_fields
    if not isinstance(fields, tuple | list) or len(fields) > 2:
        return [f"`text_fields` is {fields!r}; give a tuple of at most two field names of the input type"]
    names = {field.name for field in dataclasses.fields(head.input_type)}
    unknown = [field for field in fields if field not in names]
    if unknown:
        return [f"`text_fields` names {unknown}, which are not fields of {head.input_type.__name__} ({sorted(names)})"]
    return []


def _method_problem(head: Head[Any, Any], method: str, arguments: int) -> str | None:
    function = getattr(head, method, None)
    if not callable(function):
        return f"`{method}` is not a method; implement {method} as the Head contract says"
    try:
        inspect.signature(function).bind(*([None] * arguments))
    except TypeError:
        return f"`{method}` does not take {arguments} argument(s) after self; see Head.{method} for its signature"
    except ValueError:  # no signature to inspect (a builtin): trust it
        return None
    return None
