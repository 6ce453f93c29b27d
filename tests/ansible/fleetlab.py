"""The lab behind Arctic's Ansible tests: Molecule's create/destroy, the ad-hoc and the AWX-style runner tests.

Ansible's controller runs in the root namespace and the lab must never be reached from there, so every lab host
is an Ansible host whose *interpreter* enters the host's namespace: ``bin/py-<host>`` is
``ip netns exec <ns> python "$@"`` (ansible-anchors.md §2.3). Modules, ``command`` and ``uri`` therefore run
inside the namespaces and talk to the agents on loopback or over the lab links. The SSH scenario reaches the
agents' own sshd through ``bin/ctl-connect``, a ProxyCommand that opens the TCP connection from inside ``ctl``,
so SSH traffic, too, starts and ends in the lab.

Everything one lab needs lives in one directory (``ARCTIC_LAB_DIR``), whose layout the sample inventory
(``playbooks/inventories/lab``) relies on::

    lab.json                  state: namespaces, addresses, daemon pid, flags ("ready": true once usable)
    license.json issuer.pub   one licence (one customer) for the whole fleet, and its issuer's public key
    bin/py-<host>             interpreter wrapper per host;  bin/ctl-connect  ProxyCommand for SSH
    hosts/<host>/etc/         agent.yaml, credentials.json (client_id/secret from bootstrap), unit file
    ssh/                      client key, host key, authorized_keys, sshd configs (``--ssh`` only)

Command line (used by ``molecule/shared/create.yml`` and ``destroy.yml``)::

    python tests/ansible/fleetlab.py up   --dir DIR [--agents] [--ssh] [--max-age 1800]
    python tests/ansible/fleetlab.py down --dir DIR

``up`` starts a detached ``serve`` process that owns the namespaces (the harness tears a lab down when its
owner exits) and returns once the lab is ready; ``down`` asks that process to stop agents, sshd and namespaces
and waits until they are gone. ``--agents`` also starts, bootstraps and joins real agents with the harness
(scenarios that test modules); without it the agents are the Ansible role's job (the fleet stand-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from agentkit import Issuer  # noqa: E402
from harness import AgentProcess, Host, Lab, http, lab_address, lab_agent, tcp_connect, transit  # noqa: E402
from harness.netns import is_dead  # noqa: E402

PREFIX = "arcm"
AGENT_PORT = 8080
SSH_PORT = 22
#: Lab hosts as Ansible sees them: inventory name -> harness role (the transit topology of the seed document).
HOSTS = ("agent-a", "agent-b", "ctl", "cl", "s1", "s2")
AGENTS = ("agent-a", "agent-b")
#: The LAN interface each agent hangs service MACVLANs on (DESIGN.md "Service interface").
LAN_INTERFACE = {"agent-a": "eth-lan", "agent-b": "eth-net100"}
#: Where the role's ``lab`` service manager keeps the agent's pid (``arctic_agent_run_dir``/arctic.pid).
ROLE_PIDFILE = "arctic.pid"
DEFAULT_MAX_AGE = 1800.0  # seconds; an abandoned lab tears itself down after this


class FleetLabError(RuntimeError):
    """The lab could not be built or torn down; the message says what and where to look."""


def wrapper_script(ns: str, python: str) -> str:
    """``ansible_python_interpreter`` for a host: the same Python, inside the host's namespace."""
    return f'#!/bin/sh\nexec /usr/sbin/ip netns exec {ns} {python} "$@"\n'


def build_wheel(dest: Path) -> Path:
    """Build this repository's agent package (a wheel) into ``dest`` from a scratch copy of the source.

    Built from a copy so the work tree gets no ``build/`` directory; about 3 s with a warm pip cache.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="arctic-wheel-") as scratch:
        src = Path(scratch) / "src"
        src.mkdir()
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        for name in ("agent", "templates"):
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(src)],
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise FleetLabError(f"building the agent wheel failed:\n{proc.stderr[-2000:]}")
    wheels = sorted(dest.glob("arctic-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise FleetLabError(f"pip wheel produced no arctic-*.whl in {dest}")
    return wheels[-1]


class FleetLab:
    """The transit lab plus what Ansible needs to drive it; ``start()`` then ``close()`` (or a ``with`` block)."""

    def __init__(self, lab_dir: Path, *, agents: bool = False, ssh: bool = False, prefix: str = PREFIX) -> None:
        self.dir = Path(lab_dir).resolve()
        self.with_agents, self.with_ssh, self.prefix = agents, ssh, prefix
        self.lab: Lab | None = None
        self.hosts: dict[str, Host] = {}
        self.addresses: dict[str, str] = {}
        self.agents: dict[str, AgentProcess] = {}
        self.credentials: dict[str, dict] = {}
        self.issuer = Issuer.generate()

    def __enter__(self) -> FleetLab:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- building --------------------------------------------------------------------------------------------

    def start(self) -> FleetLab:
        for sub in ("bin", "hosts"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.lab = Lab(prefix=self.prefix)
        try:
            t = transit(self.lab)
            self.hosts = {"agent-a": t.agent_a, "agent-b": t.agent_b, "ctl": t.ctl, "cl": t.cl, "s1": t.s1,
                          "s2": t.s2}
            self.addresses = {"agent-a": t.agent_a_ip, "agent-b": t.agent_b_ip, "ctl": t.ctl_ip,
                              "cl": t.client_ip, "s1": t.s1_ip, "s2": t.s2_ip}
            self._write_files()
            if self.with_ssh:
                self._start_sshd()
            if self.with_agents:
                self._start_agents()
            self._write_state(ready=True)
        except BaseException:
            self.close()
            raise
        return self

    def _host_dir(self, name: str, sub: str) -> Path:
        path = self.dir / "hosts" / name / sub
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write_files(self) -> None:
        for name, host in self.hosts.items():
            wrapper = self.dir / "bin" / f"py-{name}"
            wrapper.write_text(wrapper_script(host.name, sys.executable))
            wrapper.chmod(0o755)
            for sub in ("etc", "run"):
                self._host_dir(name, sub)
        relay = self.dir / "bin" / "ctl-connect"
        relay.write_text(f'#!/bin/sh\nexec /usr/sbin/ip netns exec {self.hosts["ctl"].name} {sys.executable} '
                         f'{Path(__file__).resolve()} relay "$@"\n')
        relay.chmod(0o755)
        licence = self.issuer.licence(customer_id="cust_fleetlab", max_nodes=10, max_services=100)
        (self.dir / "license.json").write_text(json.dumps(licence, indent=2) + "\n")
        (self.dir / "issuer.pub").write_text(self.issuer.public_b64 + "\n")

    def _start_sshd(self) -> None:
        """sshd inside each agent namespace, listening on the agent's lab address only; root logs in by key."""
        ssh = self.dir / "ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        for key in ("id_ed25519", "host_ed25519"):
            if not (ssh / key).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"arctic-lab-{key}",
                                "-f", str(ssh / key)], check=True, capture_output=True, timeout=30)
        shutil.copyfile(ssh / "id_ed25519.pub", ssh / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        for name in AGENTS:
            config = ssh / f"sshd_config-{name}"
            config.write_text("\n".join([
                f"ListenAddress {self.addresses[name]}:{SSH_PORT}",
                f"HostKey {ssh / 'host_ed25519'}",
                f"PidFile {self._host_dir(name, 'run') / 'sshd.pid'}",
                f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
                "PermitRootLogin prohibit-password", "PasswordAuthentication no",
                "KbdInteractiveAuthentication no", "UsePAM no",
                "StrictModes no",  # the key files live under /tmp-like dirs that StrictModes would refuse
                "Subsystem sftp internal-sftp", "",
            ]))
            log = (self._host_dir(name, "run") / "sshd.log").open("ab")
            self.hosts[name].popen("/usr/sbin/sshd", "-D", "-e", "-f", str(config), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
        deadline = time.monotonic() + 15
        for name in AGENTS:
            while not tcp_connect(self.hosts["ctl"], self.addresses[name], SSH_PORT, timeout=1):
                if time.monotonic() > deadline:
                    raise FleetLabError(f"sshd in {name} did not accept connections; see {ssh}/../hosts/{name}/run")
                time.sleep(0.1)

    def _start_agents(self) -> None:
        """Harness agents on agent-a and agent-b, bootstrapped with the fleet licence, agent-a joined to agent-b."""
        licence = json.loads((self.dir / "license.json").read_text())
        for name in AGENTS:
            self.agents[name] = lab_agent(
                self.hosts[name], name, advertise=f"{self.addresses[name]}:{AGENT_PORT}",
                issuer_public_keys=[self.issuer.public_b64],
                extra_config={"sync_interval": 1.0, "lan_interface": LAN_INTERFACE[name]})
        ctl = self.hosts["ctl"]
        for name, agent in self.agents.items():
            agent.wait_ready(30)
            reply = http(ctl, "POST", f"{agent.url}/v1/bootstrap", json={"license": licence, "name": name})
            if reply.status_code != 201:
                raise FleetLabError(f"bootstrap of {name} answered {reply.status_code}: {reply.text}")
            creds = reply.json()
            self.credentials[name] = creds
            path = self._host_dir(name, "etc") / "credentials.json"
            path.write_text(json.dumps({k: creds[k] for k in ("peer_id", "client_id", "client_secret")}) + "\n")
            path.chmod(0o600)
        a = self.agents["agent-a"]
        token = self.token("agent-a")
        reply = http(ctl, "POST", f"{a.url}/v1/peers", json={"address": f"{self.addresses['agent-b']}:{AGENT_PORT}"},
                     headers={"Authorization": f"Bearer {token}"})
        if reply.status_code not in (200, 201):
            raise FleetLabError(f"agent-a could not join agent-b: {reply.status_code} {reply.text}")

    def token(self, name: str) -> str:
        """A bearer token of ``name``'s bootstrap credential (requested from inside ``ctl``)."""
        creds = self.credentials[name]
        reply = http(self.hosts["ctl"], "POST", f"{self.agents[name].url}/v1/oauth/token",
                     data={"grant_type": "client_credentials", "client_id": creds["client_id"],
                           "client_secret": creds["client_secret"]})
        reply.raise_for_status()
        return reply.json()["access_token"]

    def state(self, ready: bool) -> dict:
        assert self.lab is not None
        return {
            "ready": ready, "pid": os.getpid(), "tag": self.lab.tag, "dir": str(self.dir),
            "namespaces": {name: host.name for name, host in self.hosts.items()},
            "addresses": self.addresses, "agents": self.with_agents, "ssh": self.with_ssh,
            "python": sys.executable, "repo": str(REPO), "agent_venv": str(agent_venv()),
            "agent_urls": {name: agent.url for name, agent in self.agents.items()},
            "peer_ids": {name: c["peer_id"] for name, c in self.credentials.items()},
        }

    def _write_state(self, ready: bool) -> None:
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(self.state(ready), indent=2) + "\n")
        tmp.replace(self.dir / "lab.json")

    # --- teardown -------------------------------------------------------------------------------------------

    def _role_started_pids(self) -> list[int]:
        """Agents the Ansible role started in ``lab`` mode (pid files), still alive inside one of our namespaces."""
        if self.lab is None:
            return []
        inodes = set()
        for host in self.hosts.values():
            with contextlib.suppress(OSError):
                inodes.add(os.stat(f"/run/netns/{host.name}").st_ino)
        pids = []
        for pidfile in self.dir.glob(f"hosts/*/run/{ROLE_PIDFILE}"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                    pids.append(pid)
        return pids

    def close(self) -> None:
        """Stop role-started agents gracefully (SIGTERM, by pid, only if inside our namespaces), then the lab."""
        if self.lab is None:
            return
        pids = self._role_started_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if not is_dead(p)]
            time.sleep(0.1)
        lab, self.lab = self.lab, None
        try:
            lab.close()  # kills whatever is still inside, deletes exactly our namespaces
        finally:
            (self.dir / "lab.json").unlink(missing_ok=True)


# --- daemon mode: create/destroy from playbooks ------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    stop = threading.Event()
    fleet = FleetLab(Path(args.dir), agents=args.agents, ssh=args.ssh)
    fleet.start()
    for sig in (signal.SIGTERM, signal.SIGINT):  # replaces the harness's handler; we close explicitly below
        signal.signal(sig, lambda *_: stop.set())
    print(f"lab {fleet.state(True)['tag']} ready in {fleet.dir}", flush=True)
    if not stop.wait(args.max_age):
        print(f"lab reached --max-age {args.max_age:.0f}s; tearing down", flush=True)
    fleet.close()
    print("lab torn down", flush=True)
    return 0


def _read_state(lab_dir: Path) -> dict | None:
    try:
        return json.loads((lab_dir / "lab.json").read_text())
    except (OSError, ValueError):
        return None


def _is_our_daemon(pid: int, lab_dir: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and str(lab_dir).encode() in argv and any(a.endswith(b"fleetlab.py") for a in argv)


LAB_DIR_ENTRIES = {"lab.json", "lab.json.tmp", "daemon.log", "license.json", "issuer.pub", "bin", "hosts", "ssh",
                   "dist"}


def _fresh_lab_dir(lab_dir: Path) -> None:
    """Empty ``lab_dir`` of an earlier lab (data dirs, credentials), refusing a directory that is not a lab's."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    strangers = sorted(p.name for p in lab_dir.iterdir() if p.name not in LAB_DIR_ENTRIES)
    if strangers:
        raise FleetLabError(f"{lab_dir} holds files no lab made ({', '.join(strangers[:5])}); use an empty directory")
    for entry in lab_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _stage_wheel(dist: Path) -> Path:
    """The agent wheel in ``dist``: ``$ARCTIC_AGENT_WHEEL`` if set (the test session builds it once), else built."""
    given = os.environ.get("ARCTIC_AGENT_WHEEL")
    dist.mkdir(parents=True, exist_ok=True)
    if given:
        source = Path(given)
        if not source.is_file():
            raise FleetLabError(f"ARCTIC_AGENT_WHEEL={given} is not a file")
        shutil.copy2(source, dist / source.name)
        return dist / source.name
    return build_wheel(dist)


def agent_venv() -> Path:
    """The virtualenv the role installs lab agents into: ``$ARCTIC_LAB_VENV``, else one cached under ~/.cache."""
    given = os.environ.get("ARCTIC_LAB_VENV")
    return Path(given) if given else Path.home() / ".cache" / "arctic" / "fleetlab-venv"


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel (without extras-only ones): the agent's dependencies."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]


def seed_venv(venv: Path, wheel: Path) -> None:
    """Create ``venv`` and install the wheel's *dependencies* (not the agent) from the root namespace.

    Lab hosts have no way out (no DNS, no route), exactly like an air-gapped fleet, so pip inside a lab
    namespace cannot reach a package index. The registry is used from here instead; the role then installs
    the agent package itself with everything it needs already present. Quick when nothing changed.
    """
    if not (venv / "bin" / "python").exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *wheel_requirements(wheel)],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise FleetLabError(f"installing the agent's dependencies into {venv} failed:\n{proc.stderr[-2000:]}")


def up(args: argparse.Namespace) -> int:
    lab_dir = Path(args.dir).resolve()
    state = _read_state(lab_dir)
    if state and state.get("ready") and _is_our_daemon(state["pid"], lab_dir):
        print(json.dumps({"changed": False, "lab": state}))
        return 0
    _fresh_lab_dir(lab_dir)
    if args.wheel:
        seed_venv(agent_venv(), _stage_wheel(lab_dir / "dist"))
    argv = [sys.executable, str(Path(__file__).resolve()), "serve", "--dir", str(lab_dir),
            "--max-age", str(args.max_age)] + (["--agents"] if args.agents else []) + (["--ssh"] if args.ssh else [])
    with (lab_dir / "daemon.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        state = _read_state(lab_dir)
        if state and state.get("ready"):
            print(json.dumps({"changed": True, "lab": state}))
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)
    tail = (lab_dir / "daemon.log").read_text(errors="replace")[-3000:]
    print(f"the lab did not come up (exit {proc.returncode}); daemon.log:\n{tail}", file=sys.stderr)
    return 1


def down(args: argparse.Namespace) -> int:
    lab_dir = Path(args.dir).resolve()
    state = _read_state(lab_dir)
    if not state:
        print(json.dumps({"changed": False}))
        return 0
    pid = int(state["pid"])
    if not _is_our_daemon(pid, lab_dir):
        (lab_dir / "lab.json").unlink(missing_ok=True)  # its owner is gone; the harness cleans stale namespaces
        print(json.dumps({"changed": False, "stale": True}))
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and _is_our_daemon(pid, lab_dir):
        time.sleep(0.1)
    if _is_our_daemon(pid, lab_dir):
        print(f"lab daemon {pid} did not stop within {args.timeout:.0f}s; see {lab_dir}/daemon.log", file=sys.stderr)
        return 1
    left = [ns for ns in state["namespaces"].values() if Path(f"/run/netns/{ns}").exists()]
    if left:
        print(f"namespaces still present after teardown: {left}", file=sys.stderr)
        return 1
    print(json.dumps({"changed": True}))
    return 0


def relay(args: argparse.Namespace) -> int:
    """stdin/stdout <-> TCP ``host:port``: the SSH ProxyCommand, run inside ``ctl`` (lab addresses only)."""
    lab_address(args.host)
    sock = socket.create_connection((args.host, args.port), timeout=10)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(sys.stdin.buffer, selectors.EVENT_READ)
    out = sys.stdout.buffer
    while True:
        for key, _ in sel.select():
            if key.fileobj is sock:
                data = sock.recv(65536)
                if not data:
                    return 0
                out.write(data)
                out.flush()
            else:
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    sel.unregister(sys.stdin.buffer)
                    continue
                sock.sendall(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True)
        p.add_argument("--agents", action="store_true", help="start, bootstrap and join harness agents")
        p.add_argument("--ssh", action="store_true", help="run sshd in the agent namespaces")
        p.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE)
        p.add_argument("--timeout", type=float, default=90.0)
        p.add_argument("--wheel", action="store_true",
                       help="put the agent wheel in DIR/dist ($ARCTIC_AGENT_WHEEL, else built from this repository)")
    p = sub.add_parser("down")
    p.add_argument("--dir", required=True)
    p.add_argument("--timeout", type=float, default=40.0)
    p = sub.add_parser("relay")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p = sub.add_parser("wheel")
    p.add_argument("--dest", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "wheel":
            print(build_wheel(Path(args.dest)))
            return 0
        return {"up": up, "serve": serve, "down": down, "relay": relay}[args.command](args)
    except FleetLabError as err:
        print(f"fleetlab: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
