# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""Fixtures: a fake agent behind ``fetch_url`` and a way to run a module's ``main()`` as Ansible would."""

from __future__ import annotations

import json

import pytest
from ansible_collections.arctic.fleet.plugins.module_utils import arctic_api
from ansible_collections.arctic.fleet.tests.unit.plugins.compat import patch_module_args
from ansible_collections.arctic.fleet.tests.unit.plugins.fake_agent import AGENT_URL, FakeAgent


@pytest.fixture
def agent(monkeypatch):
    """A fresh in-memory agent that every ``fetch_url`` of the collection talks to."""
    fake = FakeAgent()
    monkeypatch.setattr(arctic_api, "fetch_url", fake.fetch_url)
    for name in ("ARCTIC_AGENT_URL", "ARCTIC_AGENT_TOKEN", "ARCTIC_CLIENT_ID", "ARCTIC_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return fake


@pytest.fixture
def run_module(capsys):
    """Run ``module.main()`` with ``args`` and return its JSON result (``failed`` set on fail_json).

    ``check_mode``/``diff`` set the same internal flags ``ansible-playbook --check --diff`` sets.
    """

    def run(module, args: dict, check_mode: bool = False, diff: bool = True) -> dict:
        full = {"agent_url": AGENT_URL, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
        full.update(args)
        with patch_module_args(full), pytest.raises(SystemExit):
            module.main()
        return json.loads(capsys.readouterr().out)

    return run
