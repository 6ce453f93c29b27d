"""The anchor the issue-4 benchmarks compare Arctic with: an HAProxy TCP relay pair on agent-a and agent-b.

Same hosts and hops as Arctic: the client connects to HAProxy on agent-a (its gateway, 10.0.0.1), which relays
to HAProxy on agent-b over the core link, which connects to the server. Unlike Arctic the client addresses the
relay itself instead of being intercepted; that costs the relay nothing, so the anchor is if anything a little
flattered. The agent-a -> agent-b leg is plain TCP or TLS 1.3 with mutual certificate authentication
(Ed25519 keys, like Arctic's identity-bound certificates; a throw-away CA made with ``cryptography`` in the lab run
directory). Plain relays get ``option splice-auto`` (kernel splicing, as Arctic's plaintext relay uses). HAProxy
keeps its defaults otherwise, including TLS session resumption on the a -> b leg (``tls_reuse=False`` turns it off,
so every connection pays a full handshake as Arctic's tunnel connections do), i.e. what an operator would run;
it gets as many threads as there are CPUs, as Arctic's threads can use them all.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from harness import Transit


@dataclass(frozen=True)
class Relay:
    """One relayed path: clients connect to ``front`` (agent-a), agent-b listens on ``peer``, serves ``target``."""

    name: str
    front: tuple[str, int]
    peer: tuple[str, int]
    target: tuple[str, int]
    tls: bool


def _pem_key(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: Ed25519PrivateKey, issuer: x509.Name, signer: Ed25519PrivateKey, *,
          ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, None))


def write_certificates(directory: Path) -> dict[str, Path]:
    """A CA and two leaves (agent-b serves, agent-a authenticates as a client); paths of the PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = Ed25519PrivateKey.generate()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arctic bench haproxy ca")])
    ca = _cert("arctic bench haproxy ca", ca_key, ca_name, ca_key, ca=True)
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = Ed25519PrivateKey.generate()
        leaf = _cert(f"haproxy {role}", key, ca_name, ca_key, ca=False)
        paths[role] = directory / f"{role}.pem"  # HAProxy wants certificate and key in one file
        paths[role].write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + _pem_key(key))
        os.chmod(paths[role], 0o600)
    return paths


class HaproxyPair:
    """Two HAProxy processes (one per agent host) carrying ``relays``; ended by the lab's teardown."""

    def __init__(self, t: Transit, relays: list[Relay], *, threads: int | None = None,
                 tls_reuse: bool = True) -> None:
        self.t, self.relays, self.tls_reuse = t, relays, tls_reuse
        self.threads = threads or os.cpu_count() or 1
        self.dir = t.lab.run_dir / "haproxy"
        self.procs: list[subprocess.Popen] = []

    def _config(self, side: str, certs: dict[str, Path]) -> str:
        """HAProxy config for agent-``side``: per relay a frontend and a backend (splice for plain TCP)."""
        lines = ["global", f"    nbthread {self.threads}", "    maxconn 4000", "defaults", "    mode tcp",
                 "    timeout connect 5s", "    timeout client 120s", "    timeout server 120s"]
        for r in self.relays:
            tls = f"ssl crt {certs['client' if side == 'a' else 'server']} ca-file {certs['ca']} verify required " \
                  "ssl-min-ver TLSv1.3"
            bind = f"{r.front[0]}:{r.front[1]}" if side == "a" else f"{r.peer[0]}:{r.peer[1]}"
            server = f"peer {r.peer[0]}:{r.peer[1]}" if side == "a" else f"target {r.target[0]}:{r.target[1]}"
            if r.tls and side == "a":
                server += f" {tls}" + ("" if self.tls_reuse else " no-ssl-reuse")
            if r.tls and side == "b":
                bind += f" {tls}"
            lines += [f"frontend f_{r.name}", f"    bind {bind}", f"    default_backend b_{r.name}",
                      f"backend b_{r.name}", f"    server {server}"]
            if not r.tls:
                lines.insert(-3, "    option splice-auto")  # kernel splicing, as Arctic's plaintext relay does
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> HaproxyPair:
        certs = write_certificates(self.dir)
        for side, host in (("a", self.t.agent_a), ("b", self.t.agent_b)):
            path = self.dir / f"haproxy-{side}.cfg"
            path.write_text(self._config(side, certs))
            host.run("haproxy", "-c", "-q", "-f", str(path))  # a config error fails here, with HAProxy's message
            with open(self.dir / f"haproxy-{side}.log", "w") as log:
                self.procs.append(host.popen("haproxy", "-db", "-f", str(path), stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for host, ports in ((self.t.agent_a, [r.front[1] for r in self.relays]),
                            (self.t.agent_b, [r.peer[1] for r in self.relays])):
            for port in ports:
                while not host.run("ss", "-Hltn", f"sport = :{port}").stdout.strip():  # looks, sends nothing
                    if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                        logs = "\n".join(p.read_text() for p in sorted(self.dir.glob("haproxy-*.log")))
                        raise RuntimeError(f"HAProxy does not listen on port {port} in {host}:\n{logs[-2000:]}")
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.procs.clear()

