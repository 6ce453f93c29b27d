"""The reconcile worker: makes this peer's kernel and data plane match the store, level-triggered.

When it runs
    After every store commit that touched services, routes, peers or metadata (local API writes and replicated
    changes alike; debounced so a burst of commits is one run), on ``cluster sync`` (``arctic.api.cluster_sync``
    calls ``run_once`` itself and waits for its report, undebounced), at start-up and every ``reconcile_interval``
    seconds (drift repair). Every run recomputes everything from the store: there is no event to miss, only a
    state to reach.

What a run does, in order
    1. ``DesiredState`` for THIS peer (``netconf.rendering.load_view``) -> ``netconf.Reconciler.apply``: nft table,
       policy routing, service interfaces, sysctls (only what differs; drift is repaired; a second plan must then
       be empty, else the section is logged and named in the report's ``unconverged``);
    2. shaping with ``QosManager`` for every service of this peer, towards its other peer (both directions hold
       the limit because each peer shapes what it sends), then read back from the kernel (the same self-check);
       the slot priorities go into the data-plane config;
    3. the observed service interfaces (name, MAC, addresses) are written back into the ``interface_*`` columns
       (local observations: written without marking the record changed, so they are never replicated);
    4. the data-plane JSON config is rendered and, when it changed, written atomically and the data plane told
       to reload (SIGHUP; its established connections are untouched).
    A failure in one step is logged and reported (``GET /v1/plan``, readiness) and the other steps still run.

Failures
    A refused desired state (``DesiredStateError``) is permanent: reported, and not tried again until something
    changes (or the periodic run). A failed ``nft``/``tc``/netlink call is temporary (``NetconfError.temporary``,
    ``QosError.temporary``), and so is a run that raised: the loop runs again after 0.5, 1, 2, 4, 8 s (capped,
    reset by a run without one) instead of waiting for the next poke or the periodic run.

Everything kernel-shaped lives in ``arctic.netconf``: rendering (``netconf.rendering``), the reconciler and its
ports, shaping, and the dry run (``netconf.preview``), which ``preview`` here feeds with what this worker applied.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from arctic.config import AgentConfig
from arctic.daemon.dataplane_supervisor import DataplaneSupervisor
from arctic.fileutil import replace_private_file
from arctic.logs import get_logger
from arctic.netconf import rendering
from arctic.netconf.applier import LinuxKernel
from arctic.netconf.errors import DesiredStateError, NetconfError
from arctic.netconf.interfaces import InterfaceStatus
from arctic.netconf.preview import Preview, dataplane_text, preview
from arctic.netconf.qos import QosError, QosManager, ServiceLink, group_by_interface, qos_text
from arctic.netconf.qos_kernel import TcKernel
from arctic.netconf.reconciler import Reconciler
from arctic.netconf.textdiff import unified
from arctic.store.database import Database

log = get_logger("netmgr")  # the reconcile runs: network configuration as a whole
qlog = get_logger("qosmgr")
tlog = get_logger("tproxymgr")  # per service, what the data plane (the seed's "TProxy service") is told

WATCHED_KINDS = frozenset({"services", "routes", "peers", "meta"})
DEBOUNCE_SECONDS = 0.15
LIVE_RECHECK_SECONDS = 2.0  # while the nft table stays only for live connections: how often to look again
LEASE_RECHECK_SECONDS = 1.0  # first re-check while a DHCP lease is awaited; doubles up to reconcile_interval
RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)  # after a temporary failure: the next runs' delays (the last repeats)


@dataclass
class RunReport:
    """What one reconcile run did; the last one is shown by ``GET /v1/plan`` and readiness."""

    reason: str
    started_at: float
    seconds: float = 0.0
    services: int = 0
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dataplane_config_changed: bool = False
    temporary: bool = False  # an error may pass by itself (a failed nft/tc/netlink call): the worker retries soon
    unconverged: list[str] = field(default_factory=list)  # sections a second plan right after applying still changes

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "at": round(self.started_at, 3), "seconds": round(self.seconds, 3),
                "services": self.services, "actions": self.actions, "errors": self.errors,
                "dataplane_config_changed": self.dataplane_config_changed, "retrying": self.temporary,
                "unconverged": self.unconverged}


class ReconcileMetrics:
    """Runs, failures and durations per section (kernel, shaping, dataplane), for ``/metrics``.

    The metrics are not registered anywhere: the agent's collector (``arctic.api.metrics``) yields them with the
    rest, from the one registry of that agent (tests run many agents in one process; a global registry would mix
    them).
    """

    SECTIONS = ("kernel", "shaping", "dataplane")

    def __init__(self) -> None:
        self.runs = Counter("arctic_reconcile_runs", "Reconcile runs, per section", ["section"], registry=None)
        self.failures = Counter("arctic_reconcile_failures", "Reconcile runs of a section that reported an error",
                                ["section"], registry=None)
        self.duration = Histogram("arctic_reconcile_duration_seconds", "How long a section of a reconcile run took",
                                  ["section"], registry=None,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.last_success = Gauge("arctic_reconcile_last_success_timestamp_seconds",
                                  "When the last reconcile run without any error ended", registry=None)
        for name in self.SECTIONS:  # every series exists from the start (rate() needs the zero)
            self.runs.labels(name)
            self.failures.labels(name)
            self.duration.labels(name)

    @contextlib.contextmanager
    def section(self, name: str, report: RunReport) -> Iterator[None]:
        errors_before, started = len(report.errors), time.monotonic()
        failed = True
        try:
            yield
            failed = len(report.errors) > errors_before
        finally:
            self.runs.labels(name).inc()
            self.duration.labels(name).observe(time.monotonic() - started)
            if failed:
                self.failures.labels(name).inc()

    def succeeded(self, at: float) -> None:
        self.last_success.set(at)

    def collect(self) -> Iterator[Metric]:
        for metric in (self.runs, self.failures, self.duration, self.last_success):
            yield from metric.collect()


# --- the worker ------------------------------------------------------------------------------------------------------

class ReconcileWorker:
    def __init__(self, runtime, supervisor: DataplaneSupervisor | None = None, *,
                 reconciler: Reconciler | None = None, qos: QosManager | None = None,
                 tc: TcKernel | None = None) -> None:
        self.runtime = runtime
        self.config: AgentConfig = runtime.config
        self.supervisor = supervisor
        state_dir = Path(self.config.data_dir) / "netconf"
        self.reconciler = reconciler or Reconciler(LinuxKernel(dhcp_dir=state_dir / "dhcp"), state_dir=state_dir)
        self.qos = qos or QosManager()
        self.tc = tc or TcKernel()
        self.dataplane_path = Path(self.config.data_dir) / rendering.DATAPLANE_CONFIG
        self.last: RunReport | None = None
        self.metrics = ReconcileMetrics()
        self._qos_links: list[ServiceLink] = []  # what the last run shaped (names the class blocks a preview reads)
        self._qos_readback: str | None = None  # the shaping read from the kernel right after the last apply
        self._shaped: dict[str, int] | None = None  # service -> Mbit/s the kernel shapes it at (logged on change)
        self._dataplane_services: dict[str, dict] = self._written_services()
        self._bind_addresses: dict[str, str | None] = {}
        self.interface_status: dict[str, InterfaceStatus] = {}  # as the last run observed them (API: observations)
        self._lease_recheck = LEASE_RECHECK_SECONDS
        self._interval = max(1.0, float(self.config.reconcile_interval))
        self._kept_for_live = False  # the last run kept the nft table only for live connections (see _loop)
        self._diverting = False  # the last run's kernel state diverts traffic (see _proxied_connections)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reasons: list[str] = []
        self._retries = 0  # temporary failures in a row (index into RETRY_SECONDS)
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Set when the first run of the loop has ended, whatever its outcome (nothing to do before bootstrap, or
        # raised): the daemon tells systemd it is ready only after that (arctic.daemon.main).
        self.first_run_done = threading.Event()
        self.failure: str | None = None  # why the last run raised; None when it did not
        runtime.db.on_commit(self._on_commit)

    def _written_services(self) -> dict[str, dict]:
        """The services of the data-plane config already on disk (an agent restart is no change to log)."""
        try:
            return {svc["id"]: svc for svc in json.loads(self.dataplane_path.read_text()).get("services", [])}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.poke("start-up")
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reconciling; kernel state and the data plane stay as they are (live connections keep flowing)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poke(self, reason: str) -> None:
        self._reasons.append(reason)
        self._wake.set()

    def _on_commit(self, kinds: set[str]) -> None:
        if kinds & WATCHED_KINDS:
            self.poke("store changed: " + ",".join(sorted(kinds & WATCHED_KINDS)))

    def _loop(self) -> None:
        next_periodic = time.monotonic() + self._interval
        retry_at: float | None = None  # set after a temporary failure: run again then, poked or not
        while not self._stop.is_set():
            due = next_periodic if retry_at is None else min(retry_at, next_periodic)
            self._wake.wait(timeout=max(0.05, due - time.monotonic()))
            if self._stop.is_set():
                return
            if self._wake.is_set():
                time.sleep(DEBOUNCE_SECONDS)  # let a burst of commits land: one run covers them all
                self._wake.clear()
                reasons, self._reasons = self._reasons, []
                reason = "; ".join(dict.fromkeys(reasons)) or "poked"
            elif retry_at is not None and time.monotonic() >= retry_at:
                reason = f"retry after a temporary failure ({self._retries} in a row)"
            elif time.monotonic() >= next_periodic:
                reason = "periodic drift check"
            else:
                continue
            try:
                report = self.run_once(reason)
                self.failure = None
                temporary = report is not None and report.temporary
            except Exception as err:  # the worker must survive anything one run throws
                self.failure = f"{type(err).__name__}: {err}"
                log.exception("reconcile run failed", reason=reason)
                temporary = True  # a netlink or subprocess call that raised: as likely to pass as a refused one
            finally:
                self.first_run_done.set()
            delay = self._after_run(temporary)
            retry_at = None if delay is None else time.monotonic() + delay
            # a table kept only for live connections goes once they have ended: look again soon, not in 30 s
            next_periodic = time.monotonic() + (min(self._interval, LIVE_RECHECK_SECONDS) if self._kept_for_live
                                                else self._interval)

    def _after_run(self, temporary: bool) -> float | None:
        """The back-off after a run: seconds until the retry of a temporary failure, None when there is none."""
        if not temporary:
            self._retries = 0
            return None
        delay = min(RETRY_SECONDS[min(self._retries, len(RETRY_SECONDS) - 1)], self._interval)
        self._retries += 1
        log.warning("temporary failure; reconciling again soon", retry_in_seconds=delay,
                    failures_in_a_row=self._retries)
        return delay

    # --- one run -------------------------------------------------------------------------------------------------

    def view(self) -> rendering.LocalView | None:
        """This peer's view of the store, or None before bootstrap."""
        runtime = self.runtime
        local = runtime.local_peer_id
        if local is None or runtime.identity is None:
            return None
        try:
            enabled = runtime.licence_state().data_plane_enabled
        except Exception as err:  # noqa: BLE001 - no usable licence: carry nothing, say why
            log.warning("licence unusable; no services are carried", error=str(err))
            enabled = False
        return rendering.load_view(runtime.db.read(), local, enabled=enabled)

    def run_once(self, reason: str) -> RunReport | None:
        with self._run_lock:
            view = self.view()
            if view is None:
                return None
            report = RunReport(reason=reason, started_at=time.time(), services=len(view.services))
            started = time.monotonic()
            with self.metrics.section("kernel", report):
                statuses = self._apply_netconf(view, report)
            with self.metrics.section("shaping", report):
                priorities = self._apply_qos(view, report)
            if statuses is not None:  # else the interfaces are as they were: keep their facts and bind addresses
                self._record_interfaces(view, statuses, report)
            with self.metrics.section("dataplane", report):
                self._write_dataplane_config(view, priorities, report)
            report.seconds = time.monotonic() - started
            if not report.errors:
                self.metrics.succeeded(report.started_at + report.seconds)
            self.last = report
            if report.actions or report.errors:
                log.info("reconciled", reason=reason, services=report.services, actions=report.actions,
                         errors=report.errors, seconds=round(report.seconds, 3))
            return report

    def _apply_netconf(self, view: rendering.LocalView, report: RunReport) -> list[InterfaceStatus] | None:
        """The interfaces as observed after applying; None when nothing was applied (nothing new was observed)."""
        live = self._proxied_connections()
        desired = rendering.desired_state(view, self.config, proxied_connections=live)
        diverts = bool(desired.intercepted_routes() or desired.transparent_inbound())
        self._diverting, self._kept_for_live = diverts, live and not diverts
        try:
            plan = self.reconciler.apply(desired)
        except DesiredStateError as err:
            report.errors.append(f"desired state refused, kernel left as it was: {err}")
            log.error("desired state cannot be rendered; kernel left as it was", error=str(err))
            return None
        except NetconfError as err:  # nft refused: everything else converged, the previous table stays
            report.errors.append(str(err))
            report.temporary |= err.temporary
            last = self.reconciler.last_plan
            if last is None:
                return None
            plan = last
        report.actions += plan.actions
        report.errors += [f"interface of {sid}: {msg}" for sid, msg in sorted(plan.errors.items())]
        report.unconverged += plan.unconverged
        report.temporary |= plan.temporary
        return plan.interface_status

    def _proxied_connections(self) -> bool:
        """The data plane may carry connections now (their packets need the nft socket rule and policy routing):
        the kernel diverted until this run (the data plane's counters, rewritten every second, may not show a
        connection accepted a moment ago), or its counters show open connections."""
        if self.supervisor is None:
            return False
        return self._diverting or self.runtime.fresh_dataplane_stats().get("active_connections", 0) > 0

    def _apply_qos(self, view: rendering.LocalView, report: RunReport) -> dict[str, list[int]]:
        links = rendering.qos_links(view)
        unrouted: dict[str, QosError] = {}
        try:
            by_dev = group_by_interface(links, self.tc, unrouted=unrouted)
        except QosError as err:  # not a route lookup (those land in ``unrouted``): ip itself failed
            report.errors.append(f"shaping: {err}")
            report.temporary |= err.temporary
            return self.qos.priorities()
        for sid, why in sorted(unrouted.items()):
            report.errors.append(f"shaping of {sid}: {why}")
            report.temporary |= why.temporary
            qlog.error("cannot shape service: no route to its other peer", service_id=sid, error=str(why))
        shaped = [link for link in links if link.service_id not in unrouted]
        self._qos_links = shaped
        try:
            summary = self.qos.apply(by_dev)
            report.actions += [f"tc {dev}: {json.dumps(changes, sort_keys=True)}" for dev, changes in summary.items()]
        except QosError as err:
            report.errors.append(f"shaping: {err}")
            report.temporary |= err.temporary
        else:
            self._log_shaping({sid: rate for rates in by_dev.values() for sid, rate in rates.items()})
            self._check_shaping(shaped, report)
        return self.qos.priorities()

    def _check_shaping(self, shaped: list[ServiceLink], report: RunReport) -> None:
        """Read the shaping back right after applying it: it must be what was rendered (the convergence self-check
        of the tc section); what was read is what a later preview compares with to name drift."""
        try:
            readback = self.qos.installed_text(shaped)
        except QosError as err:
            self._qos_readback = None
            log.warning("shaping could not be read back after applying it", error=str(err))
            return
        self._qos_readback = readback
        if readback != qos_text(shaped):
            report.unconverged.append("qos")
            log.warning("not converged: a second plan right after applying still changes a section", section="qos",
                        diff=unified("qos", readback, qos_text(shaped))[:2000])

    def _record_interfaces(self, view: rendering.LocalView, statuses: list[InterfaceStatus],
                           report: RunReport) -> None:
        """Write observed interface facts into this peer's copy of its target services (never replicated)."""
        observed = {s.service_id: s for s in statuses}
        self.interface_status = observed
        self._recheck_while_leases_pend(observed)
        self._bind_addresses = {sid: rendering.bind_address(s.ipv4_cidr, s.ipv6_cidr) for sid, s in observed.items()}
        db: Database = self.runtime.db
        conn = db.read()
        rows = conn.execute("SELECT id, interface_name, interface_mac, interface_ipv4_cidr, interface_ipv6_cidr"
                            " FROM services WHERE target_peer_id = ?", (view.local_peer_id,)).fetchall()
        updates = []
        for row in rows:
            status = observed.get(row["id"])
            wanted = (None, None, None, None) if status is None or status.state in ("missing", "error") else \
                (status.name, status.mac, status.ipv4_cidr, status.ipv6_cidr)
            if tuple(row)[1:] != wanted:
                updates.append((*wanted, row["id"]))
        if not updates:
            return
        # No tx.touch(): these columns are local observations; touching would re-sign and replicate the record.
        with db.write() as tx:
            for values in updates:
                tx.execute("UPDATE services SET interface_name = ?, interface_mac = ?, interface_ipv4_cidr = ?,"
                           " interface_ipv6_cidr = ? WHERE id = ?", values)
        report.actions.append(f"recorded interface observations of {len(updates)} service(s)")

    def _recheck_while_leases_pend(self, observed: dict[str, InterfaceStatus]) -> None:
        """A DHCP lease lands between runs and only the next run records it (and binds the data plane to it): while
        one is awaited, run again after 1 s, 2 s, 4 s ... up to ``reconcile_interval``, so the leased address shows
        within seconds (``arctic services create`` waits for it) and a LAN without a DHCP server costs few runs."""
        if not any(s.dhcp and s.state == "up" and not s.ipv4_cidr for s in observed.values()):
            self._lease_recheck = LEASE_RECHECK_SECONDS
            return
        if self._lease_recheck < self._interval:
            timer = threading.Timer(self._lease_recheck, self.poke, args=("DHCP lease awaited",))
            timer.daemon = True
            timer.start()
        self._lease_recheck = min(self._lease_recheck * 2, self._interval)

    def _write_dataplane_config(self, view: rendering.LocalView, priorities: dict[str, list[int]],
                                report: RunReport) -> None:
        doc = rendering.dataplane_config(view, self.config, priorities=priorities,
                                         bind_addresses=self._bind_addresses)
        changed = replace_private_file(self.dataplane_path, dataplane_text(doc))
        if changed:
            report.actions.append(f"data-plane config written ({len(doc['services'])} services)")
            report.dataplane_config_changed = True
            self._log_dataplane_services({svc["id"]: svc for svc in doc["services"]})
        if self.supervisor is not None and self.config.dataplane.enabled:
            self.supervisor.config_written(changed)

    # --- per-service logs under tproxymgr (where the seed sends operators: journalctl -u arctic | grep tproxymgr) ---

    def _log_shaping(self, rates: dict[str, int]) -> None:
        """One line per service whose limit the kernel now enforces differently (0 = unlimited); after a start,
        one line per limited service, so the log always says what is enforced."""
        before, self._shaped = self._shaped, rates
        if before is None:
            for sid, rate in sorted(rates.items()):
                if rate:
                    tlog.info("service shaped", service_id=sid, bandwidth_limit_mbps=rate)
            return
        for sid in sorted(before.keys() | rates.keys()):
            if before.get(sid, 0) != rates.get(sid, 0):
                tlog.info("service shaping changed", service_id=sid, bandwidth_limit_mbps=rates.get(sid, 0),
                          previous_mbps=before.get(sid, 0))

    def _log_dataplane_services(self, services: dict[str, dict]) -> None:
        """One line per service the data plane starts, stops or carries differently with the new config."""
        before, self._dataplane_services = self._dataplane_services, services
        for sid in sorted(before.keys() | services.keys()):
            change = ("added" if sid not in before else "removed" if sid not in services
                      else "updated" if before[sid] != services[sid] else None)
            if change:
                svc = services.get(sid) or before[sid]
                tlog.info("data-plane config updated", service_id=sid, change=change,
                          routes=len(svc.get("routes", [])) if change != "removed" else 0)

    # --- what /v1/plan and readiness read -------------------------------------------------------------------------

    def preview(self, view: rendering.LocalView) -> Preview:
        """``view`` rendered and diffed against this peer as it is now: the kernel (tc read back too) and the
        data-plane config on disk."""
        priorities = self.qos.priorities()
        try:
            before = json.loads(self.dataplane_path.read_text())
        except (OSError, ValueError):
            before = None
        links = rendering.qos_links(view)
        named = {link.service_id for link in links}
        qos_drift: list[str] = []
        try:  # the services of the view, and those shaped last (a service the view drops still has its classes)
            qos_before = self.qos.installed_text(links + [x for x in self._qos_links if x.service_id not in named])
        except QosError as err:
            qos_before = ""
            qos_drift.append(f"qos: shaping could not be read from the kernel: {err}")
        else:
            if self._qos_readback is not None and qos_before != self._qos_readback:
                qos_drift.append("qos: tc classes were changed outside Arctic")
        return preview(self.reconciler, view, self.config, priorities=priorities,
                       bind_addresses=dict(self._bind_addresses), qos_before=qos_before, qos_drift=qos_drift,
                       dataplane_before=before, proxied_connections=self._proxied_connections())

    def readiness(self) -> dict[str, str]:
        last, failure = self.last, self.failure
        if failure is not None:
            return {"reconcile": f"error: the last run failed: {failure}"[:300]}
        if last is None:
            return {"reconcile": "waiting for the first run"}
        if last.errors:
            return {"reconcile": f"error: {'; '.join(last.errors)[:300]}"}
        return {"reconcile": "ok"}
