"""The CLI config file: where it lives, how it is written, what survives a rewrite."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from arctic.cli.config import CliConfig, ClusterEntry, PeerEntry, default_config_path
from arctic.cli.errors import ConfigError
from clifakes import CLUSTER_ID


def test_arctic_config_env_wins_over_xdg_and_home(tmp_path: Path) -> None:
    env = {"ARCTIC_CONFIG": str(tmp_path / "explicit.yaml"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert default_config_path(env) == tmp_path / "explicit.yaml"


def test_xdg_config_home_is_used_when_arctic_config_is_unset(tmp_path: Path) -> None:
    assert default_config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "arctic" / "config.yaml"


def test_default_is_dot_config_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config_path({}) == tmp_path / ".config" / "arctic" / "config.yaml"


def test_missing_file_is_an_empty_config_not_an_error(tmp_path: Path) -> None:
    cfg = CliConfig.load(tmp_path / "nope.yaml")
    assert cfg.current() is None and cfg.clusters == {}


def test_saved_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "config.yaml"
    cfg = CliConfig(path=path, current_cluster=CLUSTER_ID)
    cfg.clusters[CLUSTER_ID] = ClusterEntry(
        cluster_id=CLUSTER_ID, client_id="cli_1", client_secret="sec_1",
        peers=[PeerEntry("peer_1", "agent-a", ["http://127.0.0.1:8080"])], default_peer="peer_1",
    )
    cfg.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = yaml.safe_load(path.read_text())
    assert raw["current_cluster"] == CLUSTER_ID
    assert raw["clusters"][CLUSTER_ID]["peers"][0]["endpoints"] == ["http://127.0.0.1:8080"]
    assert raw["preferences"]["output_format"] == "table"
    again = CliConfig.load(path)
    assert again.require_current().client_secret == "sec_1"


def test_rewrite_keeps_keys_this_version_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "current_cluster": "c1", "future_top": 1,
        "clusters": {"c1": {"client_id": "x", "future_cluster_key": [1, 2],
                            "peers": [{"peer_id": "p", "url": "http://10.0.0.1:8080", "api_access": "internal"}]}},
        "preferences": {"color": False},
    }))
    cfg = CliConfig.load(path)
    cfg.save()
    raw = yaml.safe_load(path.read_text())
    assert raw["future_top"] == 1
    assert raw["clusters"]["c1"]["future_cluster_key"] == [1, 2]
    peer = raw["clusters"]["c1"]["peers"][0]
    assert peer["api_access"] == "internal"
    assert peer["endpoints"] == ["http://10.0.0.1:8080"]  # legacy `url` becomes an endpoint
    assert raw["preferences"]["color"] is False


def test_default_peer_endpoints_are_tried_first_then_the_others() -> None:
    entry = ClusterEntry(
        cluster_id="c",
        peers=[PeerEntry("a", endpoints=["http://a:1"]), PeerEntry("b", endpoints=["http://b:1", "http://b:2"])],
        default_peer="b",
    )
    assert entry.endpoints() == ["http://b:1", "http://b:2", "http://a:1"]


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        CliConfig.load(path)


def test_no_current_cluster_is_reported_with_the_documented_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^no current cluster set$"):
        CliConfig.load(tmp_path / "absent.yaml").require_current()
