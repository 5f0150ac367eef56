"""The plugin SDK: typed services from a plugin's own .proto, API versions, allow/deny lists."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import bertserve_heads.fill_mask
import bertserve_heads.sentiment
import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.plugins import api_version_problem, discover_plugins, register_plugins
from bertserve.plugin import ServiceDefinition, hookimpl
from bertserve.plugin.tasks import TextClassificationInput
from bertserve.settings import config_from_sources
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SHOUT_PROTO = """
syntax = "proto3";
package acme.v1;
// ShoutService labels a text and shouts the label.
service ShoutService {
  // Shout classifies the text with the sentiment head.
  rpc Shout(ShoutRequest) returns (ShoutResponse);
}
// ShoutRequest holds a text.
message ShoutRequest {
  // The text.
  string text = 1;
}
// ShoutResponse holds the label in capitals.
message ShoutResponse {
  // The label, shouted.
  string label = 1;
}
"""


@pytest.fixture(scope="module")
def shout_stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """Stubs generated from a third party's own .proto, as a plugin package would ship them."""
    from grpc_tools import protoc

    root = tmp_path_factory.mktemp("acme")
    (root / "acme" / "v1").mkdir(parents=True)
    (root / "acme" / "v1" / "shout.proto").write_text(SHOUT_PROTO)
    assert (
        protoc.main(["protoc", f"-I{root}", f"--python_out={root}", f"--grpc_python_out={root}", "acme/v1/shout.proto"])
        == 0
    )
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("acme.v1.shout_pb2"), importlib.import_module("acme.v1.shout_pb2_grpc")
    finally:
        sys.path.remove(str(root))


def make_shout_plugin(pb2: ModuleType, pb2_grpc: ModuleType) -> object:
    class ShoutServicer(pb2_grpc.ShoutServiceServicer):  # type: ignore[name-defined,misc]
        def __init__(self, runner) -> None:  # type: ignore[no-untyped-def]
            self._runner = runner

        async def Shout(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
            head = self._runner.head("sentiment", task="sentiment")
            (output,) = await self._runner.run(
                head, [TextClassificationInput(text=request.text)], context, field_of=lambda _: "text"
            )
            return pb2.ShoutResponse(label=output.label.upper() + "!")

    class ShoutPlugin:
        BERTSERVE_API_VERSION = "1.0"

        @hookimpl
        def register_services(self, register, config):  # type: ignore[no-untyped-def]
            register(
                ServiceDefinition(
                    "acme.v1.ShoutService",
                    lambda server, runner: pb2_grpc.add_ShoutServiceServicer_to_server(ShoutServicer(runner), server),
                    heads=("sentiment",),
                )
            )

    return ShoutPlugin()


BUILT_INS = [("fill-mask", bertserve_heads.fill_mask), ("sentiment", bertserve_heads.sentiment)]


def test_a_plugin_adds_a_typed_service_with_reflection_and_health(tiny_config: ServerConfig, shout_stubs) -> None:  # type: ignore[no-untyped-def]
    pb2, pb2_grpc = shout_stubs
    plugins = [*BUILT_INS, ("acme-shout", make_shout_plugin(pb2, pb2_grpc))]
    with BackgroundServer(tiny_config, plugins=plugins) as running, grpc.insecure_channel(running.address) as channel:
        response = pb2_grpc.ShoutServiceStub(channel).Shout(pb2.ShoutRequest(text="a great movie"))
        assert response.label.endswith("!") and response.label[:-1].lower() in {"negative", "neutral", "positive"}
        assert "acme.v1.ShoutService" in ProtoReflectionDescriptorDatabase(channel).get_services()
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="acme.v1.ShoutService")
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as raised:
            pb2_grpc.ShoutServiceStub(channel).Shout(pb2.ShoutRequest(text=""))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # the head's validation, the server's mapping


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        ("1.0", None),
        ("1.1", None),
        ("1.9", "offers 1.1"),
        ("2.0", "offers 1.1"),
        (None, "declares no BERTSERVE_API_VERSION"),
        ("one", "MAJOR.MINOR"),
    ],
)
def test_plugin_api_version_compatibility(declared: str | None, problem: str | None) -> None:
    found = api_version_problem(declared)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_incompatible_plugin_is_refused_and_reported(tiny_config: ServerConfig) -> None:
    class FuturePlugin:
        BERTSERVE_API_VERSION = "2.0"

        @hookimpl
        def register_heads(self, register, config):  # type: ignore[no-untyped-def]
            raise AssertionError("a refused plugin's hooks never run")

    registry = register_plugins(tiny_config, [*BUILT_INS, ("future", FuturePlugin())])
    assert [(p.plugin, "2.0" in p.error) for p in registry.problems] == [("future", True)]
    assert {r.head.name for r in registry.records()} == {"fill-mask", "sentiment"}


def test_allow_and_deny_lists_from_config_and_environment() -> None:
    plugins = discover_plugins("bertserve.heads")
    names = lambda config: {r.head.name for r in register_plugins(config, plugins).records()}  # noqa: E731
    everything = names(ServerConfig())
    assert {"fill-mask", "sentiment"} <= everything
    assert names(ServerConfig(plugins_deny=("sentiment",))) == everything - {"sentiment"}
    from_env = lambda env: config_from_sources({}, env)  # noqa: E731
    assert names(from_env({"BERTSERVE_PLUGINS_DENY": "sentiment, fill-mask"})) == everything - {
        "sentiment",
        "fill-mask",
    }
    assert names(from_env({"BERTSERVE_PLUGINS_ALLOW": "fill-mask"})) == {"fill-mask"}
    registry = register_plugins(ServerConfig(plugins_allow=("bertserve",)), plugins)  # a distribution name
    assert {"fill-mask", "sentiment"} <= {r.head.name for r in registry.records()}


def test_hook_guide_covers_every_hookspec() -> None:
    from bertserve.plugin import hooks as hookspecs

    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    specs = [name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "bertserve_spec", None) is not None]
    assert specs, "no hookspecs found"
    for name in specs:
        assert f"### `{name}(" in guide, f"docs/plugins.md has no section for hook {name}"


def _guide_example(name: str, tmp_path: Path) -> ModuleType:
    """The example plugin marked ``<!-- example: NAME -->`` in docs/plugins.md, imported as written."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    marker = f"<!-- example: {name}.py -->"
    assert marker in guide
    code = guide.split(marker, 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_guide_example_works_as_written(tiny_config: ServerConfig, tmp_path: Path) -> None:
    """The guide's complete example plugin, copied out of docs/plugins.md, serves through Predict."""
    module = _guide_example("text_stats", tmp_path)
    with BackgroundServer(tiny_config, plugins=[("text-stats", module)]) as running:
        from bertserve_client import BertServeClient

        with BertServeClient(running.address) as client:
            output = client.predict("text-stats", {"text": "john went home"})
    assert output["tokens"] == 5  # [CLS] john went home [SEP]
    assert output["characters"] == len("john went home")


def test_guide_load_time_encoder_example_matches_transformers(tiny_config: ServerConfig, tmp_path: Path) -> None:
    """The topic head embeds its labels with EncoderView.encode_texts at load; answers match BertModel."""
    import torch
    from transformers import AutoTokenizer, BertModel

    module = _guide_example("topics", tmp_path)
    texts = ["the team won the match", "rain and wind all day", "prices at the bank went up", "hello there"]
    with BackgroundServer(tiny_config, plugins=[("topics", module)]) as running:
        from bertserve_client import BertServeClient

        with BertServeClient(running.address) as client:
            outputs = [client.predict("topic", {"text": text}) for text in texts]
            labels = {head.name: head for head in client.list_heads()}["topic"].labels
    assert list(labels) == list(module.LABELS)

    model = BertModel.from_pretrained(tiny_config.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_config.model)

    def embed(batch: list[str]) -> torch.Tensor:
        encoded = tokenizer(batch, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    similarities = embed(texts) @ embed(list(module.LABELS.values())).T
    for output, row in zip(outputs, similarities):
        best = int(row.argmax())
        assert output["label"] == list(module.LABELS)[best]
        assert output["similarity"] == pytest.approx(float(row[best]), abs=1e-5)
