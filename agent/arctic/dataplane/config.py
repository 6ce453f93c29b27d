"""The data-plane configuration file: JSON rendered by the control plane, validated before any use.

The data plane is a separate process, so this file is its whole world: who we are (``local_peer_id`` and the
identity key), which peers exist (their Ed25519 keys and tunnel addresses) and which services and routes involve
us. A bad file is refused as a whole with a message that names the offending key (``services[0].routes[1].
dest_cidr: ...``); on reload the running configuration is then kept, so a typo never tears down traffic.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctic.domain import precedence
from arctic.domain.cidr import CidrError, parse_network
from arctic.ids import parse_id

ENCRYPTIONS = ("tls", "none")
TRANSPORTS = ("tcp", "kcp")  # what a service may declare (the documented model)
KCP_FEC_MODES = ("auto", "on", "off")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and says what is expected."""


@dataclass(frozen=True)
class PeerConfig:
    peer_id: str
    public_key: bytes  # raw 32-byte Ed25519 public key
    tunnel_address: str

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()


@dataclass(frozen=True)
class RouteConfig:
    """One route of one service; carries ``seq`` so ``arctic.domain.precedence`` can order it."""

    id: int
    service_id: str
    source_cidr: str | None
    dest_cidr: str | None
    priority: int
    seq: int


@dataclass(frozen=True)
class ServiceConfig:
    id: str
    source_peer_id: str
    target_peer_id: str
    transport_type: str
    fully_transparent: bool
    bind_address: str | None
    so_priority: int
    routes: tuple[RouteConfig, ...]
    so_priorities: tuple[int, ...] = ()  # QoS flow slots: one per session of the service (``sessions``)
    bandwidth_limit_mbps: int = 0  # 0 = unlimited; limited services give each stream its own slot session

    @property
    def slot_priorities(self) -> tuple[int, ...]:
        """The SO_PRIORITY values a session may use: the QoS slots, else ``so_priority``, else none (0)."""
        if self.so_priorities:
            return self.so_priorities
        return (self.so_priority,) if self.so_priority else ()

    def priority_of_slot(self, slot: int) -> int:
        """SO_PRIORITY of slot number ``slot`` (0 when the service has no slots: not shaped)."""
        priorities = self.slot_priorities
        return priorities[slot % len(priorities)] if priorities else 0

    @functools.cached_property
    def route_index(self) -> precedence.RouteIndex:
        return precedence.RouteIndex(precedence.ordered(self.routes))

    def admits(self, src_ip: str, dst_ip: str) -> bool:
        """Does any route of this service cover a connection src -> dst? (a target is never an open proxy)"""
        return self.route_index.first_match(src_ip, dst_ip) is not None


@dataclass(frozen=True)
class DataplaneConfig:
    local_peer_id: str
    identity_key_file: Path
    tproxy_port: int = 61080
    tunnel_port: int = 61000
    tunnel_bind: str = "0.0.0.0"
    encryption: str = "tls"
    drain_seconds: float = 30.0
    connect_timeout: float = 5.0
    workers: int = 0  # worker processes; 0 = one per CPU
    stream_window: int = 256 * 1024  # bytes a new stream may have in flight towards us (per direction)
    stream_window_max: int = 16 << 20  # what a fast stream's window may grow to (``streams``: auto-tuning)
    keepalive_interval: float = 5.0  # seconds between session PINGs (3 missed intervals end a session)
    bulk_lanes: bool = True  # plaintext: move bulk streams onto spliced connections of their own (``lanes``)
    lane_threshold: int = 1 << 20  # bytes one way after which a stream counts as bulk
    tunnel_congestion: str | None = "bbr"  # TCP congestion control of tunnel sockets (None = host default)
    kcp_port: int = 61000  # UDP port of KCP sessions (the TCP tunnel port's number by default)
    kcp_fec: str = "auto"  # Reed-Solomon parity: "on" (always 10+3), "auto" (while loss is seen), "off"
    kcp_window: int = 4096  # KCP segments in flight each way (see docs/kcp.md: sized for 250 ms paths)
    kcp_rate_mbit: int = 1000  # pacing rate of unlimited KCP services (limited ones pace at their limit)
    peers: Mapping[str, PeerConfig] = field(default_factory=dict)
    services: tuple[ServiceConfig, ...] = ()
    stats_file: Path | None = None
    # derived, filled by parse_config
    services_by_id: Mapping[str, ServiceConfig] = field(default_factory=dict, repr=False)
    source_routes: tuple[RouteConfig, ...] = field(default=(), repr=False)

    def peer_by_key(self, public_key: bytes) -> PeerConfig | None:
        for peer in self.peers.values():
            if peer.public_key == public_key:
                return peer
        return None

    @functools.cached_property
    def source_index(self) -> precedence.RouteIndex:
        return precedence.RouteIndex(self.source_routes)

    def route_for(self, src_ip: str, dst_ip: str) -> tuple[RouteConfig, ServiceConfig] | None:
        """The winning route (across every service this peer is the source of) for a new connection."""
        route = self.source_index.first_match(src_ip, dst_ip)
        return None if route is None else (route, self.services_by_id[route.service_id])


# --- parsing helpers: each raises ConfigError naming the key ------------------------------------------------

def _check_keys(obj: Any, where: str, required: set[str], optional: set[str]) -> dict:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where or 'config'}: must be a JSON object")
    prefix = f"{where}." if where else ""
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (allowed: {', '.join(sorted(required | optional))})")
    missing = sorted(required - set(obj))
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: required key is missing")
    return obj


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key}: must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _number(value: Any, key: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"{key}: must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _ip(value: Any, key: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: must be an IPv4 or IPv6 address, got {value!r}") from None


def _id(kind: str, value: Any, key: str) -> str:
    parsed = parse_id(kind, value)
    if parsed is None:
        raise ConfigError(f"{key}: must be a {kind} id such as {kind}_01HZY3K8J5Q2W9V4XN7R6T0ABC, got {value!r}")
    return parsed


def _public_key(value: Any, key: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{key}: must be the base64 of a raw 32-byte Ed25519 public key")
    return raw


def _cidr(value: Any, key: str) -> str | None:
    if value is None:
        return None
    try:
        return str(parse_network(value, key))
    except CidrError as err:
        raise ConfigError(str(err)) from None


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _congestion(value: Any) -> str | None:
    if value is None or value in CONGESTION_CONTROLS:
        return value
    raise ConfigError(f"tunnel_congestion: must be one of {', '.join(CONGESTION_CONTROLS)} or null (the host's "
                      f"default), got {value!r}")


def _parse_peer(peer_key: str, raw: Any) -> PeerConfig:
    where = f"peers.{peer_key}"
    peer_id = _id("peer", peer_key, where)
    obj = _check_keys(raw, where, {"public_key", "tunnel_address"}, set())
    return PeerConfig(peer_id=peer_id, public_key=_public_key(obj["public_key"], f"{where}.public_key"),
                      tunnel_address=_ip(obj["tunnel_address"], f"{where}.tunnel_address"))


def _parse_route(raw: Any, where: str, service_id: str) -> RouteConfig:
    obj = _check_keys(raw, where, {"id", "seq"}, {"source_cidr", "dest_cidr", "priority"})
    source = _cidr(obj.get("source_cidr"), f"{where}.source_cidr")
    dest = _cidr(obj.get("dest_cidr"), f"{where}.dest_cidr")
    if source is None and dest is None:
        raise ConfigError(f"{where}: needs source_cidr or dest_cidr (or both)")
    if source and dest and ipaddress.ip_network(source).version != ipaddress.ip_network(dest).version:
        raise ConfigError(f"{where}: source_cidr and dest_cidr must be the same address family")
    return RouteConfig(
        id=_int(obj["id"], f"{where}.id", 0, 2**63 - 1), service_id=service_id, source_cidr=source,
        dest_cidr=dest, priority=_int(obj.get("priority", 100), f"{where}.priority", -(2**31), 2**31 - 1),
        seq=_int(obj["seq"], f"{where}.seq", 0, 2**63 - 1),
    )


def _parse_service(raw: Any, where: str) -> ServiceConfig:
    obj = _check_keys(raw, where, {"id", "source_peer_id", "target_peer_id", "routes"},
                      {"transport_type", "fully_transparent", "bind_address", "so_priority", "so_priorities",
                       "bandwidth_limit_mbps"})
    service_id = _id("svc", obj["id"], f"{where}.id")
    transport = obj.get("transport_type", "tcp")
    if transport not in TRANSPORTS:
        raise ConfigError(f"{where}.transport_type: must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    bind = obj.get("bind_address")
    routes = obj["routes"]
    if not isinstance(routes, list):
        raise ConfigError(f"{where}.routes: must be a list")
    slots = obj.get("so_priorities", [])
    if not isinstance(slots, list):
        raise ConfigError(f"{where}.so_priorities: must be a list of SO_PRIORITY values")
    return ServiceConfig(
        id=service_id,
        source_peer_id=_id("peer", obj["source_peer_id"], f"{where}.source_peer_id"),
        target_peer_id=_id("peer", obj["target_peer_id"], f"{where}.target_peer_id"),
        transport_type=transport,
        fully_transparent=_bool(obj.get("fully_transparent", False), f"{where}.fully_transparent"),
        bind_address=None if bind is None else _ip(bind, f"{where}.bind_address"),
        so_priority=_int(obj.get("so_priority", 0), f"{where}.so_priority", 0, 2**32 - 1),
        routes=tuple(_parse_route(r, f"{where}.routes[{i}]", service_id) for i, r in enumerate(routes)),
        so_priorities=tuple(_int(v, f"{where}.so_priorities[{i}]", 1, 2**32 - 1) for i, v in enumerate(slots)),
        bandwidth_limit_mbps=_int(obj.get("bandwidth_limit_mbps", 0), f"{where}.bandwidth_limit_mbps", 0, 10**6),
    )


_REQUIRED = {"local_peer_id", "identity_key_file"}
_OPTIONAL = {"tproxy_port", "tunnel_port", "tunnel_bind", "encryption", "drain_seconds", "connect_timeout",
             "workers", "stream_window", "stream_window_max", "keepalive_interval", "bulk_lanes", "lane_threshold",
             "tunnel_congestion", "kcp_port", "kcp_fec", "kcp_window", "kcp_rate_mbit",
             "peers", "services", "stats_file"}
CONGESTION_CONTROLS = ("bbr", "cubic", "reno")


def parse_config(raw: Any, *, base_dir: Path | None = None) -> DataplaneConfig:
    """Validate a decoded JSON document; relative paths are taken from ``base_dir`` (the config's folder)."""
    obj = _check_keys(raw, "", _REQUIRED, _OPTIONAL)
    base_dir = base_dir or Path.cwd()

    def path(key: str) -> Path | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: must be a file path")
        return base_dir / value

    encryption = obj.get("encryption", "tls")
    if encryption not in ENCRYPTIONS:
        raise ConfigError(f"encryption: must be one of {', '.join(ENCRYPTIONS)}, got {encryption!r}")
    peers_raw = obj.get("peers", {})
    if not isinstance(peers_raw, dict):
        raise ConfigError("peers: must be an object keyed by peer id")
    peers: dict[str, PeerConfig] = {}
    for key, value in peers_raw.items():
        peer = _parse_peer(key, value)
        if peer.peer_id in peers:
            raise ConfigError(f"peers.{key}: the same peer is listed twice")
        peers[peer.peer_id] = peer
    services_raw = obj.get("services", [])
    if not isinstance(services_raw, list):
        raise ConfigError("services: must be a list")
    services = tuple(_parse_service(s, f"services[{i}]") for i, s in enumerate(services_raw))
    by_id: dict[str, ServiceConfig] = {}
    for i, svc in enumerate(services):
        if svc.id in by_id:
            raise ConfigError(f"services[{i}].id: service {svc.id} is listed twice")
        by_id[svc.id] = svc
    tproxy_port = _int(obj.get("tproxy_port", 61080), "tproxy_port", 1, 65535)
    tunnel_port = _int(obj.get("tunnel_port", 61000), "tunnel_port", 1, 65535)
    local = _id("peer", obj["local_peer_id"], "local_peer_id")
    source_routes = precedence.ordered(r for s in services if s.source_peer_id == local for r in s.routes)
    return DataplaneConfig(
        local_peer_id=local,
        identity_key_file=path("identity_key_file"),  # type: ignore[arg-type]  # required, so never None
        tproxy_port=tproxy_port,
        tunnel_port=tunnel_port,
        tunnel_bind=_ip(obj.get("tunnel_bind", "0.0.0.0"), "tunnel_bind"),
        encryption=encryption,
        drain_seconds=_number(obj.get("drain_seconds", 30), "drain_seconds", 0, 86400),
        connect_timeout=_number(obj.get("connect_timeout", 5), "connect_timeout", 0.1, 300),
        workers=_int(obj.get("workers", 0), "workers", 0, 256),
        stream_window=_int(obj.get("stream_window", 256 * 1024), "stream_window", 16 * 1024, 64 << 20),
        stream_window_max=_int(obj.get("stream_window_max", 16 << 20), "stream_window_max", 16 * 1024, 1 << 30),
        keepalive_interval=_number(obj.get("keepalive_interval", 5), "keepalive_interval", 0.1, 3600),
        bulk_lanes=_bool(obj.get("bulk_lanes", True), "bulk_lanes"),
        lane_threshold=_int(obj.get("lane_threshold", 1 << 20), "lane_threshold", 0, 2**40),
        tunnel_congestion=_congestion(obj.get("tunnel_congestion", "bbr")),
        kcp_port=_int(obj.get("kcp_port", tunnel_port), "kcp_port", 1, 65535),
        kcp_fec=_choice(obj.get("kcp_fec", "auto"), "kcp_fec", KCP_FEC_MODES),
        kcp_window=_int(obj.get("kcp_window", 4096), "kcp_window", 32, 32768),
        kcp_rate_mbit=_int(obj.get("kcp_rate_mbit", 1000), "kcp_rate_mbit", 0, 100_000),
        peers=peers,
        services=services,
        stats_file=path("stats_file"),
        services_by_id=by_id,
        source_routes=tuple(source_routes),
    )


def load_config(path: str | Path) -> DataplaneConfig:
    """Read and validate the JSON file at ``path``; raises ConfigError (never a bare JSON/OS error)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read data-plane config {path}: {err.strerror or err}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    return parse_config(raw, base_dir=path.parent)


def default_stats_path(config_path: str | Path) -> Path:
    """``/etc/arctic/dataplane.json`` -> ``/etc/arctic/dataplane.stats.json`` (where the agent looks)."""
    config_path = Path(config_path)
    return config_path.with_name(f"{config_path.stem}.stats.json")
