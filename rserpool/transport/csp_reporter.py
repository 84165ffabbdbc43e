"""
Component Status Protocol reports over UDP (L{rserpool.wire.csp}): a
registrar (C{twistd enrp --csp HOST:PORT}), a pool element (C{rserpool pe
--csp}) and a pool user (C{rserpool terminal --csp}) tell RSPLIB's
C{cspmonitor} how they are, every report interval, and say goodbye (a
final report) when they stop.

The reports for a registrar, a PE and a pool user are built by
L{registrar_report}, L{pool_element_report} and L{pool_user_report}, as
RSPLIB's own components fill them (status texts included, so a mixed
deployment reads alike).
"""
import ipaddress
import socket

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rserpool.codes import ASAP_PPID, ENRP_PPID
from rserpool.wire.csp import (
    GROUP_POOL_ELEMENT,
    GROUP_POOL_USER,
    GROUP_REGISTRAR,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    Association,
    StatusReport,
    component_id,
    encode_report,
)

__all__ = ["CSPReporter", "parse_csp_address", "DEFAULT_CSP_PORT", "DEFAULT_CSP_INTERVAL",
           "registrar_report", "pool_element_report", "pool_user_report"]

#: cspmonitor's port.
DEFAULT_CSP_PORT = 2960
#: Seconds between reports: RSPLIB's registrar default (-cspinterval=250).
DEFAULT_CSP_INTERVAL = 0.25


def parse_csp_address(text):
    """
    C{HOST}, C{HOST:PORT}, C{[V6]:PORT} or C{V6} as C{(host, port)}; the
    port is 2960 unless given.

    @raise ValueError: one line naming the problem.
    """
    text = str(text).strip()
    if not text:
        raise ValueError("--csp takes HOST[:PORT], e.g. 127.0.0.1:2960")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        number = int(port) if port else DEFAULT_CSP_PORT
    except ValueError:
        raise ValueError("--csp: bad port %r in %r" % (port, text)) from None
    if not 0 < number < 65536 or not host:
        raise ValueError("--csp: bad address %r (HOST[:PORT])" % (text,))
    return host, number


class _Sender(DatagramProtocol):
    noisy = False


def _location(addresses):
    # RSPLIB's: the host name, then its addresses.
    name = socket.gethostname()
    return "%s: %s" % (name, ", ".join(addresses)) if addresses else name


class CSPReporter:
    """
    Sends a component's reports to a monitor every C{interval} seconds.
    """

    log = Logger()

    def __init__(self, reactor, address, identifier, report, interval=DEFAULT_CSP_INTERVAL):
        """
        @param reactor: the reactor (UDP and the clock).
        @param address: the monitor, C{(host, port)}.
        @param identifier: a callable returning this component's id
            (L{component_id}; a PE's may change).
        @param report: a callable returning C{(status, location, workload,
            associations)}.
        @param interval: seconds between reports.
        """
        self.reactor = reactor
        self.address = address
        self.identifier = identifier
        self.report = report
        self.interval = interval
        self.sent = 0
        self._started = None
        self._port = None
        self._loop = None
        self._target = None

    def start(self):
        """
        Resolve the monitor's address, then report every interval.

        @return: a L{Deferred} that fires once the first report is sent.
        """
        self._started = self.reactor.seconds()
        host, port = self.address
        try:
            ipaddress.ip_address(host)
            d = defer.succeed(host)
        except ValueError:
            d = self.reactor.resolve(host)

        def resolved(ip):
            self._target = (ip, port)
            interface = "::" if ":" in ip else ""
            self._port = self.reactor.listenUDP(0, _Sender(), interface=interface)
            self._loop = LoopingCall(self.send)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True)

        def failed(f):
            self.log.warn("cannot report status to {host}:{port}: {error}", host=host, port=port,
                          error=f.getErrorMessage())

        return d.addCallbacks(resolved, failed)

    def send(self, final=False):
        """
        Send one report now.
        """
        if self._port is None:
            return
        try:
            status, location, workload, associations = self.report()
        except Exception:
            self.log.failure("CSP report failed")
            return
        message = StatusReport(
            self.identifier(), int((self.reactor.seconds() - self._started) * 1e6),
            int(self.interval * 1e6), location, status, workload, tuple(associations), final)
        try:
            self._port.write(encode_report(message), self._target)
            self.sent += 1
        except OSError as e:
            self.log.debug("CSP report to {target} failed: {error}", target=self._target,
                           error=str(e))

    def stop(self):
        """
        Send the final report and stop.

        @return: a L{Deferred}.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        port, self._port = self._port, None
        if port is None:
            return defer.succeed(None)
        self._port = port
        self.send(final=True)
        self._port = None
        return defer.maybeDeferred(port.stopListening)


def _micro(seconds):
    return max(0, int(seconds * 1e6))


def registrar_report(service):
    """
    A registrar's report, as RSPLIB's: C{"N[M] PEs in P Pools, K Peers"}
    (every PE, those it is home for), an association per ENRP peer.
    """
    registrar = service.registrar
    hs = registrar.handlespace
    enrp = service.enrp
    pools = len(hs.pools())
    peers = sorted(enrp.peers) if enrp is not None else []
    status = "%d[%d] PEs in %d Pool%s, %d Peer%s" % (
        len(hs), hs.owned_count(registrar.server_id), pools, "" if pools == 1 else "s",
        len(peers), "" if len(peers) == 1 else "s")
    addresses = []
    for port in service.asap_ports:
        host = port.getHost()
        text = getattr(host, "host", "?")
        addresses.append(("[%s]" % text if ":" in text else text) + ":%s" % host.port)
    associations = [Association(component_id(GROUP_REGISTRAR, peer), protocol=IPPROTO_TCP,
                                ppid=ENRP_PPID) for peer in peers]
    return status, _location(addresses), -1.0, associations


def registrar_id(service):
    return component_id(GROUP_REGISTRAR, service.registrar.server_id)


def pool_element_report(pe, registered_since):
    """
    A PE's report: registered where, its load (adaptive policies), an
    association to its home registrar.

    @param registered_since: a callable returning the seconds since it was
        last registered, or C{None}.
    """
    handle = pe.pool_handle.decode("utf-8", "replace")
    machine = pe.machine
    workload = -1.0
    policy = pe.policy
    if "load" in policy.fields:
        workload = policy.fields["load"] / float(0xFFFFFFFF)
    associations = []
    if pe.is_registered:
        status = "Registered in %s" % handle
        if pe.home_registrar:
            since = registered_since()
            associations.append(Association(
                component_id(GROUP_REGISTRAR, pe.home_registrar),
                _micro(since) if since is not None else 0xFFFFFFFFFFFFFFFF,
                protocol=IPPROTO_SCTP if getattr(machine, "mapping", "tcp") == "sctp"
                else IPPROTO_TCP, ppid=ASAP_PPID))
    else:
        # RSPLIB's words while it hunts.
        status = "Looking for Registrar ..."
    addresses = []
    if pe.is_registered:
        # What it registered, not the wildcard it listens on.
        transport = machine.registration().pool_element.user_transport
        addresses = ["%s:%d" % ("[%s]" % a if a.version == 6 else a, transport.port)
                     for a in transport.addresses]
    elif pe.port is not None:
        host = pe.port.getHost()
        addresses.append("%s:%s" % (getattr(host, "host", "?"), getattr(host, "port", "?")))
    return status, _location(addresses), workload, associations


def pool_element_id(pe):
    return component_id(GROUP_POOL_ELEMENT, pe.identifier)


def pool_user_report(handle, state):
    """
    A pool user's report (C{rserpool terminal}): the PE it talks to, and
    how often it failed over.

    @param state: a callable returning C{(PoolElementInfo or None, seconds
        connected or None, failovers)}.
    """
    pe, since, failovers = state()
    associations = []
    if pe is not None:
        status = "Connected to PE $%08x of %s" % (pe.identifier, handle)
        associations.append(Association(
            component_id(GROUP_POOL_ELEMENT, pe.identifier),
            _micro(since) if since is not None else 0xFFFFFFFFFFFFFFFF,
            protocol=IPPROTO_SCTP if getattr(pe, "transport", None) == "sctp" else IPPROTO_TCP,
            ppid=0))
    else:
        status = "Looking for a PE of %s" % handle
    if failovers:
        status += ", %d failover%s" % (failovers, "" if failovers == 1 else "s")
    return status, _location([]), -1.0, associations


def pool_user_id(number):
    return component_id(GROUP_POOL_USER, number)
