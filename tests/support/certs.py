"""Test certificates made with `cryptography`: a CA, a server and a client it signed, and an unrelated CA/client.

`make_certs(folder)` writes PEM files and returns their paths and bytes;
`secured_server` runs a server that requires them and a token. The
server certificate is valid for ``127.0.0.1`` and ``localhost``. Keys are
ECDSA P-256 (fast to make); certificates are valid from an hour ago for a day.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key: PEM files and their bytes."""

    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class Certs:
    """`ca` signed `server` and `client`; `other_ca` (unrelated) signed `other_client`."""

    ca: KeyPair
    server: KeyPair
    client: KeyPair
    other_ca: KeyPair
    other_client: KeyPair


def make_certs(folder: Path) -> Certs:
    """Write a CA, a server and a client certificate it signed, and an unrelated CA and client, to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("bertserve test CA")
    other_key, other_cert = _ca("unrelated test CA")
    server_sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server = _leaf("localhost", ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH, server_sans)
    client = _leaf("bertserve test client", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    other_client = _leaf("unrelated test client", other_key, other_cert, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Certs(
        ca=_write(folder, "ca", ca_key, ca_cert),
        server=_write(folder, "server", *server),
        client=_write(folder, "client", *client),
        other_ca=_write(folder, "other-ca", other_key, other_cert),
        other_client=_write(folder, "other-client", *other_client),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=1))
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(common_name, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> KeyPair:
    pair = KeyPair(folder / f"{stem}.pem", folder / f"{stem}-key.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pair.key.chmod(0o600)
    return pair


@contextmanager
def secured_server(config: Any, certs: Certs, tokens: Path) -> Iterator[str]:
    """A `BackgroundServer` on `config` that requires mutual TLS (`certs`) and a token of the file `tokens`.

    Yields its address (``localhost:PORT``, the name the server certificate carries).
    """
    from bertserve.background import BackgroundServer
    from bertserve.config import SecurityConfig

    tokens.chmod(0o600)
    security = SecurityConfig(
        tls_cert=certs.server.cert, tls_key=certs.server.key, tls_client_ca=certs.ca.cert, tokens_file=tokens
    )
    with BackgroundServer(replace(config, security=security)) as running:
        yield f"localhost:{running.port}"
