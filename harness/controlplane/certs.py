"""Throw-away credentials for a local control plane: a CA, serving certificates, keys.

Made with ``cryptography`` (a main dependency) in memory and written with mode 0600; they
live in the control plane's temporary directory and die with it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateFiles",
    "write_client_certificate",
    "write_serving_certificates",
    "write_signing_key",
]

VALIDITY = datetime.timedelta(days=2)  # a run lasts minutes; a leaked file is soon useless
# Names a client inside the cluster may use for the API server (Istio's in-cluster config
# and pilot-agent dial `kubernetes.default.svc`).
API_SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of one serving certificate and the CA that signed it."""

    ca: Path
    certificate: Path
    key: Path


def _write_private(path: Path, data: bytes) -> Path:
    path.touch(mode=0o600)
    path.write_bytes(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"harness {name} CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def write_serving_certificates(
    directory: Path, *, name: str, ips: tuple[str, ...], dns: tuple[str, ...] = API_SERVER_NAMES
) -> CertificateFiles:
    """A fresh CA and a serving certificate for ``ips`` and ``dns`` signed by it.

    Writes ``<name>-ca.crt``, ``<name>.crt`` and ``<name>.key`` into ``directory``.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _new_ca(name)
    ca_name = ca_cert.subject
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _write_files(directory, name, ca_cert, cert, key)


def _write_files(
    directory: Path,
    name: str,
    ca_cert: x509.Certificate,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> CertificateFiles:
    ca_path = directory / f"{name}-ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path = directory / f"{name}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write_private(directory / f"{name}.key", _key_pem(key))
    return CertificateFiles(ca=ca_path, certificate=cert_path, key=key_path)


def write_client_certificate(
    directory: Path, *, name: str, user: str, groups: tuple[str, ...] = ()
) -> CertificateFiles:
    """A fresh CA and a client certificate signed by it for ``user`` (CN) in ``groups``
    (O), as Kubernetes reads them (e.g. the API server's identity towards a kubelet, which
    trusts that CA). Writes ``<name>-ca.crt``, ``<name>.crt`` and ``<name>.key``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _new_ca(name)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _write_files(directory, name, ca_cert, cert, key)


def write_signing_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC P-256 key pair (``<name>.key``, ``<name>.pub``), e.g. to sign ServiceAccount
    tokens."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = _write_private(directory / f"{name}.key", _key_pem(key))
    public = directory / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
