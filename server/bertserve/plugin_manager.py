"""Plugin discovery, registration and head loading.

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
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .config import ServerConfig
from .encoder import SharedEncoder
from .errors import HeadNotFound, HeadNotLoaded, HeadUnavailable
from .head_check import head_name_problem, head_problems, hook_problems
from .heads import Head, HeadDescription, HeadLoadContext
from .service_definition import ServiceDefinition

log = logging.getLogger(__name__)


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with bertserve's hookspecs (no plugins yet)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


@dataclass(frozen=True)
class Plugin:
    """A plugin object with where it came from: entry-point name, distribution, version."""

    name: str
    obj: object
    package: str = ""
    version: str = ""


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
    plugin: Plugin
    state: HeadState = HeadState.REGISTERED
    reason: str = ""
    labels: tuple[str, ...] = ()
    input_schema: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        """Mark the head FAILED: it is listed with `reason` and its requests are refused with it."""
        self.state, self.reason = HeadState.FAILED, reason

    @property
    def origin(self) -> str:
        """How errors name this head: ``head 'x' (plugin p)``."""
        return f"head {self.head.name!r} (plugin {self.plugin.name})"


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that was not used: import failure, API mismatch, denied, or raised."""

    plugin: str
    error: str


class DuplicateNameError(ValueError):
    """Two plugins registered heads (or services) with the same name; start-up must fail."""


@dataclass
class HeadRegistry:
    """All registered heads by name with their states, and the plugins' services."""

    _records: dict[str, HeadRecord] = field(default_factory=dict)
    services: list[ServiceDefinition] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)
    service_plugins: dict[str, Plugin] = field(default_factory=dict)

    def add(self, head: Head[Any, Any], plugin: Plugin) -> None:
        """Record `head`; a head whose structure breaks the contract is recorded FAILED with the fixes.

        A head without a usable name cannot be recorded: that raises
        `ValueError`, which refuses the plugin.
        """
        problem = head_name_problem(head)
        if problem is not None:
            raise ValueError(problem)
        if head.name in self._records:
            other = self._records[head.name].plugin.name
            raise DuplicateNameError(
                f"duplicate head name {head.name!r}: registered by plugin {other} and by plugin {plugin.name}; "
                "uninstall or deny one of the plugins"
            )
        record = self._records[head.name] = HeadRecord(head, plugin)
        problems = head_problems(head)
        if problems:
            record.fail(f"{type(head).__name__} breaks the Head contract: " + "; ".join(problems))
            log.error("plugin %s, %s", plugin.name, record.reason)
            return
        record.input_schema, record.output_schema = head.input_schema(), head.output_schema()

    def add_service(self, service: ServiceDefinition, plugin: Plugin) -> None:
        if not isinstance(service, ServiceDefinition):
            raise TypeError(f"plugin {plugin.name} registered {service!r}, which is not a bertserve.ServiceDefinition")
        if any(existing.name == service.name for existing in self.services):
            raise DuplicateNameError(f"duplicate gRPC service {service.name!r} (plugin {plugin.name})")
        self.services.append(service)
        self.service_plugins[service.name] = plugin

    def drop_service(self, service: ServiceDefinition, problem: str) -> None:
        """Take back a service that could not be added; its plugin is reported with `problem`."""
        self.services.remove(service)
        plugin = self.service_plugins.pop(service.name)
        self.problems.append(PluginProblem(plugin.name, problem))

    def records(self) -> list[HeadRecord]:
        return list(self._records.values())

    def record(self, name: str) -> HeadRecord:
        """The record of head `name`, or the error a client should see for an unknown name."""
        record = self._records.get(name)
        if record is None:
            raise self._unknown(name, f"no head named {name!r}", f"heads on this server: {_names(self._records)}")
        return record

    def origin(self, head: Head[Any, Any]) -> str:
        """``head 'x' (plugin p)``: how errors name a registered head."""
        record = self._records.get(head.name)
        return record.origin if record is not None else f"head {head.name!r}"

    def _unknown(self, name: str, what: str, heads: str) -> HeadNotFound | HeadNotLoaded:
        """NOT_FOUND naming the heads there are; FAILED_PRECONDITION when refused plugins may have held it."""
        if not self.problems:
            return HeadNotFound(f"{what}; {heads}", metadata={"head": name})
        refused = "; ".join(f"{p.plugin} ({p.error})" for p in self.problems)
        return HeadNotLoaded(
            f"{what}; plugins refused at start-up may provide it: {refused}. Fix or remove them; {heads}",
            reason="PLUGIN_REFUSED",
            metadata={"head": name, "refused_plugins": ",".join(p.plugin for p in self.problems)},
        )

    def get(self, name: str, *, task: str | None = None) -> Head[Any, Any]:
        """The loaded head `name` (of `task`, when given), or the error a client should see."""
        record = self._records.get(name)
        if task is not None and (record is None or record.head.task != task):
            known = sorted(r.head.name for r in self._records.values() if r.head.task == task)
            error = self._unknown(
                name, f"no {task} head named {name!r}", f"{task} heads on this server: {_names(known)}"
            )
            error.metadata["task"] = task
            raise error
        record = self.record(name)
        if record.state is not HeadState.LOADED:
            raise HeadNotLoaded(
                f"{record.origin} is not loaded: {record.reason}",
                metadata={"head": name, "plugin": record.plugin.name, "state": record.state.value},
            )
        return record.head


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


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


def load_heads(registry: HeadRegistry, encoder: SharedEncoder, config: ServerConfig) -> None:
    """Load every registered head onto the encoder, recording each outcome."""
    unknown = set(config.head_files) - {record.head.name for record in registry.records()}
    for name in sorted(unknown):
        log.warning("a head file was given for %r, but no plugin registers a head of that name", name)
    for record in registry.records():
        if record.state is HeadState.FAILED:  # broke the contract at registration
            continue
        head = record.head
        context = HeadLoadContext(encoder=encoder, head_file=config.head_files.get(head.name), config=config)
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
