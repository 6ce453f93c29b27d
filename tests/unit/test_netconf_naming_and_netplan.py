"""Stable per-service names and MACs, and the netplan YAML that persists service interface addressing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from arctic.fileutil import replace_private_file
from arctic.netconf.interfaces import InterfaceSpec
from arctic.netconf.naming import interface_mac, interface_name, is_owned_name
from arctic.netconf.netplan import render_netplan

SVC = "svc_01HZXQ3M4K5N6P7R8S9T0V1W2X"


def spec(sid: str, ipv4: str | None, ipv6: str | None = None, parent: str = "eth-net100") -> InterfaceSpec:
    return InterfaceSpec(sid, interface_name(sid), interface_mac(sid), ipv4, ipv6, parent)


def test_interface_name_is_stable_short_and_recognisably_ours():
    name = interface_name(SVC)
    assert name == interface_name(SVC) and name.startswith("arc") and len(name) <= 15
    assert is_owned_name(name)
    assert interface_name("svc_01HZXQ3M4K5N6P7R8S9T0V1W2Y") != name
    assert not is_owned_name("eth0") and not is_owned_name("arc-lab")


def test_interface_mac_is_a_stable_locally_administered_unicast_address():
    mac = interface_mac(SVC)
    first = int(mac.split(":")[0], 16)
    assert mac == interface_mac(SVC) and len(mac.split(":")) == 6
    assert first & 0x02 and not first & 0x01


def test_netplan_lists_static_addresses_and_dhcp_without_stealing_routes():
    text = render_netplan([spec(SVC, "192.168.100.10/24", "fd00:100::10/64"), spec("svc_dhcp", None)])
    static, dhcp = interface_name(SVC), interface_name("svc_dhcp")
    assert f"    {static}:\n" in text and f"    {dhcp}:\n" in text
    block = text.split(f"    {static}:\n")[1].split("    # service")[0]
    assert '- "192.168.100.10/24"' in block and '- "fd00:100::10/64"' in block and "dhcp4: false" in block
    dblock = text.split(f"    {dhcp}:\n")[1].split("    # service")[0]
    assert "dhcp4: true" in dblock and "use-routes: false" in dblock and "addresses" not in dblock
    assert f'macaddress: "{interface_mac(SVC)}"' in text and "optional: true" in text


def test_netplan_without_service_interfaces_is_an_empty_network():
    text = render_netplan([])
    assert text.rstrip().endswith("network:\n  version: 2")


@pytest.mark.skipif(shutil.which("netplan") is None, reason="netplan is not installed")
def test_netplan_generate_accepts_the_rendered_file(tmp_path: Path):
    conf = tmp_path / "etc" / "netplan" / "60-arctic.yaml"
    assert replace_private_file(conf, render_netplan([spec(SVC, "192.168.100.10/24"), spec("svc_dhcp", None)]))
    assert conf.stat().st_mode & 0o777 == 0o600
    proc = subprocess.run(["netplan", "generate", "--root-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    static = (tmp_path / f"run/systemd/network/10-netplan-{interface_name(SVC)}.network").read_text()
    assert f"Name={interface_name(SVC)}" in static and "Address=192.168.100.10/24" in static
    dhcp = (tmp_path / f"run/systemd/network/10-netplan-{interface_name('svc_dhcp')}.network").read_text()
    assert "DHCP=ipv4" in dhcp and "UseRoutes=false" in dhcp


def test_writing_the_netplan_file_reports_whether_anything_changed(tmp_path: Path):
    path = tmp_path / "arctic.yaml"
    assert replace_private_file(path, "a: 1\n") is True
    assert replace_private_file(path, "a: 1\n") is False
    assert replace_private_file(path, "a: 2\n") is True and path.read_text() == "a: 2\n"
