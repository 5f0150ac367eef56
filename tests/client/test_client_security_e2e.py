"""The client library's TLS, mutual-TLS and token options against a real secured server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from bertserve.config import ServerConfig
from bertserve_client import BertServeClient, PermissionDeniedError, UnauthenticatedError, UnavailableError
from certs import Certs, make_certs, secured_server

TOKEN = "client-e2e-token-1"
READER = "client-e2e-reader-2"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("client-certs"))


@pytest.fixture(scope="module")
def secured(tiny_config: ServerConfig, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("client-tokens") / "tokens"
    tokens.write_text(f"{TOKEN} full-access\n{READER} model-reader /bertserve.v1.ModelService/*\n")
    with secured_server(tiny_config, certs, tokens) as address:
        yield address


def client(target: str, certs: Certs, **kwargs: object) -> BertServeClient:
    tls = {"root_certificates": certs.ca.cert, "client_certificate": certs.client.cert, "client_key": certs.client.key}
    return BertServeClient(target, timeout=20, **{**tls, **kwargs})  # type: ignore[arg-type]


def test_mutual_tls_and_a_token_get_answers(secured: str, certs: Certs) -> None:
    with client(secured, certs, token=TOKEN) as c:
        assert c.sentiment("a fine film").label
        assert c.server_info().model


def test_missing_and_wrong_tokens_raise_unauthenticated(secured: str, certs: Certs) -> None:
    with client(secured, certs) as c, pytest.raises(UnauthenticatedError, match="requires a bearer token"):
        c.sentiment("a fine film")
    with client(secured, certs, token="not-the-token") as c, pytest.raises(UnauthenticatedError, match="not valid"):
        c.sentiment("a fine film")


def test_restricted_token_raises_permission_denied_elsewhere(secured: str, certs: Certs) -> None:
    with client(secured, certs, token=READER) as c:
        assert c.list_heads()
        with pytest.raises(PermissionDeniedError, match="model-reader"):
            c.sentiment("a fine film")


def test_without_a_client_certificate_the_handshake_fails(secured: str, certs: Certs, tmp_path: Path) -> None:
    with BertServeClient(secured, timeout=5, root_certificates=certs.ca.cert, token=TOKEN, retry=None) as c:
        with pytest.raises(UnavailableError):
            c.sentiment("a fine film")


def test_cli_subcommands_take_the_clients_connection_options(
    secured: str, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bertserve.cli import main

    tls = ["--root-certificates", str(certs.ca.cert), "--client-certificate", str(certs.client.cert)]
    tls += ["--client-key", str(certs.client.key)]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert main(["sentiment", "a fine film", "--address", secured, *tls, "--token-file", str(token_file)]) == 0
    assert capsys.readouterr().out.split()[0] in {"negative", "neutral", "positive"}
    assert main(["sentiment", "a fine film", "--address", secured, *tls]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("BERTSERVE_TOKEN", READER)  # the token from the environment, and its limits hold
    monkeypatch.setenv("BERTSERVE_ADDRESS", secured)
    assert main(["info", "--json", *tls]) == 0
    assert json.loads(capsys.readouterr().out)["heads"]
    assert main(["sentiment", "a fine film", *tls]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main(["sentiment", "a fine film", "--root-certificates", str(certs.ca.cert)]) == 1  # no client certificate
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert main(["sentiment", "a fine film", "--root-certificates", str(tmp_path / "missing.pem")]) == 2
    assert "missing.pem" in capsys.readouterr().err
