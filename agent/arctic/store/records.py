"""Typed records the store returns. ``to_api()`` gives the documented JSON shape."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

INACTIVE_PEER_STATES = ("revoked", "deactivated")


@dataclass
class Peer:
    id: str
    name: str
    public_key: str
    address: str
    is_local: bool
    state: str
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Peer:
        return cls(**dict(row) | {"is_local": bool(row["is_local"])})

    @property
    def is_member(self) -> bool:
        """Still part of the cluster: neither revoked by the others nor deactivated by itself (remove-self)."""
        return self.state not in INACTIVE_PEER_STATES

    def to_api(self) -> dict:
        return {
            "id": self.id, "name": self.name, "public_key": self.public_key, "is_local": self.is_local,
            "address": self.address, "state": self.state, "created_at": self.created_at,
        }


@dataclass
class Route:
    service_id: str
    id: int
    priority: int
    source_cidr: str | None
    dest_cidr: str | None
    seq: int
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Route:
        return cls(**dict(row))

    def to_api(self) -> dict:
        return {
            "id": self.id, "service_id": self.service_id, "priority": self.priority,
            "source_cidr": self.source_cidr, "dest_cidr": self.dest_cidr, "created_at": self.created_at,
        }


@dataclass
class Service:
    id: str
    name: str | None
    source_peer_id: str
    target_peer_id: str
    transport_type: str
    requires_interface: bool
    desired_ipv4_cidr: str | None
    desired_ipv6_cidr: str | None
    fully_transparent: bool
    bandwidth_limit_mbps: int
    interface_name: str | None
    interface_mac: str | None
    interface_ipv4_cidr: str | None
    interface_ipv6_cidr: str | None
    next_route_id: int
    created_at: str
    updated_at: str
    routes: list[Route] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: sqlite3.Row, routes: list[Route] | None = None) -> Service:
        data = dict(row)
        for flag in ("requires_interface", "fully_transparent"):
            data[flag] = bool(data[flag])
        return cls(**data, routes=routes or [])

    def to_api(self, *, with_routes: bool) -> dict:
        out = {
            "id": self.id, "name": self.name, "source_peer_id": self.source_peer_id,
            "target_peer_id": self.target_peer_id, "transport_type": self.transport_type,
            "requires_interface": self.requires_interface, "desired_ipv4_cidr": self.desired_ipv4_cidr,
            "desired_ipv6_cidr": self.desired_ipv6_cidr, "interface_name": self.interface_name,
            "interface_mac": self.interface_mac, "interface_ipv4_cidr": self.interface_ipv4_cidr,
            "interface_ipv6_cidr": self.interface_ipv6_cidr, "fully_transparent": self.fully_transparent,
            "bandwidth_limit_mbps": self.bandwidth_limit_mbps, "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if with_routes:
            out["routes"] = [r.to_api() for r in self.routes]
        else:
            out["route_count"] = len(self.routes)
        return out


@dataclass
class Credential:
    client_id: str
    secret_hash: str
    previous_secret_hash: str | None
    previous_valid_until: str | None
    scopes: list[str]
    license_id: str
    is_cluster: bool
    version: int
    rotated_by: str | None
    rotated_at: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Credential:
        data = dict(row)
        data["scopes"] = json.loads(data["scopes"])
        data["is_cluster"] = bool(data["is_cluster"])
        return cls(**data)

    def to_api(self) -> dict:
        return {
            "client_id": self.client_id, "scopes": self.scopes, "license_id": self.license_id,
            "is_cluster": self.is_cluster, "created_at": self.created_at, "last_used_at": self.last_used_at,
        }
