"""The code's shape, checked: layers import downward only, no import cycles, plugins use only the contract.

Layers inside ``server/bertserve`` (lowest first): the kernels and plain
settings data, the plugin contract, the model, the runtime, the wire, then the
app. A module may import its own layer and the ones below. The contract
imports nothing of the server but itself and the kernels. Built-in and
example plugins import only ``bertserve.plugin``.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from pathlib import Path

import bertserve
import bertserve.plugin
import pytest
from bertserve.model.view import ReadOnlyEncoder
from bertserve.plugin.encoder import EncoderView

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "server"
PLUGIN_PACKAGES = [REPO / "plugins" / "bertserve_heads", REPO / "plugins" / "examples" / "src"]
SIZE_CHECKED = [SERVER / "bertserve", REPO / "plugins", REPO / "clients" / "python" / "src" / "bertserve_client"]

BASE = ("bertserve.nn", "bertserve.config", "bertserve.settings_table", "bertserve.version")
LAYERS = ("bertserve.plugin", "bertserve.model", "bertserve.runtime", "bertserve.wire")
LAYER_NAMES = ("base", "contract", "model", "runtime", "wire", "app")


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SERVER / "bertserve").rglob("*.py"):
        name = ".".join(path.relative_to(SERVER).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer(module: str) -> int:
    """0 base, 1 contract, 2 model, 3 runtime, 4 wire, 5 app."""
    if any(_within(module, prefix) for prefix in BASE):
        return 0
    for level, prefix in enumerate(LAYERS, 1):
        if _within(module, prefix):
            return level
    return 5


def _resolve(node: ast.ImportFrom, importer: str) -> str | None:
    if node.level:
        package = (
            importer.split(".")[: -node.level] if not MODULES[importer].name == "__init__.py" else importer.split(".")
        )
        if node.level > 1 and MODULES[importer].name == "__init__.py":
            package = package[: -(node.level - 1)]
        return ".".join([*package, node.module] if node.module else package)
    return node.module


def imports(path: Path, importer: str, *, runtime_only: bool = False) -> Iterator[tuple[str, int]]:
    """The bertserve modules a module imports, with line numbers.

    `runtime_only` skips imports under ``if TYPE_CHECKING:`` and inside
    functions: the ones that cannot make an import cycle at import time.
    """
    tree = ast.parse(path.read_text())
    nodes = tree.body if runtime_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names if alias.name.startswith("bertserve"))
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, importer)
            if module is None or not (module == "bertserve" or module.startswith("bertserve.")):
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                yield (full if full in MODULES else module), node.lineno


def test_layers_import_downward_only() -> None:
    upward = [
        f"{importer} ({LAYER_NAMES[layer(importer)]}) imports {target} ({LAYER_NAMES[layer(target)]}), line {line}"
        for importer, path in MODULES.items()
        for target, line in imports(path, importer)
        if target in MODULES and layer(target) > layer(importer)
    ]
    assert upward == []


def test_the_contract_imports_only_itself_and_the_kernels() -> None:
    outside = [
        f"{importer} imports {target}"
        for importer, path in MODULES.items()
        if _within(importer, "bertserve.plugin")
        for target, _ in imports(path, importer)
        if not (_within(target, "bertserve.plugin") or _within(target, "bertserve.nn"))
    ]
    assert outside == []


def test_no_import_cycles() -> None:
    graph = {
        name: {t for t, _ in imports(path, name, runtime_only=True) if t in MODULES} for name, path in MODULES.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_protobuf_stops_at_the_wire() -> None:
    """The runtime, the model and the contract never see a protobuf message or field name."""
    leaks = []
    for importer, path in MODULES.items():
        if layer(importer) > 3:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            leaks += [f"{importer} imports {name}" for name in names if name.startswith(("bertserve_client", "grpc_"))]
    assert leaks == []


@pytest.mark.parametrize("package", PLUGIN_PACKAGES, ids=lambda path: path.parent.name + "/" + path.name)
def test_plugins_import_only_the_contract(package: Path) -> None:
    outside = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            outside += [
                f"{path.relative_to(REPO)}:{node.lineno} imports {name}"
                for name in names
                if (name == "bertserve" or name.startswith("bertserve.")) and not _within(name, "bertserve.plugin")
            ]
    assert outside == []


def test_modules_and_functions_stay_small() -> None:
    too_big = []
    for root in SIZE_CHECKED:
        for path in root.rglob("*.py"):
            if "bertserve_client/v1" in path.as_posix():  # generated stubs
                continue
            text = path.read_text()
            if len(text.splitlines()) > 400:
                too_big.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > 60:
                        too_big.append(f"{path.relative_to(REPO)}: {node.name} is {length} lines")
    assert too_big == []


def test_the_top_level_exports_a_short_deliberate_list() -> None:
    assert sorted(bertserve.__all__) == [
        "BackgroundServer",
        "BertServeServer",
        "ServerConfig",
        "__version__",
        "create_server",
    ]
    for name in bertserve.__all__:
        assert getattr(bertserve, name) is not None
    assert len(bertserve.plugin.__all__) == len(set(bertserve.plugin.__all__))
    for name in bertserve.plugin.__all__:
        assert getattr(bertserve.plugin, name) is not None, name


def test_plugin_api_1_0_names_still_resolve_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="bertserve.plugin.Head"):
        head = bertserve.Head  # type: ignore[attr-defined]
    assert head is bertserve.plugin.Head
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bertserve.plugin.hookimpl is not None
    with pytest.raises(AttributeError):
        bertserve.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def _protocol_members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


def test_the_encoder_view_offers_exactly_the_documented_attributes_and_is_read_only(server) -> None:  # type: ignore[no-untyped-def]
    view = server.runtime.encoder.view()
    documented = _protocol_members(EncoderView)
    assert {name for name in dir(view) if not name.startswith("_")} == documented
    assert isinstance(view, ReadOnlyEncoder) and not hasattr(view, "bert") and not hasattr(view, "forward_packed")
    for name in sorted(documented & {"model_name", "hidden_size", "device", "dtype", "fingerprint"}):
        assert getattr(view, name) == getattr(server.runtime.encoder, name)
    with pytest.raises(AttributeError, match="read-only"):
        view.model_name = "other"
    for attribute in ("model_name", "config", "tokenizer", "pooler", "embeddings", "word_embeddings"):
        assert attribute in (EncoderView.__doc__ or ""), f"EncoderView's docstring does not document {attribute}"


def test_old_module_paths_import_the_moved_modules_with_a_deprecation_warning() -> None:
    import importlib
    import sys

    from bertserve._moved import MOVED

    sys.modules.pop("bertserve.default_model", None)
    with pytest.warns(DeprecationWarning, match="bertserve.model.default_model"):
        old = importlib.import_module("bertserve.default_model")
    assert old is importlib.import_module("bertserve.model.default_model")
    for new in MOVED.values():
        assert new in MODULES, f"{new} is not a module any more"
