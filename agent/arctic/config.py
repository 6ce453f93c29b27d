"""Agent configuration: one YAML file, with ``API_PORT`` and ``LOG_FORMAT`` env overrides.

Unknown keys are refused by name: a typo in a production config must not be silently ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class TunnelConfig:
    port: int = 61000
    encryption: str = "tls"  # tls | none
    tproxy_port: int = 61080
    congestion: str | None = "bbr"  # TCP congestion control of tunnel sockets (None: the host's default)
    kcp_port: int | None = None  # UDP port of KCP sessions (None: the same number as ``port``)
    kcp_fec: str = "auto"  # auto | on | off
    kcp_window: int = 4096  # KCP segments in flight each way
    kcp_rate_mbit: int = 1000  # pacing rate of unlimited KCP services


@dataclass(frozen=True)
class DataplaneSettings:
    """The supervised data-plane process (``python -m arctic.dataplane``); only used when ``apply_kernel``."""

    enabled: bool = True
    keep_on_stop: bool = True  # agent stop/restart leaves it running (live connections survive)
    drain_seconds: float = 30.0  # on its own stop: how long established connections may finish
    workers: int = 0  # worker processes (event loops); 0 = one per CPU


METRICS_AUTH = ("loopback", "token", "off")


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path = Path("/var/lib/arctic")
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    advertise_address: str | None = None
    recovery_token_file: Path = Path("/etc/arctic/recovery.token")
    log_format: str = "json"
    log_level: str = "info"
    issuer_public_keys: tuple[str, ...] = ()
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)
    lan_interface: str | None = None
    reconcile_interval: float = 30.0
    sync_interval: float = 5.0
    apply_kernel: bool = True
    dataplane: DataplaneSettings = field(default_factory=DataplaneSettings)
    # GET /metrics: loopback = open to 127.0.0.1/::1, a bearer token from elsewhere; token = always a bearer
    # token; off = open to anyone who reaches the API port
    metrics_auth: str = "loopback"
    source_path: Path | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "arctic.db"

    @property
    def identity_path(self) -> Path:
        return self.data_dir / "peer.key"

    @property
    def advertised(self) -> str:
        """host:port peers and the CLI use to reach this agent."""
        if self.advertise_address:
            return self.advertise_address
        host = "127.0.0.1" if self.listen_host in ("0.0.0.0", "::", "") else self.listen_host
        return f"{host}:{self.listen_port}"


_TOP = {
    "data_dir", "listen", "advertise_address", "recovery_token_file", "log_format", "log_level", "license",
    "tunnel", "lan_interface", "reconcile_interval", "sync_interval", "apply_kernel", "dataplane", "metrics",
}
_DATAPLANE = {"enabled", "keep_on_stop", "drain_seconds", "workers"}


def _split_listen(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen: {text!r} must be host:port, e.g. 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_config(raw: dict | None, *, env: dict | None = None, source: Path | None = None) -> AgentConfig:
    """Build an AgentConfig from a parsed YAML mapping plus environment overrides."""
    env = os.environ if env is None else env
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("the agent config must be a YAML mapping")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)} (known: {', '.join(sorted(_TOP))})")
    host, port = _split_listen(raw.get("listen", "0.0.0.0:8080"))
    if env.get("API_PORT"):
        if not env["API_PORT"].isdigit() or not 0 < int(env["API_PORT"]) < 65536:
            raise ConfigError(f"API_PORT={env['API_PORT']!r} is not a TCP port number")
        port = int(env["API_PORT"])
    log_format = env.get("LOG_FORMAT") or raw.get("log_format", "json")
    if log_format not in ("json", "text"):
        raise ConfigError(f"log_format/LOG_FORMAT must be json or text, not {log_format!r}")
    lic = raw.get("license") or {}
    if not isinstance(lic, dict) or set(lic) - {"issuer_public_keys"}:
        raise ConfigError("license: only 'issuer_public_keys' (a list of base64 Ed25519 keys) is accepted")
    keys = lic.get("issuer_public_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    tunnel = _tunnel_settings(raw.get("tunnel") or {})
    dataplane = _dataplane_settings(raw.get("dataplane"))
    metrics = raw.get("metrics") or {}
    if not isinstance(metrics, dict) or set(metrics) - {"auth"} or metrics.get("auth", "loopback") not in METRICS_AUTH:
        raise ConfigError(f"metrics: only 'auth' is accepted, one of {', '.join(METRICS_AUTH)} "
                          "(loopback: open on 127.0.0.1 and ::1, a bearer token from elsewhere)")
    return AgentConfig(
        data_dir=Path(raw.get("data_dir", "/var/lib/arctic")),
        listen_host=host,
        listen_port=port,
        advertise_address=raw.get("advertise_address"),
        recovery_token_file=Path(raw.get("recovery_token_file", "/etc/arctic/recovery.token")),
        log_format=log_format,
        log_level=str(raw.get("log_level", "info")),
        issuer_public_keys=tuple(str(k) for k in keys),
        tunnel=tunnel,
        lan_interface=raw.get("lan_interface"),
        reconcile_interval=float(raw.get("reconcile_interval", 30.0)),
        sync_interval=float(raw.get("sync_interval", 5.0)),
        apply_kernel=bool(raw.get("apply_kernel", True)),
        dataplane=dataplane,
        metrics_auth=metrics.get("auth", "loopback"),
        source_path=source,
    )


_TUNNEL = {"port", "encryption", "tproxy_port", "congestion", "kcp_port", "kcp_fec", "kcp_window", "kcp_rate_mbit"}


def _tunnel_settings(raw: object) -> TunnelConfig:
    if not isinstance(raw, dict):
        raise ConfigError("tunnel: must be a mapping")
    unknown = set(raw) - _TUNNEL
    if unknown:
        raise ConfigError(f"unknown tunnel key(s): {', '.join(sorted(unknown))}")

    def whole(key: str, default: int | None, lo: int, hi: int) -> int | None:
        value = raw.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"tunnel.{key} must be a whole number from {lo} to {hi}")
        return value

    tunnel = TunnelConfig(
        port=whole("port", 61000, 1, 65535) or 61000,
        encryption=str(raw.get("encryption", "tls")),
        tproxy_port=whole("tproxy_port", 61080, 1, 65535) or 61080,
        congestion=raw.get("congestion", "bbr"),
        kcp_port=whole("kcp_port", None, 1, 65535),
        kcp_fec=str(raw.get("kcp_fec", "auto")),
        kcp_window=whole("kcp_window", 4096, 32, 32768) or 4096,
        kcp_rate_mbit=whole("kcp_rate_mbit", 1000, 0, 100_000) or 0,
    )
    if tunnel.encryption not in ("tls", "none"):
        raise ConfigError(f"tunnel.encryption must be tls or none, not {tunnel.encryption!r}")
    if tunnel.congestion not in (None, "bbr", "cubic", "reno"):
        raise ConfigError(f"tunnel.congestion must be bbr, cubic, reno or null, not {tunnel.congestion!r}")
    if tunnel.kcp_fec not in ("auto", "on", "off"):
        raise ConfigError(f"tunnel.kcp_fec must be auto, on or off, not {tunnel.kcp_fec!r}")
    return tunnel


def _dataplane_settings(raw: object) -> DataplaneSettings:
    raw = raw or {}
    if not isinstance(raw, dict) or set(raw) - _DATAPLANE:
        raise ConfigError(f"dataplane: only {', '.join(sorted(_DATAPLANE))} are accepted")
    for key in ("enabled", "keep_on_stop"):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"dataplane.{key} must be true or false")
    drain = raw.get("drain_seconds", 30.0)
    if isinstance(drain, bool) or not isinstance(drain, int | float) or not 0 <= drain <= 86400:
        raise ConfigError("dataplane.drain_seconds must be a number of seconds from 0 to 86400")
    workers = raw.get("workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 256:
        raise ConfigError("dataplane.workers must be a whole number from 0 (one per CPU) to 256")
    return DataplaneSettings(enabled=raw.get("enabled", True), keep_on_stop=raw.get("keep_on_stop", True),
                             drain_seconds=float(drain), workers=workers)


def load_config(path: str | Path, env: dict | None = None) -> AgentConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"agent config {path} is not valid YAML: {exc}") from None
    return parse_config(raw, env=env, source=path)
