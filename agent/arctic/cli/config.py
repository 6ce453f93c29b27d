"""The CLI's own config file (reference notes §3.1): clusters, their shared credential, preferences.

It holds a client secret, so it is written with mode 0600 (directory 0700) and replaced atomically
so an interrupted write never leaves a half file. Unknown keys are kept on rewrite: a newer CLI may
have added them, and an older one must not silently drop them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arctic.cli.errors import ConfigError

OUTPUT_FORMATS = ("table", "wide", "json", "yaml")  # wide: the table with more columns, where a command has them
DEFAULT_PREFERENCES: dict[str, Any] = {
    "output_format": "table",
    "color": True,
    "timeout": 30,
    "cache_ttl": 3600,
    "auto_failover": False,
    "backup_retention": 5,
}


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$ARCTIC_CONFIG``, else ``$XDG_CONFIG_HOME/arctic/config.yaml``, else ``~/.config/arctic/config.yaml``."""
    env = os.environ if env is None else env
    if env.get("ARCTIC_CONFIG"):
        return Path(env["ARCTIC_CONFIG"]).expanduser()
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]).expanduser() / "arctic" / "config.yaml"
    return Path.home() / ".config" / "arctic" / "config.yaml"


def display_path(path: Path) -> str:
    """Show paths under $HOME as ``~/...`` (as the product's own messages do)."""
    home = str(Path.home())
    text = str(path)
    if home not in ("", "/") and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


@dataclass
class PeerEntry:
    peer_id: str
    name: str = ""
    endpoints: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PeerEntry:
        data = dict(raw)
        endpoints = list(data.pop("endpoints", None) or [])
        legacy_url = data.pop("url", None)  # the old format had one `url` per peer
        if legacy_url and legacy_url not in endpoints:
            endpoints.append(legacy_url)
        return cls(
            peer_id=str(data.pop("peer_id", "") or ""),
            name=str(data.pop("name", "") or ""),
            endpoints=[str(e) for e in endpoints],
            extra=data,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "peer_id": self.peer_id, "name": self.name, "endpoints": list(self.endpoints)}


@dataclass
class ClusterEntry:
    cluster_id: str
    customer_id: str = ""
    client_id: str = ""
    client_secret: str = ""
    peers: list[PeerEntry] = field(default_factory=list)
    default_peer: str = ""
    name: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, key: str, raw: Mapping[str, Any]) -> ClusterEntry:
        data = dict(raw or {})
        return cls(
            cluster_id=str(data.pop("cluster_id", None) or key),
            customer_id=str(data.pop("customer_id", "") or ""),
            client_id=str(data.pop("client_id", "") or ""),
            client_secret=str(data.pop("client_secret", "") or ""),
            peers=[PeerEntry.from_dict(p) for p in (data.pop("peers", None) or []) if isinstance(p, Mapping)],
            default_peer=str(data.pop("default_peer", "") or ""),
            name=str(data.pop("name", "") or ""),
            description=str(data.pop("description", "") or ""),
            extra=data,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "cluster_id": self.cluster_id,
            "customer_id": self.customer_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "peers": [p.to_dict() for p in self.peers],
            "default_peer": self.default_peer,
            "name": self.name,
            "description": self.description,
        }

    def endpoints(self) -> list[str]:
        """Endpoints to try, in order: the default peer's (empty default -> first peer), then the rest.

        Any agent answers any API call, so falling back to another peer is safe.
        """
        ordered = sorted(self.peers, key=lambda p: 0 if p.peer_id == self.default_peer else 1)
        seen: list[str] = []
        for peer in ordered:
            for url in peer.endpoints:
                if url not in seen:
                    seen.append(url)
        return seen

    def upsert_peer(self, peer: PeerEntry) -> None:
        for i, existing in enumerate(self.peers):
            if existing.peer_id == peer.peer_id:
                merged = list(peer.endpoints) + [e for e in existing.endpoints if e not in peer.endpoints]
                self.peers[i] = PeerEntry(peer.peer_id, peer.name or existing.name, merged, existing.extra)
                return
        self.peers.append(peer)


@dataclass
class CliConfig:
    path: Path
    current_cluster: str = ""
    clusters: dict[str, ClusterEntry] = field(default_factory=dict)
    preferences: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> CliConfig:
        """Read ``path``; a missing file is an empty config, a malformed one a ConfigError (exit 3)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path=path)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config file {path} must be a YAML mapping")
        data = dict(raw)
        clusters_raw = data.pop("clusters", None) or {}
        if not isinstance(clusters_raw, Mapping):
            raise ConfigError(f"config file {path}: 'clusters' must be a mapping keyed by cluster id")
        prefs = data.pop("preferences", None) or {}
        if not isinstance(prefs, Mapping):
            raise ConfigError(f"config file {path}: 'preferences' must be a mapping")
        return cls(
            path=path,
            current_cluster=str(data.pop("current_cluster", "") or ""),
            clusters={str(k): ClusterEntry.from_dict(str(k), v or {}) for k, v in clusters_raw.items()},
            preferences=dict(prefs),
            extra=data,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "current_cluster": self.current_cluster,
            "clusters": {k: c.to_dict() for k, c in self.clusters.items()},
            "preferences": {**DEFAULT_PREFERENCES, **self.preferences},
        }

    def preference(self, name: str) -> Any:
        return self.preferences.get(name, DEFAULT_PREFERENCES.get(name))

    def current(self) -> ClusterEntry | None:
        if not self.current_cluster:
            return None
        return self.clusters.get(self.current_cluster)

    def require_current(self) -> ClusterEntry:
        """The current cluster, or ConfigError 'no current cluster set' (exit 3)."""
        cluster = self.current()
        if cluster is None:
            if self.current_cluster:
                raise ConfigError(
                    f"current cluster {self.current_cluster} is not in {self.path}",
                    hint="run 'arctic bootstrap' or fix current_cluster in the config file",
                )
            raise ConfigError(
                "no current cluster set",
                hint="run 'arctic bootstrap --url URL --license-file FILE', or pass --url and --token",
            )
        return cluster

    def save(self) -> None:
        """Write atomically with mode 0600 (the file holds the cluster's client secret)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.chmod(self.path, 0o600)
