"""HTTPS for the BMCs: one CA per data dir, and a certificate per BMC address signed by it.

Placemat gave every BMC a fresh self-signed certificate at each start, so clients could
only skip verification. A CA kept in the data dir across runs is trusted once
(`curl --cacert <data-dir>/bmc/ca.crt`, sushy `verify=`), and each BMC's certificate names
its own IP address, so verification works with the address a client dials.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 10
LEAF_DAYS = 397  # the longest lifetime browsers and most TLS clients still accept
# A leaf's notBefore is backdated a little: a guest whose clock lags the host must not
# see a certificate from the future.
CLOCK_SKEW = datetime.timedelta(hours=1)


CA_KEY_USAGE = x509.KeyUsage(
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


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: generated in a millisecond where RSA-4096 (Placemat's) takes seconds under load.
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise CA creation between runs that share a data dir."""
    fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """The CA in `directory` (`ca.crt`, `ca.key`), created on first use."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        with _locked(directory):
            if cert_path.exists() and key_path.exists():
                try:
                    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
                except ValueError as exc:
                    raise ValueError(
                        f"BMC CA in {directory} is unreadable ({exc}); remove {cert_path} and"
                        f" {key_path} to make a new one"
                    ) from exc
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise ValueError(f"BMC CA key {key_path} is not an EC key")
                if cert.not_valid_after_utc > _now() + datetime.timedelta(days=LEAF_DAYS):
                    return cls(cert, key, cert_path)
                # An expiring CA is replaced rather than issuing leaves that outlive it.
            key = _new_key()
            common_name = f"vdc BMC CA on {socket.gethostname()}"
            name = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vdc"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
            now = _now()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(CA_KEY_USAGE, critical=True)
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            _write_atomic(key_path, _pem_key(key), 0o600)
            _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            return cls(cert, key, cert_path)

    def issue(self, addresses: Iterable[str], directory: Path) -> tuple[Path, Path]:
        """A server certificate for these IP addresses; returns (cert, key) paths in `directory`.

        The file holds the chain (leaf, then CA), so clients that were given only the CA
        build the path without an extra lookup."""
        ips = [ipaddress.ip_address(a) for a in addresses]
        if not ips:
            raise ValueError("a BMC certificate needs at least one address")
        key = _new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(ips[0]))]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip) for ip in ips]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        stem = str(ips[0]).replace(":", "_")
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(
            serialization.Encoding.PEM
        )
        _write_atomic(key_path, _pem_key(key), 0o600)
        _write_atomic(cert_path, chain, 0o644)
        return cert_path, key_path


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for a BMC's HTTPS: TLS 1.2 or later, as current BMC firmware offers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


__all__ = ["CertificateAuthority", "ssl_context"]
