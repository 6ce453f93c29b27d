"""This peer's kernel: desired state -> text rendered from ``templates/`` -> applied (nft, pyroute2, tc), read back.

Every kernel section takes one path here: render, read the kernel, diff, apply only what differs (atomically where
the kernel allows), read back, and check that a second plan is empty. ``api/`` (dry runs) and ``daemon/`` (the
reconcile worker) call into this package; nothing here imports either.

* ``rendering``   - the store's view of this peer -> ``DesiredState``, shaping links, the data-plane config (pure);
* ``desired``     - the input: ``DesiredState`` / ``ServiceSpec`` / ``RouteSpec`` (pure dataclasses) + ``validate``;
* ``constants``   - table, chain, fwmark/mask, routing table, rule priority, interface naming;
* ``ruleset``     - routes in precedence order -> ``table inet arctic`` (runs of one shape become set lookups);
* ``nft``         - the ``nft`` command: one atomic transaction, list, check;
* ``policy``      - ``ip rule fwmark`` + ``local 0/0 dev lo`` routes (pyroute2);
* ``sysctl``      - ip_forward / rp_filter, applied and recorded so they can be put back;
* ``interfaces``  - per-service MACVLAN on the target peer (parent choice, static address or DHCP);
* ``dhcp``, ``dhcp_client`` - one supervised pyroute2 DHCP client per DHCP-addressed service interface;
* ``netplan``     - persistent YAML for the service interfaces;
* ``ports``       - ``KernelApplier``: the typed ports (nft, policy, interfaces, sysctls, dhcp) the reconciler uses;
* ``applier``     - ``LinuxKernel``: those ports on this host (caller's network namespace);
* ``offline``     - ``EmptyKernel`` / ``offline_reconciler``: the same ports on a kernel with nothing in it (dry runs
  of agents with ``apply_kernel: false``);
* ``reconciler``  - ``Reconciler``: plan (dry run + diff), apply (only what differs, drift repair, self-check),
  teardown;
* ``qos``, ``qos_model``, ``qos_render``, ``qos_kernel`` - shaping, the same way: render (``templates/tc``), read
  the classes back (``QosManager.installed_text``), apply only what differs;
* ``preview``     - ``Preview`` / ``preview`` / ``compare``: every section rendered and diffed, never applied;
* ``textdiff``    - ``unified``: the one diff format of every section;
* ``errors``      - what can go wrong, each error saying whether it is ``temporary`` (retry) or not.
"""

from .desired import DesiredState, RouteSpec, ServiceSpec
from .errors import DesiredStateError, InterfaceError, NetconfError, NftError, PolicyRoutingError
from .interfaces import InterfaceStatus

__all__ = [
    "DesiredState", "DesiredStateError", "InterfaceError", "InterfaceStatus", "NetconfError", "NftError",
    "PolicyRoutingError", "RouteSpec", "ServiceSpec",
]
