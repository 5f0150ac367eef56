"""Plugin discovery, registration and head loading (the registry itself: `bertserve.model.registry`).

Plugins come from the ``bertserve.heads`` entry-point group (the built-in
heads too) or are passed in directly (tests, embedding applications). Each
plugin's hooks run on their own, so one plugin that fails to import, targets
another plugin API version, or raises while registering is reported and the
others still load; so is each head's `load`. Duplicate head or service names
fail start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

import pluggy

from bertserve.config import ServerConfig
from bertserve.model.checks import hook_problems
from bertserve.model.encoder import SharedEncoder
from bertserve.model.registry import (
    DuplicateNameError,
    HeadRegistry,
    HeadState,
    Plugin,
    PluginProblem,
)
from bertserve.plugin import hooks as hookspecs
from bertserve.plugin.errors import HeadUnavailable
from bertserve.plugin.head import HeadDescription, HeadLoadContext
from bertserve.plugin.settings import PluginSettings

log = logging.getLogger(__name__)


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with bertserve's hookspecs (no plugins yet)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def discover_plugins(group: str) -> list[Plugin]:
    """Import every entry point of `group`; an import error becomes a plugin that reports it."""
    found: list[Plugin] = []
    for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
        dist = getattr(entry_point, "dist", None)
        package, version = (dist.name, dist.version) if dist is not None else ("", "")
        try:
            obj: object = entry_point.load()
        except Exception as error:
            log.exception("plugin %s failed to import", entry_point.name)
            obj = _ImportFailure(error)
        found.append(Plugin(entry_point.name, obj, package, version))
    return found


def register_plugins(config: ServerConfig, plugins: Iterable[Plugin | tuple[str, object]]) -> HeadRegistry:
    """Run every usable plugin's hooks and collect its heads and services.

    A plugin is skipped, and reported in `HeadRegistry.problems`, when it is
    denied (or not allowed) by the configuration, failed to import, targets
    an incompatible plugin API version, or raises while registering.
    Duplicate head or service names raise `DuplicateNameError`.
    """
    manager = get_plugin_manager()
    registry = HeadRegistry()
    by_name: dict[str, Plugin] = {}
    for plugin in (p if isinstance(p, Plugin) else Plugin(*p) for p in plugins):
        problem = _why_unusable(plugin, config) or _register(manager, plugin)
        if problem is not None:
            registry.problems.append(PluginProblem(plugin.name, problem))
            log.error("plugin %s not used: %s", plugin.name, problem)
            continue
        by_name[plugin.name] = plugin
    for hook_name, add in (("register_heads", registry.add), ("register_services", registry.add_service)):
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            _run_hook(registry, by_name[impl.plugin_name], hook_name, impl.function, add, config)
    return registry


def _register(manager: pluggy.PluginManager, plugin: Plugin) -> str | None:
    """Register `plugin`'s hooks with pluggy, or say why not (unknown hook names, bad signatures)."""
    problems = hook_problems(plugin.obj, hookspecs.hook_names(), hookspecs.PROJECT_NAME)
    if problems:
        return "; ".join(problems)
    try:
        manager.register(plugin.obj, name=plugin.name)
    except (ValueError, pluggy.PluginValidationError) as error:  # the same object or name twice, bad arguments
        return str(error)
    return None


def _run_hook(
    registry: HeadRegistry, plugin: Plugin, hook_name: str, function: Any, add: Any, config: ServerConfig
) -> None:
    """Call one plugin's hook; what it registers wrongly, or raising, is that plugin's problem alone.

    Heads the plugin registered before its hook raised are marked FAILED:
    the plugin did not finish setting up. Duplicate names still fail start-up.
    """
    added: list[str] = []

    def register(obj: Any) -> None:
        try:
            add(obj, plugin)
        except DuplicateNameError:
            raise
        except (TypeError, ValueError) as error:
            registry.problems.append(PluginProblem(plugin.name, f"{hook_name}: {error}"))
            log.error("plugin %s: %s", plugin.name, error)
            return
        added.append(getattr(obj, "name", ""))

    try:
        function(register=register, config=config)
    except DuplicateNameError:
        raise
    except Exception as error:
        registry.problems.append(PluginProblem(plugin.name, f"{hook_name} raised: {error!r}"))
        log.exception("plugin %s failed in %s", plugin.name, hook_name)
        for record in registry.records():
            if record.plugin is plugin and record.head.name in added:
                record.fail(f"plugin {plugin.name}'s {hook_name} raised after registering it: {error!r}")


def _why_unusable(plugin: Plugin, config: ServerConfig) -> str | None:
    names = {plugin.name, plugin.package} - {""}
    if config.plugins_allow is not None and not names & set(config.plugins_allow):
        return "not in the plugin allow list (BERTSERVE_PLUGINS_ALLOW / plugins_allow)"
    if names & set(config.plugins_deny):
        return "denied by the plugin deny list (BERTSERVE_PLUGINS_DENY / plugins_deny)"
    if isinstance(plugin.obj, _ImportFailure):
        return f"import failed: {plugin.obj.error!r}"
    return api_version_problem(getattr(plugin.obj, "BERTSERVE_API_VERSION", None))


def api_version_problem(declared: object) -> str | None:
    """Why a plugin targeting plugin API `declared` cannot load here, or None."""
    offered = hookspecs.API_VERSION
    if declared is None:
        return f'declares no BERTSERVE_API_VERSION; add BERTSERVE_API_VERSION = "{offered}" to the plugin module'
    try:
        major, minor = (int(part) for part in str(declared).split("."))
    except ValueError:
        return f"BERTSERVE_API_VERSION {declared!r} is not MAJOR.MINOR"
    server_major, server_minor = (int(part) for part in offered.split("."))
    if major != server_major or minor > server_minor:
        return f"targets plugin API {declared}, but this server offers {offered}; use a plugin release for {offered}"
    return None


def plugin_settings(config: ServerConfig) -> PluginSettings:
    """The part of the server's configuration plugins may read."""
    return PluginSettings(
        model=config.model,
        device=config.device,
        dtype=config.dtype,
        max_sequence_length=config.max_sequence_length,
        head_files=MappingProxyType(dict(config.head_files)),
    )


def load_heads(registry: HeadRegistry, encoder: SharedEncoder, config: ServerConfig) -> None:
    """Load every registered head onto the encoder, recording each outcome."""
    unknown = set(config.head_files) - {record.head.name for record in registry.records()}
    for name in sorted(unknown):
        log.warning("a head file was given for %r, but no plugin registers a head of that name", name)
    view = encoder.view()
    for record in registry.records():
        if record.state is HeadState.FAILED:  # broke the contract at registration
            continue
        head = record.head
        context = HeadLoadContext(
            encoder=view, head_file=config.head_files.get(head.name), config=plugin_settings(config)
        )
        try:
            description = head.load(context)
            if not isinstance(description, HeadDescription):
                raise TypeError(f"load returned {description!r}; return a HeadDescription")
        except HeadUnavailable as reason:
            record.state, record.reason = HeadState.UNAVAILABLE, str(reason)
            log.warning("head %s not loaded: %s", head.name, reason)
            continue
        except Exception as error:
            record.fail(f"loading raised {error!r}")
            log.exception("%s failed to load", record.origin)
            continue
        record.state, record.reason, record.labels = HeadState.LOADED, description.source, description.labels
        log.info("head %s loaded: %s", head.name, description.source)


@dataclass(frozen=True)
class _ImportFailure:
    error: BaseException
