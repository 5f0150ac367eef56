"""Analyze: several heads on the same texts, one encoder row per distinct tokenization, errors in place.

`AnalyzePlan` holds, for every (head, text) entry, the head's input, its
encoder rows, and then its result or its error. What is wrong with the call as
a whole (an unknown head, options that break a head's schema) fails the call
before a plan exists; what goes wrong for one entry (a text one head cannot
take, a head that raises) becomes that entry's error and every other entry is
still answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bertserve.plugin.errors import BertServeError, FieldViolation, HeadFailed, InputError, InvalidArgument
from bertserve.plugin.head import EncodedRow, Head
from bertserve.plugin.tasks import complete_output

Entry = tuple[int, int]  # (head index, text index)
Group = list[tuple[Head[Any, Any], EncodedRow]]  # one encoder row and the heads that read it
Guard = Callable[..., Any]  # (head, stage, function, *args) -> function(*args), naming the head on failure

# Errors that belong to one entry; any other error (deadline, shutdown) ends the whole call.
ENTRY_ERRORS = (HeadFailed, InvalidArgument)


@dataclass(frozen=True)
class AnalyzeFields:
    """Where an Analyze request keeps its parts, so errors name them (the wire layer fills it in).

    `inputs` is the repeated field of texts, `heads` the repeated field of
    head selections, each with its head name in `head` and options in `options`.
    """

    inputs: str
    heads: str
    head: str
    options: str

    def text(self, index: int) -> str:
        return f"{self.inputs}[{index}]"

    def head_name(self, index: int) -> str:
        return f"{self.heads}[{index}].{self.head}"

    def option(self, index: int, name: str | None = None) -> str:
        path = f"{self.heads}[{index}].{self.options}"
        return path if name is None else f"{path}.{name}"


def analyze_items(
    head: Head[Any, Any],
    index: int,
    options: Mapping[str, Any],
    texts: Sequence[tuple[str, str | None]],
    fields: AnalyzeFields,
    parse: Callable[..., Any],
) -> list[Any]:
    """Head `index`'s input for every text: its options with the texts in its text fields.

    What cannot work for the call as a whole (a head without text fields,
    options that set a text field, a text pair for a one-text head) is
    INVALID_ARGUMENT; `parse(head, data, prefix=...)` validates against the
    head's schema.
    """
    if not head.text_fields:
        raise InvalidArgument(
            f"head {head.name!r} cannot analyze texts (its input is {sorted(head.input_schema()['properties'])}); "
            "call it with Predict instead",
            field_violations=[FieldViolation(fields.head_name(index), "this head takes no plain text input")],
        )
    taken = [field for field in head.text_fields if field in options]
    if taken:
        raise InvalidArgument(
            f"options for head {head.name!r} set {taken}, which Analyze fills from the texts",
            field_violations=[FieldViolation(fields.option(index, field), "filled from the texts") for field in taken],
        )
    items = []
    for text_index, (text, pair) in enumerate(texts):
        if (pair is not None) != (len(head.text_fields) == 2):
            wanted = "a text pair (text and text_pair)" if len(head.text_fields) == 2 else "a single text"
            raise InvalidArgument(
                f"head {head.name!r} reads {wanted}; {fields.text(text_index)} does not match",
                field_violations=[FieldViolation(fields.text(text_index), f"head {head.name!r} reads {wanted}")],
            )
        data = {**options, **dict(zip(head.text_fields, (text, pair) if pair is not None else (text,)))}
        items.append(parse(head, data, prefix=fields.option(index)))
    return items


@dataclass
class AnalyzePlan:
    """Every (head, text) entry of one Analyze call: inputs, rows, results and errors."""

    heads: Sequence[Head[Any, Any]]
    items: Sequence[Sequence[Any]]  # per head, per text
    fields: AnalyzeFields
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
                where = self.fields.text(t)
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
            item = self.items[h][t]
            output = complete_output(
                item, guard(head, "postprocess", head.postprocess, item, rows, self.results_of(rows))
            )
            rendered: dict[str, Any] = guard(head, "render_output", head.render_output, output)
            return rendered
        except ENTRY_ERRORS as error:
            return error

    def results_of(self, rows: Sequence[EncodedRow]) -> list[Any]:
        return [self._results[id(row)] for row in rows]

    def size(self) -> int:
        """Tokens the heads read: the postprocessing size."""
        return sum(len(row) for rows in self.rows.values() for row in rows)
