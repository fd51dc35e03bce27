"""The e2e cluster's certificates, keys and kubeconfigs, made at first start.

One CA signs everything (a test cluster needs no separate client, serving and
request-header CAs); identities follow the Kubernetes conventions the authorizers check:
`system:node:<name>` in `system:nodes` for the kubelet (Node authorizer, NodeRestriction),
`system:kube-controller-manager`, `system:kube-scheduler`, `system:kube-proxy`, an admin in
`system:masters`, and `kube-apiserver` as the apiserver's client identity toward kubelets.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vdc_runtime.bmc.tls import CA_KEY_USAGE  # a CA's key usage is a CA's key usage

VALIDITY = datetime.timedelta(days=3650)  # a test cluster's PKI outlives its CI machine

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Client:
    """A client certificate: who a component is to the apiserver."""

    file: str
    user: str
    groups: tuple[str, ...] = ()


CLIENTS = (
    Client("admin", "vdc-e2e-admin", ("system:masters",)),
    Client("controller-manager", "system:kube-controller-manager"),
    Client("scheduler", "system:kube-scheduler"),
    Client("kube-proxy", "system:kube-proxy"),
    Client("apiserver-kubelet-client", "kube-apiserver"),
)


def kubelet_client(node: str, file: str = "kubelet") -> Client:
    return Client(file, f"system:node:{node}", ("system:nodes",))


def _name(common: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Pki:
    """The files under `directory`, created once and reused by every later `up`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    def ensure(self, node: str, node_ip: str, service_ip: str) -> None:
        """Make whatever is missing; a half-made set (killed mid-way) is finished."""
        self.dir.mkdir(parents=True, exist_ok=True)
        ca_key, ca = self._ca()
        serving_names = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        ]
        self._leaf(
            ca_key, ca, "apiserver", _name("kube-apiserver"), server=True,
            dns=serving_names, ips=[node_ip, service_ip, "127.0.0.1"],
        )  # fmt: skip
        for client in CLIENTS:
            self._leaf(ca_key, ca, client.file, _name(client.user, client.groups), server=False)
        self.ensure_node(node, node_ip)
        if not self.path("sa.key").exists():
            # Service-account tokens are RS256 by default: an RSA key both signs and verifies.
            sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _write(self.path("sa.pub"), public, 0o644)
            _write(self.path("sa.key"), _pem(sa))

    def ensure_node(self, node: str, node_ip: str, prefix: str = "kubelet") -> None:
        """A kubelet's client certificate (`PREFIX.crt`) and its serving one
        (`PREFIX-serving.crt`); the CA must exist (`ensure` makes it)."""
        ca_key, ca = self._ca()
        client = kubelet_client(node, prefix)
        self._leaf(ca_key, ca, client.file, _name(client.user, client.groups), server=False)
        # The kubelet's own HTTPS (logs, exec), checked by the apiserver against this CA.
        self._leaf(
            ca_key, ca, f"{prefix}-serving", _name(f"system:node:{node}", ("system:nodes",)),
            server=True, dns=[node], ips=[node_ip],
        )  # fmt: skip

    def _ca(self) -> tuple[Key, x509.Certificate]:
        key_path, cert_path = self.path("ca.key"), self.ca_cert
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _name("vdc-e2e-ca")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .sign(key, hashes.SHA256())
        )
        _write(key_path, _pem(key))
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        # A new CA invalidates every leaf it did not sign.
        for stale in self.dir.glob("*.crt"):
            if stale != cert_path:
                stale.unlink()
        return key, cert

    def _leaf(
        self,
        ca_key: Key,
        ca: x509.Certificate,
        file: str,
        subject: x509.Name,
        *,
        server: bool,
        dns: list[str] | None = None,
        ips: list[str] | None = None,
    ) -> None:
        cert_path, key_path = self.path(f"{file}.crt"), self.path(f"{file}.key")
        if cert_path.exists() and key_path.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns or []]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips or []]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(key_path, _pem(key))
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def kubeconfig(self, client: Client, server: str) -> str:
        return kubeconfig_text(
            server=server,
            ca=self.ca_cert.read_bytes(),
            cert=self.path(f"{client.file}.crt").read_bytes(),
            key=self.path(f"{client.file}.key").read_bytes(),
            user=client.user,
        )


def kubeconfig_text(*, server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    """A kubeconfig with everything embedded, so it works copied anywhere (pure)."""
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "vdc-e2e",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": "vdc-e2e", "context": {"cluster": "vdc-e2e", "user": user}}],
        "current-context": "vdc-e2e",
    }
    return yaml.safe_dump(config, sort_keys=False)


__all__ = ["CLIENTS", "Client", "Pki", "kubeconfig_text", "kubelet_client"]
