"""Run ``arctic-agent`` inside a lab host, and talk HTTP to it from inside the lab.

The root namespace never sends to a lab address: readiness polls and ``http()`` run through ``host.call``,
i.e. from a thread that has joined the host's namespace.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml

from .lab import Host
from .safety import LabSafetyError, lab_address


def agent_binary() -> str:
    """``$ARCTIC_AGENT_BIN``, else the ``arctic-agent`` beside this Python (the project venv), else on PATH."""
    if os.environ.get("ARCTIC_AGENT_BIN"):
        return os.environ["ARCTIC_AGENT_BIN"]
    beside = Path(sys.executable).parent / "arctic-agent"
    return str(beside) if beside.exists() else (shutil.which("arctic-agent") or "arctic-agent")


def _request(method: str, url: str, **kwargs: Any) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False  # no proxies from the environment: the request must stay in the lab
        kwargs.setdefault("timeout", 10)
        return session.request(method, url, **kwargs)


def http(host: Host, method: str, url: str, **kwargs: Any) -> requests.Response:
    """``requests.request(method, url, **kwargs)`` made from inside ``host``'s namespace."""
    target = urlsplit(url).hostname or ""
    try:
        is_loopback = target == "localhost" or ipaddress.ip_address(target).is_loopback
    except ValueError:
        raise LabSafetyError(f"{url!r}: use an IP address of the lab (or loopback), not {target!r}") from None
    if not is_loopback:
        lab_address(target)
    # requests' own timeout (10 s unless given) bounds the call, so the worker never blocks indefinitely.
    return host.call(functools.partial(_request, method, url, **kwargs), timeout=None)


class AgentFailed(RuntimeError):
    """The agent process exited or never became ready; the message carries the tail of its log."""


class AgentProcess:
    """One agent in one lab host: config and data under the lab's run dir, output in ``agent.log``."""

    def __init__(self, host: Host, name: str, config: dict, command: Sequence[str] | None = None) -> None:
        self.host, self.name = host, name
        self.dir = host.lab.run_dir / name
        self.config_path = self.dir / "agent.yaml"
        self.log_path = self.dir / "agent.log"
        self.recovery_token_path = Path(config["recovery_token_file"])
        self.url = f"http://{config['advertise_address']}"
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = command or [agent_binary(), "run", "--config", "{config}"]
        self.argv = [str(a).replace("{config}", str(self.config_path)) for a in argv]
        self.proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"AgentProcess({self.name!r} on {self.host.role}, {self.url})"

    def start(self) -> AgentProcess:
        if self.running:
            raise RuntimeError(f"{self} is already running")
        with self.log_path.open("ab") as log:
            self.proc = self.host.popen(*self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=self.dir)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> AgentProcess:
        """Poll ``GET /livez`` from inside the host until it answers 200; fail early if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                code = None if self.proc is None else self.proc.returncode
                raise AgentFailed(f"{self} is not running (exit code {code}); log tail:\n{self.log_tail()}")
            try:
                if http(self.host, "GET", f"{self.url}/livez", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AgentFailed(f"{self} not ready after {timeout:.0f}s; log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it takes longer than ``timeout``); returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        return self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: int, timeout: float) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # popen starts a new session, so the group is exactly the agent's
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def restart(self, timeout: float = 30.0) -> AgentProcess:
        self.stop()
        return self.start().wait_ready(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def recovery_token(self) -> str:
        return self.recovery_token_path.read_text().strip()


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def lab_agent(host: Host, name: str, *, advertise: str, issuer_public_keys: Sequence[str],
              extra_config: dict | None = None, port: int = 8080, command: Sequence[str] | None = None,
              start: bool = True) -> AgentProcess:
    """Write an agent config for ``host`` and (by default) start the agent there.

    ``advertise`` is ``"198.18.0.1"`` or ``"198.18.0.1:8080"`` and must be a lab address. ``command`` replaces
    the real ``arctic-agent run --config {config}`` (``{config}`` is substituted) — for stand-ins in tests.
    """
    parsed = urlsplit(f"//{advertise}")
    if not parsed.hostname:
        raise ValueError(f"advertise {advertise!r} must look like 198.18.0.1 or 198.18.0.1:8080")
    port = parsed.port or port
    lab_address(parsed.hostname)
    advertise_address = f"[{parsed.hostname}]:{port}" if ":" in parsed.hostname else f"{parsed.hostname}:{port}"
    workdir = host.lab.run_dir / name
    workdir.mkdir(parents=True, exist_ok=False)
    config = {
        "data_dir": str(workdir / "data"),
        "listen": f"0.0.0.0:{port}",
        "advertise_address": advertise_address,
        "recovery_token_file": str(workdir / "recovery.token"),
        "log_format": "json",
        "log_level": "info",
        "license": {"issuer_public_keys": list(issuer_public_keys)},
    }
    agent = AgentProcess(host, name, _merge(config, extra_config or {}), command)
    return agent.start() if start else agent
