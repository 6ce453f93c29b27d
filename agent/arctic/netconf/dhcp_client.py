"""DHCPv4 client for one service interface: ``python -m arctic.netconf.dhcp_client IFNAME``.

No DHCP client binary is installed on the target hosts we test on (no dhclient, udhcpc or dhcpcd), and pyroute2
(already a dependency) ships a complete asynchronous client; this wrapper only chooses its hooks:

* the leased address is added with the lease's lifetime (a *dynamic* address, like dhclient/networkd do), so
  it disappears by itself if this process dies, and the agent can tell DHCP addresses from static ones;
* NO default-route hook: a service interface must never take over the host's default route;
* SIGTERM releases the lease and removes the address before exiting.

The working directory (chosen by ``DhcpSupervisor``) holds the lease file, so a restart asks for the same lease.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from pyroute2.dhcp.cli import run_client
from pyroute2.dhcp.client import ClientConfig
from pyroute2.dhcp.hooks import Trigger, hook, remove_ip
from pyroute2.dhcp.leases import JSONFileLease, Lease, MissingOptionError
from pyroute2.iproute.linux import AsyncIPRoute

LOG = logging.getLogger("arctic.netconf.dhcp_client")


@hook(Trigger.BOUND, Trigger.RENEWED, Trigger.REBOUND)
async def configure_ip_with_lifetime(lease: Lease) -> None:
    """Add (or refresh) the leased address with the lease time as its valid and preferred lifetime."""
    try:
        lifetime = int(lease.lease_time)
    except MissingOptionError:
        lifetime = -1
    extra = {} if lifetime < 0 else {"valid_lft": lifetime, "preferred_lft": lifetime}
    try:
        broadcast = lease.broadcast_address
    except MissingOptionError:
        broadcast = None
    LOG.info("lease %s/%s on %s for %ss", lease.ip, lease.prefixlen, lease.interface, lifetime)
    async with AsyncIPRoute() as ipr:
        index = await ipr.link_lookup(ifname=lease.interface)
        await ipr.addr("replace", index=index, address=lease.ip, prefixlen=lease.prefixlen,
                       broadcast=broadcast, **extra)


async def _main(ifname: str) -> None:
    cfg = ClientConfig(interface=ifname, lease_type=JSONFileLease, hooks=(configure_ip_with_lifetime, remove_ip),
                       release=True, handle_signals=True, write_pidfile=False, vendor_id="arctic")
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_client(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("interface")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_main(args.interface))


if __name__ == "__main__":
    main()
