"""The registry of heads and plugin problems: what was registered, by which plugin, and its state.

Every request resolves its head here: a loaded head, or the error the client
should see (NOT_FOUND for an unknown name, FAILED_PRECONDITION for a head that
is not loaded or whose plugin was refused, with the reason).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bertserve.model.checks import head_name_problem, head_problems
from bertserve.plugin.errors import HeadNotFound, HeadNotLoaded
from bertserve.plugin.head import Head
from bertserve.plugin.service import ServiceDefinition

log = logging.getLogger(__name__)


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
