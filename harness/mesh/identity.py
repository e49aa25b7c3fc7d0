"""Workload identities for ``--mesh envoy``: a run-scoped CA and one certificate per proxy.

istiod's CA gives every sidecar an ECDSA P-256 certificate whose only name is the URI SAN
``spiffe://cluster.local/ns/<namespace>/sa/<service account>`` (24 h by default), and
auto-mTLS makes every sidecar → sidecar hop mutual TLS with it. The translation does the same
from files: :func:`write_mesh_identities` makes a fresh CA at deploy time, signs one
certificate per proxy with it, and writes them (mode 0600, in a 0700 directory) into the
run's scratch directory, which dies with the run. Nothing here goes into journals, reports
or logs; the private keys never leave memory except into those files.

The service account of a workload is its service's name, as the renderer writes it
(:mod:`harness.kube.render`, ``serviceAccountName: <service>``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.mesh.envoy import TRUST_DOMAIN, WorkloadTls, workload_spiffe_id

__all__ = ["write_mesh_identities"]

# Istio's default workload certificate lifetime (pilot-agent SECRET_TTL 24h): a run lasts
# minutes, and a leaked file is soon useless.
WORKLOAD_VALIDITY: Final = datetime.timedelta(hours=24)
_BACKDATE: Final = datetime.timedelta(minutes=5)  # clock skew between processes


@dataclass(frozen=True)
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _write_private(path: Path, data: bytes) -> Path:
    """``data`` into a new file that only the owner can read (created 0600, never widened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _make_ca(now: datetime.datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
            x509.NameAttribute(NameOID.COMMON_NAME, "harness run mesh CA"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + WORKLOAD_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return _Ca(key, cert)


def _workload_cert(
    ca: _Ca, identity: str, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An Istio-style workload certificate: empty subject, the SPIFFE id as its only (and
    critical) SAN, usable as TLS server and client."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + WORKLOAD_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def write_mesh_identities(
    directory: Path, namespace: str, proxies: Iterable[tuple[str, str]]
) -> dict[str, WorkloadTls]:
    """A fresh CA and, for every ``(proxy name, service account)``, a workload certificate;
    proxy name → the files its Envoy reads. ``directory`` is created (0700) and must not
    exist yet; the CA's key is never written."""
    directory.mkdir(mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca = _make_ca(now)
    pem = serialization.Encoding.PEM
    ca_path = _write_private(directory / "root-cert.pem", ca.cert.public_bytes(pem))
    files: dict[str, WorkloadTls] = {}
    for name, account in proxies:
        cert, key = _workload_cert(ca, workload_spiffe_id(namespace, account), now)
        key_bytes = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        files[name] = WorkloadTls(
            namespace=namespace,
            certificate_chain=str(
                _write_private(directory / f"{name}.crt", cert.public_bytes(pem))
            ),
            private_key=str(_write_private(directory / f"{name}.key", key_bytes)),
            trusted_ca=str(ca_path),
        )
    return files
