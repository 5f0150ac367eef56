"""Analyze: several heads on the same texts, one encoder row per distinct tokenization, errors in place.

`AnalyzePlan` holds, for every (head, text) entry, the head's input, its
encoder rows, and then its result or its error. What is wrong with the call as
a whole (an unknown head, options that break a head's schema) fails the call
before a plan exists; what goes wrong for one entry (a text one head cannot
take, a head that raises) becomes that entry's error and every other entry is
still answered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bertserve.plugin.errors import BertServeError, FieldViolation, HeadFailed, InputError, InvalidArgument
from bertserve.plugin.head import EncodedRow, Head

Entry = tuple[int, int]  # (head index, text index)
Group = list[tuple[Head[Any, Any], EncodedRow]]  # one encoder row and the heads that read it
Guard = Callable[..., Any]  # (head, stage, function, *args) -> function(*args), naming the head on failure

# Errors that belong to one entry; any other error (deadline, shutdown) ends the whole call.
ENTRY_ERRORS = (HeadFailed, InvalidArgument)


@dataclass
class AnalyzePlan:
    """Every (head, text) entry of one Analyze call: inputs, rows, results and errors."""

    heads: Sequence[Head[Any, Any]]
    items: Sequence[Sequence[Any]]  # per head, per text
    rows: dict[Entry, list[EncodedRow]] = field(default_factory=dict)
    errors: dict[Entry, BertServeError] = field(default_factory=dict)
    _results: dict[int, Any] = field(default_factory=dict)  # id(row) -> the head's result for it

    @property
    def text_count(self) -> int:
        return len(self.items[0]) if self.items else 0

    def entries(self) -> list[Entry]:
        return [(h, t) for t in range(self.text_count) for h in range(len(self.heads))]

    def preprocess(self, guard: Guard) -> None:
        """Tokenize every entry; a bad text for one head is that entry's INVALID_ARGUMENT."""
        for h, t in self.entries():
            head = self.heads[h]
            try:
                self.rows[h, t] = guard(head, "preprocess", head.preprocess, self.items[h][t])
            except InputError as error:
                where = f"inputs[{t}]"
                message = f"head {head.name!r} cannot take {where}: {error.description}"
                violation = FieldViolation(where, f"head {head.name!r}: {error.description}")
                self.errors[h, t] = InvalidArgument(message, field_violations=[violation], metadata={"head": head.name})
            except ENTRY_ERRORS as error:
                self.errors[h, t] = error

    def groups(self) -> list[Group]:
        """Encoder rows to compute: per text, heads whose rows tokenize alike share one row."""
        groups: list[Group] = []
        for t in range(self.text_count):
            by_tokens: dict[tuple[tuple[int, ...], tuple[int, ...]], Group] = {}
            for h, head in enumerate(self.heads):
                for row in self.rows.get((h, t), []) if (h, t) not in self.errors else []:
                    by_tokens.setdefault((tuple(row.input_ids), tuple(row.token_type_ids)), []).append((head, row))
            groups.extend(by_tokens.values())
        return groups

    def take_results(self, groups: Sequence[Group], results: Sequence[Sequence[Any]]) -> None:
        """Record each row's result; a failed row fails its entry, a call-wide error is raised."""
        owner = {id(row): entry for entry, rows in self.rows.items() for row in rows}
        for group, group_results in zip(groups, results):
            for (_, row), result in zip(group, group_results):
                if isinstance(result, ENTRY_ERRORS):
                    self.errors.setdefault(owner[id(row)], result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self._results[id(row)] = result

    def outputs(self, guard: Guard) -> list[list[dict[str, Any] | BertServeError]]:
        """Per text, per head in request order: the rendered output or the entry's error."""
        outputs: list[list[dict[str, Any] | BertServeError]] = []
        for t in range(self.text_count):
            outputs.append([self._output(guard, h, t) for h in range(len(self.heads))])
        return outputs

    def _output(self, guard: Guard, h: int, t: int) -> dict[str, Any] | BertServeError:
        if (h, t) in self.errors:
            return self.errors[h, t]
        head, rows = self.heads[h], self.rows[h, t]
        try:
            output = guard(head, "postprocess", head.postprocess, self.items[h][t], rows, self.results_of(rows))
            rendered: dict[str, Any] = guard(head, "render_output", head.render_output, output)
            return rendered
        except ENTRY_ERRORS as error:
            return error

    def results_of(self, rows: Sequence[EncodedRow]) -> list[Any]:
        return [self._results[id(row)] for row in rows]

    def size(self) -> int:
        """Tokens the heads read: the postprocessing size."""
        return sum(len(row) for rows in self.rows.values() for row in rows)
