# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""Capability attributes (check mode, diff, idempotency) and the action group, worded once.

Modules extend ``arctic.fleet.attributes`` and set only ``support``/``details`` themselves, so the
wording cannot drift; every module in ``meta/runtime.yml`` group ``fleet`` extends
``arctic.fleet.attributes.action_group`` (a unit test checks the two lists agree).
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the cluster.
  diff_mode:
    description: Returns details on what has changed (or would change in check mode) when in diff mode.
  idempotent:
    description:
      - When run twice in a row with the same arguments, the second run reports no change.
"""

    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/arctic.fleet.fleet) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - arctic.fleet.fleet
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: This module only reads and behaves the same in check mode.
  diff_mode:
    support: N/A
    details: This module never changes anything.
  idempotent:
    support: full
"""
