"""TLS 1.3 between peers, mutually authenticated by the peers' Ed25519 identity keys (no CA, no hostnames).

Each peer presents an X.509 certificate made from its identity key. Stock ``ssl`` cannot accept "any certificate
whose key is K" through a callback, so we let OpenSSL do real chain verification against a per-peer *anchor*:

* a peer's **leaf** certificate has subject ``O=arctic peer tls, CN=<b64 key>`` and issuer
  ``O=arctic peer key, CN=<b64 key>``, and is signed by the identity key itself;
* the verifying side builds, from the *configured* public key alone, an **anchor** certificate with subject
  ``O=arctic peer key, CN=<b64 key>``, that public key, ``CA:TRUE``; it is signed by a throw-away key because
  OpenSSL does not check the self-signature of a trust anchor.

So the leaf verifies only if it was signed by the configured key, and the TLS handshake (CertificateVerify)
proves the presenter holds that key. After the handshake we still compare the leaf's key with the expected one
(``peer_public_key``) as the authoritative check. The client trusts only its target's anchor; the server trusts
every configured peer and learns *which* peer connected from the key.
"""

from __future__ import annotations

import base64
import datetime
import os
import ssl
import tempfile
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from arctic.cluster.identity import private_key_to_pem

from .keys import raw_public_key

PEER_NAME = "arctic-peer"  # the SNI a client sends (asyncio wants one); peers are identified by key, not name
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC)


class PeerAuthError(ssl.SSLError):
    """The tunnel peer's certificate key is not the key we expected."""


def _name(public_raw: bytes, role: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"arctic peer {role}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, base64.b64encode(public_raw).decode())])


def leaf_certificate(key: Ed25519PrivateKey) -> x509.Certificate:
    """The certificate this peer presents: its identity key, signed by itself, issued by its own anchor name."""
    public = key.public_key()
    raw = raw_public_key(public)
    return (x509.CertificateBuilder()
            .subject_name(_name(raw, "tls")).issuer_name(_name(raw, "key")).public_key(public)
            .serial_number(int.from_bytes(raw[:8], "big") >> 1 or 1)
            .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
            .sign(key, None))


def anchor_certificate(public_raw: bytes) -> x509.Certificate:
    """A trust anchor made from a configured public key alone (see module docstring)."""
    public = Ed25519PublicKey.from_public_bytes(public_raw)
    name = _name(public_raw, "key")
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public).serial_number(1)
            .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(Ed25519PrivateKey.generate(), None))


def _context(server: bool, key: Ed25519PrivateKey, trusted_keys: Iterable[bytes]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if not server:
        ctx.check_hostname = False  # peers are identified by key, not by name
    ctx.verify_mode = ssl.CERT_REQUIRED
    if server:
        # Sessions are long-lived and opened ahead of need: no resumption tickets to manage.
        ctx.num_tickets = 0
    cert_pem = leaf_certificate(key).public_bytes(serialization.Encoding.PEM)
    with tempfile.TemporaryDirectory(prefix="arctic-tls-") as tmp:  # 0700; ssl can only load from files
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as fh:
            fh.write(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_key_to_pem(key))
        ctx.load_cert_chain(cert_path, key_path)
    anchors = "".join(anchor_certificate(k).public_bytes(serialization.Encoding.PEM).decode()
                      for k in dict.fromkeys(trusted_keys))
    if anchors:
        ctx.load_verify_locations(cadata=anchors)
    return ctx


def server_context(key: Ed25519PrivateKey, peer_keys: Iterable[bytes]) -> ssl.SSLContext:
    """Accepts any configured peer; the caller maps the presented key back to a peer id."""
    return _context(True, key, peer_keys)


def client_context(key: Ed25519PrivateKey, target_key: bytes) -> ssl.SSLContext:
    """Trusts exactly one key: the target peer's."""
    return _context(False, key, [target_key])


def peer_public_key(cert_der: bytes | None) -> bytes:
    """Raw Ed25519 public key of the certificate the peer presented (PeerAuthError when unusable)."""
    if not cert_der:
        raise PeerAuthError("the tunnel peer presented no certificate")
    public = x509.load_der_x509_certificate(cert_der).public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise PeerAuthError("the tunnel peer's certificate does not carry an Ed25519 key")
    return raw_public_key(public)
