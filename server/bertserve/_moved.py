"""Old module paths of bertserve (before the layers of plugin API 1.1) still import, with a DeprecationWarning.

``import bertserve.encoder`` gives ``bertserve.model.encoder`` itself (the same
module object), so scripts written against the flat layout keep working
while they move to the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "bertserve.heads": "bertserve.plugin.head",
    "bertserve.hookspecs": "bertserve.plugin.hooks",
    "bertserve.service_definition": "bertserve.plugin.service",
    "bertserve.tasks": "bertserve.plugin.tasks",
    "bertserve.schema": "bertserve.plugin.schema",
    "bertserve.text": "bertserve.plugin.text",
    "bertserve.headfile": "bertserve.plugin.headfile",
    "bertserve.head_modules": "bertserve.plugin.modules",
    "bertserve.trained_heads": "bertserve.plugin.trained",
    "bertserve.errors": "bertserve.plugin.errors",
    "bertserve.packed": "bertserve.nn.packed",
    "bertserve.quantize": "bertserve.nn.quantize",
    "bertserve.encoder": "bertserve.model.encoder",
    "bertserve.default_model": "bertserve.model.default_model",
    "bertserve.plugin_manager": "bertserve.model.plugins",
    "bertserve.batcher": "bertserve.runtime.batcher",
    "bertserve.admission": "bertserve.runtime.admission",
    "bertserve.offload": "bertserve.runtime.offload",
    "bertserve.memory": "bertserve.runtime.memory",
    "bertserve.threads": "bertserve.runtime.threads",
    "bertserve.metrics": "bertserve.runtime.metrics",
    "bertserve.request_context": "bertserve.runtime.request_context",
    "bertserve.interceptor": "bertserve.wire.interceptor",
    "bertserve.security": "bertserve.wire.security",
    "bertserve.logs": "bertserve.wire.logs",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module that now holds its code."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name already."""


def install() -> None:
    """Let the old module paths import (once per process)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
