# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""``patch_module_args`` from ansible-core >= 2.19, with a stand-in for the older cores we support."""

from __future__ import annotations

__all__ = ["patch_module_args"]

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # pragma: no cover - ansible-core < 2.19
    import contextlib
    import json
    from unittest import mock

    from ansible.module_utils import basic

    @contextlib.contextmanager
    def patch_module_args(args=None):
        """Expose ``args`` to AnsibleModule instances created within this context."""
        data = json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()
        with mock.patch.object(basic, "_ANSIBLE_ARGS", data):
            yield
