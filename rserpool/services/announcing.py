"""
ASAP Server Announce (RFC 5352 section 3.6): a registrar tells PEs and
pool users on a multicast group where its ASAP listeners are.
"""
import ipaddress

import attrs
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from rserpool.codes import ASAP_ANNOUNCE_GROUP
from rserpool.interfaces import normalize_address
from rserpool.services.listeners import AfterListening
from rserpool.transport.multicast import AnnounceSender
from rserpool.transport.tcp import address_of
from rserpool.wire import SCTPTransport, TCPTransport

__all__ = ["AnnounceSettings", "AnnounceService", "announced_transports",
           "sctp_listener_addresses"]


@attrs.frozen
class AnnounceSettings:
    """
    ASAP Server Announce (off unless given to the registrar).

    @ivar group: C{(host, port)}; RSPLIB's default is 239.0.0.50:3863.
    @ivar interval: seconds between announcements (RSPLIB 1 s).
    @ivar ttl: the multicast TTL (RSPLIB 30).
    @ivar interface: the address of the interface to send from, or C{None}.
    """

    group: tuple = ASAP_ANNOUNCE_GROUP
    interval: float = 1.0
    ttl: int = 30
    interface: object = None


def sctp_listener_addresses(host):
    """
    The addresses an SCTP listener is bound to, normalized, in order and
    without repeats (unusable ones skipped).

    @param host: the listener's C{getHost()}.
    @return: a list of L{ipaddress} addresses, or C{None} when it listens
        on the wildcard address.
    """
    out = []
    for text in getattr(host, "addresses", ()) or (host.host,):
        try:
            address = normalize_address(text)
        except (ValueError, AttributeError):
            continue
        if address.is_unspecified:
            return None
        if address not in out:
            out.append(address)
    return out


def announced_transports(asap_ports, interface=None):
    """
    The transport parameters of ASAP listeners, for Server Announce: SCTP
    ones first (RSPLIB's receivers take the first SCTP Transport and stop
    reading there), then TCP.

    An SCTP listener on the wildcard address is announced with the
    announce interface's address when one is set; without one it is left
    out, and receivers take the announcement's source address and port
    (the SCTP port, see L{AnnounceService}), as from RSPLIB's registrars,
    which announce no transport.

    @param asap_ports: the listening ports.
    @param interface: the announce interface's address, or C{None}.
    """
    sctp, tcp = [], []
    for port in asap_ports:
        host = port.getHost()
        kind = getattr(host, "type", "TCP")
        if kind == "SCTP":
            addresses = sctp_listener_addresses(host)
            if addresses is None:
                addresses = []
                if interface:
                    try:
                        addresses = [normalize_address(interface)]
                    except ValueError:
                        pass
            if addresses:
                sctp.append(SCTPTransport(host.port, tuple(addresses)))
        elif kind == "TCP":
            address, number = address_of(host)
            if address is not None:
                tcp.append(TCPTransport(number, (address,)))
    return sctp + tcp


class AnnounceService(AfterListening):
    """
    Announces the registrar's ASAP listeners to a group, from the time
    they listen until the service stops.
    """

    log = Logger()

    def __init__(self, listeners, reactor, server_id, settings, rng=None, secured=False):
        """
        @param listeners: the registrar's L{ListenerService}; its C{"ASAP"}
            ports are announced.
        @param reactor: the reactor.
        @param server_id: the registrar's id.
        @param settings: L{AnnounceSettings}.
        @param rng: a C{random.Random} (the announcements' jitter).
        @param secured: the listeners are TLS-PSK (announcements cannot say
            so: a warning tells the operator).
        """
        AfterListening.__init__(self, listeners)
        self.reactor = reactor
        self.server_id = server_id
        self.settings = settings
        self.rng = rng
        self.secured = secured
        self.sender = None
        self._port = None

    def transports(self):
        """
        What is announced now: L{announced_transports} of the ASAP
        listeners.
        """
        return announced_transports(self.listeners.ports_of.get("ASAP", ()),
                                    self.settings.interface)

    def _sctp_port(self):
        for port in self.listeners.ports_of.get("ASAP", ()):
            host = port.getHost()
            if getattr(host, "type", None) == "SCTP":
                return getattr(host, "port", 0)
        return 0

    def begin(self):
        settings = self.settings
        if self.secured:
            self.log.warn(
                "Server Announces name this registrar's ASAP port but not its TLS-PSK: "
                "PEs and PUs must reach it through psk: registrar endpoints")
        self.sender = AnnounceSender(self.reactor, self.server_id, self.transports,
                                     settings.group, settings.interval, settings.ttl,
                                     settings.interface, self.rng)
        interface = "::" if ":" in settings.group[0] else ""
        if ipaddress.ip_address(settings.group[0]).is_multicast:
            # As RSPLIB, send from the SCTP ASAP port number: a receiver
            # that finds no usable SCTP transport in the announcement
            # (RSPLIB's) takes the source address and port.
            number = self._sctp_port()
            if number:
                try:
                    self._port = self.reactor.listenMulticast(
                        number, self.sender, interface=interface, listenMultiple=True)
                except CannotListenError as e:
                    self.log.warn("cannot send Server Announce from UDP port {port}: {error}",
                                  port=number, error=str(e))
            if self._port is None:
                self._port = self.reactor.listenMulticast(0, self.sender, interface=interface)
        else:
            self._port = self.reactor.listenUDP(0, self.sender, interface=interface)
        self.log.info("announcing registrar {id:08x} to {group} every {interval} s",
                      id=self.server_id, group="%s:%d" % settings.group,
                      interval=settings.interval)

    def stopService(self):
        AfterListening.stopService(self)
        port, self._port, self.sender = self._port, None, None
        if port is not None:
            return port.stopListening()
