"""Example third-party heads for bertserve, installed as their own distribution.

Each module is a plugin found through the ``bertserve.heads`` entry-point
group and imports only the public `bertserve` API:

- `bertserve_example_heads.embedding`: ``sentence-embedding``, mean-pooled
  (optionally L2-normalised) sentence embeddings; needs no weights.
- `bertserve_example_heads.token_classification`: ``token-classification``
  (named entities, part of speech, ...) from a head file in the
  `BertForTokenClassification` layout, written with
  `save_token_classification_head`.

The modules are imported on their own, so one failing does not stop the other.
"""

from __future__ import annotations

__version__ = "0.1.0"
