"""A plugin whose head never returns from `forward` on a text holding "stall", until released.

For the stuck-forward tests: the head is the built-in sentiment head under
the name ``stall`` (give it the sentiment head file). In process, `RELEASE`
lets the stuck forward return; in a child process it waits `STALL_SECONDS`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from bertserve.plugin import EncodedRow, EncoderOutputs, hookimpl
from bertserve.plugin.tasks import TextClassificationInput
from bertserve_heads.sentiment import SentimentHead

BERTSERVE_API_VERSION = "1.1"
RELEASE = threading.Event()
STALL_SECONDS = 60.0


class StallHead(SentimentHead):
    """Sentiment, except that a forward over a row whose text holds "stall" blocks until `RELEASE`."""

    name = "stall"

    def preprocess(self, item: TextClassificationInput) -> list[EncodedRow]:
        rows = super().preprocess(item)
        return [EncodedRow(row.input_ids, row.token_type_ids, data=item.text) for row in rows]

    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        if any("stall" in str(row.data) for row in rows):
            RELEASE.wait(STALL_SECONDS)
        return super().forward(outputs, rows)


@hookimpl
def register_heads(register, config):  # type: ignore[no-untyped-def]
    register(StallHead())
