"""Plugin discovery and head loading.

Plugins come from the ``bertserve.heads`` entry-point group (the built-in
heads too) or are passed in directly (tests, embedding applications). Each
plugin's `register_heads` runs on its own, so one plugin that raises is
reported and the others still load; so is each head's `load`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .config import ServerConfig
from .encoder import SharedEncoder
from .errors import HeadNotFound, HeadNotLoaded, HeadUnavailable
from .heads import Head, HeadLoadContext

log = logging.getLogger(__name__)


class DuplicateHeadError(ValueError):
    """Two plugins registered heads with the same name; start-up must fail."""


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with bertserve's hookspecs (no plugins yet)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


class HeadState(str, Enum):
    """Whether a registered head serves requests."""

    LOADED = "loaded"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"
    REGISTERED = "registered"


@dataclass
class HeadRecord:
    """A registered head, the plugin that registered it and its load outcome."""

    head: Head[Any, Any]
    plugin: str
    state: HeadState = HeadState.REGISTERED
    reason: str = ""
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be imported or whose registration raised."""

    plugin: str
    error: str


class HeadRegistry:
    """All registered heads by name, with their states."""

    def __init__(self) -> None:
        self._records: dict[str, HeadRecord] = {}
        self.problems: list[PluginProblem] = []

    def add(self, head: Head[Any, Any], plugin: str) -> None:
        if not isinstance(head, Head):
            raise TypeError(f"plugin {plugin} registered {head!r}, which is not a bertserve.Head")
        if not head.name or not head.task:
            raise ValueError(f"plugin {plugin} registered {type(head).__name__} without a name or task")
        if head.name in self._records:
            other = self._records[head.name].plugin
            raise DuplicateHeadError(
                f"duplicate head name {head.name!r}: registered by {other} and by {plugin}; "
                "uninstall or deny one of the plugins"
            )
        self._records[head.name] = HeadRecord(head, plugin)

    def records(self) -> list[HeadRecord]:
        return list(self._records.values())

    def get(self, name: str, *, task: str) -> Head[Any, Any]:
        """The loaded head `name` for `task`, or the error a client should see."""
        record = self._records.get(name)
        if record is None or record.head.task != task:
            known = sorted(r.head.name for r in self._records.values() if r.head.task == task)
            raise HeadNotFound(
                f"no {task} head named {name!r}; {task} heads on this server: {', '.join(known) or 'none'}",
                metadata={"head": name, "task": task},
            )
        if record.state is not HeadState.LOADED:
            raise HeadNotLoaded(
                f"head {name!r} is not loaded: {record.reason}", metadata={"head": name, "state": record.state.value}
            )
        return record.head


def discover_plugins(group: str) -> list[tuple[str, object]]:
    """Import every entry point of `group`; import errors are returned as problems."""
    found: list[tuple[str, object]] = []
    for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
        label = _entry_point_label(entry_point)
        try:
            found.append((label, entry_point.load()))
        except Exception as error:
            log.exception("plugin %s failed to import", label)
            found.append((label, _ImportFailure(error)))
    return found


def register_heads(config: ServerConfig, plugins: Iterable[tuple[str, object]]) -> HeadRegistry:
    """Run every plugin's `register_heads` hook and collect the heads.

    A duplicate head name is a configuration error and raises DuplicateHeadError.
    """
    manager = get_plugin_manager()
    registry = HeadRegistry()
    for label, plugin in plugins:
        if isinstance(plugin, _ImportFailure):
            registry.problems.append(PluginProblem(label, f"import failed: {plugin.error!r}"))
            continue
        try:
            manager.register(plugin, name=label)
        except ValueError as error:  # pluggy refuses a plugin registered twice
            registry.problems.append(PluginProblem(label, str(error)))
    manager.check_pending()
    for impl in manager.hook.register_heads.get_hookimpls():
        label = impl.plugin_name

        def register(head: Head[Any, Any], _label: str = label) -> None:
            registry.add(head, _label)

        try:
            impl.function(register=register, config=config)
        except DuplicateHeadError:
            raise
        except Exception as error:
            registry.problems.append(PluginProblem(label, f"register_heads raised: {error!r}"))
            log.exception("plugin %s failed to register its heads", label)
    return registry


def load_heads(registry: HeadRegistry, encoder: SharedEncoder, config: ServerConfig) -> None:
    """Load every registered head onto the encoder, recording each outcome."""
    unknown = set(config.head_files) - {record.head.name for record in registry.records()}
    for name in sorted(unknown):
        log.warning("a head file was given for %r, but no plugin registers a head of that name", name)
    for record in registry.records():
        head = record.head
        context = HeadLoadContext(encoder=encoder, head_file=config.head_files.get(head.name), config=config)
        try:
            description = head.load(context)
        except HeadUnavailable as reason:
            record.state, record.reason = HeadState.UNAVAILABLE, str(reason)
            log.warning("head %s not loaded: %s", head.name, reason)
            continue
        except Exception as error:
            record.state, record.reason = HeadState.FAILED, f"loading raised {error!r}"
            log.exception("head %s (plugin %s) failed to load", head.name, record.plugin)
            continue
        record.state, record.reason, record.labels = HeadState.LOADED, description.source, description.labels
        log.info("head %s loaded: %s", head.name, description.source)


@dataclass(frozen=True)
class _ImportFailure:
    error: BaseException


def _entry_point_label(entry_point: Any) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is not None:
        return f"{entry_point.name} ({dist.name} {dist.version})"
    return str(entry_point.name)
