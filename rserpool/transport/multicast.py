"""
ASAP Server Announce over UDP multicast (RFC 5352 section 3.6): the
registrar's sender and the PE/PU side's listener.

RSPLIB's default group is 239.0.0.50 port 3863
(L{rserpool.codes.ASAP_ANNOUNCE_GROUP}).  The registrar sends only when
announcements are enabled, so a default registrar sends nothing off its
host.  A unicast "group" address works too (no group is joined), which the
tests use on loopback.
"""
import ipaddress
import random

from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from rserpool.asap.announce import RegistrarTable, announce_delay, server_announce
from rserpool.wire import encode

__all__ = ["AnnounceSender", "AnnounceListener", "parse_group"]


def parse_group(text):
    """
    Parse C{"239.0.0.50:3863"} or C{"[ff05::1]:3863"}.

    @return: C{(host, port)} with the host as a string.
    @raise ValueError: if it is not an address and a port.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host)
        port = int(port)
    except ValueError:
        raise ValueError("announce group must be ADDRESS:PORT, not {!r}".format(text)) from None
    if not 0 < port < 65536:
        raise ValueError("announce group port out of range: {!r}".format(text))
    return host, port


def _is_multicast(host):
    return ipaddress.ip_address(host).is_multicast


class AnnounceSender(DatagramProtocol):
    """
    Sends a registrar's Server Announce to a group every C{interval}
    seconds (+-12.5 %).

    Use: C{reactor.listenMulticast(0, sender)} (C{listenUDP} for a unicast
    destination); it starts announcing when the port is up and stops with
    it.
    """

    log = Logger()

    def __init__(self, clock, server_id, transports, group, interval=1.0, ttl=30,
                 interface=None, rng=None):
        """
        @param clock: an L{IReactorTime}.
        @param server_id: the registrar's id.
        @param transports: a callable returning the transport parameters of
            the registrar's ASAP endpoints (they may change while running).
        @param group: C{(host, port)} to send to.
        @param interval: seconds between announcements.
        @param ttl: the multicast TTL (RSPLIB's default is 30).
        @param interface: the address of the interface to send from, or
            C{None} for the system's choice.
        @param rng: a C{random.Random}.
        """
        self.clock = clock
        self.server_id = server_id
        self.transports = transports
        self.group = group
        self.interval = interval
        self.ttl = ttl
        self.interface = interface
        self.rng = rng if rng is not None else random.Random()
        self._call = None
        self.sent = 0

    def startProtocol(self):
        if _is_multicast(self.group[0]) and hasattr(self.transport, "setTTL"):
            self.transport.setTTL(self.ttl)
            self.transport.setLoopbackMode(1)
            if self.interface:
                self.transport.setOutgoingInterface(self.interface)
        self.announce()

    def announce(self):
        """
        Send one announcement now and schedule the next.
        """
        self._call = None
        data = encode(server_announce(self.server_id, self.transports()))
        try:
            self.transport.write(data, self.group)
            self.sent += 1
        except OSError as e:
            self.log.warn("cannot send Server Announce to {group}: {error}",
                          group=self.group, error=str(e))
        self._call = self.clock.callLater(announce_delay(self.interval, self.rng), self.announce)

    def stopProtocol(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class AnnounceListener(DatagramProtocol):
    """
    The PE/PU side: listens on the announce group and keeps a
    L{RegistrarTable}.

    Use: C{reactor.listenMulticast(3863, listener, listenMultiple=True)}
    (or C{listenUDP} for a unicast address).
    """

    log = Logger()

    def __init__(self, clock, group=None, table=None, interface="", on_announce=None,
                 on_forget=None):
        """
        @param clock: an L{IReactorTime}.
        @param group: the multicast group's address to join, or C{None}.
        @param table: a L{RegistrarTable} (a new one by default).
        @param interface: the interface address to join on.
        @param on_announce: called with each L{KnownRegistrar} learned.
        @param on_forget: called with the id of each registrar that stopped
            announcing itself (not heard for the table's timeout).
        """
        self.clock = clock
        self.group = group
        # RSPLIB: no transport in the announcement -> the source address
        # and port, as SCTP
        self.table = table if table is not None else RegistrarTable(default_port=None)
        self.interface = interface
        self.on_announce = on_announce
        self.on_forget = on_forget
        self._expiry = None

    def startProtocol(self):
        # RFC 5352 section 3.6: a registrar that stops announcing itself is
        # forgotten, checked twice per timeout even when nothing arrives.
        self._expiry = task.LoopingCall(self._expire)
        self._expiry.clock = self.clock
        self._expiry.start(self.table.timeout / 2.0, now=False)
        if self.group is not None and _is_multicast(self.group):
            return self.transport.joinGroup(self.group, self.interface)

    def stopProtocol(self):
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        self._expiry = None

    def _expire(self):
        for server_id in self.table.expire(self.clock.seconds()):
            self.log.debug("registrar {id:08x} no longer announced", id=server_id)
            if self.on_forget is not None:
                self.on_forget(server_id)

    def datagramReceived(self, data, addr):
        entry = self.table.datagram_received(data, addr, self.clock.seconds())
        if entry is not None:
            self.log.debug("registrar {id:08x} announced at {where}",
                           id=entry.server_id, where=entry.endpoints)
            if self.on_announce is not None:
                self.on_announce(entry)
