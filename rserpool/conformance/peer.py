"""
The suite's ENRP peer: a minimal registrar that the implementation under
test takes for one of its peers (RFC 5353), built on our codec and
transports only.

It listens on an ENRP endpoint of its own and names it in its Server
Information, connects to the target from there where the mapping allows
(over SCTP from its one-to-many socket, so that the association joins the
two ENRP ports as RSPLIB expects), and keeps one L{Inbox} for whatever the
target sends over either connection.  Like a well-behaved peer it answers
the target by itself: Presence with the R flag by a Presence, Handle Table
Requests with the PEs it owns (L{owned}), List Requests with an empty
list; tests add PEs of their own with Handle Updates and read the rest.

The target must admit the suite's address as a peer (``doc/conformance.rst``,
"Testing the ENRP side").
"""
import ipaddress

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory

from rserpool.conformance.client import Inbox, NoAnswer, WireConnection, connect
from rserpool.wire import (
    ENRP,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    ListRequest,
    ListResponse,
    Presence,
    SCTPTransport,
    ServerInformation,
    TCPTransport,
)

__all__ = ["ENRPPeer", "checksum"]


def _words(data):
    if len(data) & 1:
        data += b"\0"
    return sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))


def checksum(pes):
    """
    The PE checksum of a registrar owning C{pes} (RFC 5353 PE Checksum:
    the 16-bit one's complement sum of each PE's pool handle, padded to an
    even length, and its 4-byte identifier, complemented).

    @param pes: C{(pool handle, identifier)} pairs.
    @rtype: C{int}
    """
    total = 0
    for handle, identifier in pes:
        total += _words(bytes(handle)) + _words(identifier.to_bytes(4, "big"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class _Accepting(Factory):
    """
    Builds a L{WireConnection} for each connection the target opens to
    the peer's listener.
    """

    noisy = False

    def __init__(self, peer):
        self.peer = peer

    def buildProtocol(self, addr):
        wire = WireConnection(self.peer.reactor, ENRP, "%s (accepted)" % self.peer.name,
                              self.peer.inbox)
        self.peer._adopt(wire)
        return wire.build(addr)


class ENRPPeer:
    """
    A peer registrar of the target.

    @ivar server_id: this peer's id.
    @ivar target_id: the target's id, once its Presence came.
    @ivar owned: C{{pool handle: {identifier: Pool Element}}}: the PEs
        this peer is home for (it announced them with Handle Updates).
    @ivar inbox: every ENRP message from the target, over any connection.
    @ivar connection: the connection this peer opened to the target.
    """

    def __init__(self, reactor, target, server_id, name="peer"):
        """
        @param target: the L{rserpool.conformance.target.Target}.
        """
        self.reactor = reactor
        self.target = target
        self.server_id = server_id
        self.name = name
        self.target_id = 0
        self.owned = {}
        self.inbox = Inbox(reactor, name)
        self.connections = []
        self.connection = None
        self.information = None
        self.answer = True
        self._port = None
        self._heartbeat = None

    # -- up and down -------------------------------------------------------

    @defer.inlineCallbacks
    def start(self, bind=None):
        """
        Listen, connect to the target, and announce this peer with a
        Presence (R flag) that the target answers.

        @return: a L{Deferred} firing with the target's Presence.
        """
        endpoint = self.target.enrp
        kind = endpoint.split(":", 1)[0].lower()
        host = bind or self.target.bind or "127.0.0.1"
        if kind == "sctp":
            listen = "sctp:0:interface=%s:mode=seqpacket:ppid=12" % host
        else:
            listen = self.target.server("tcp:0:interface=%s" % host.replace(":", "\\:"))
        self._port = yield serverFromString(self.reactor, listen).listen(_Accepting(self))
        port = self._port.getHost().port
        address = ipaddress.ip_address(host)
        if kind == "sctp":
            self.information = ServerInformation(self.server_id, SCTPTransport(port, (address,)))
            wire = yield self._associate(endpoint)
        else:
            self.information = ServerInformation(self.server_id, TCPTransport(port, (address,)))
            wire = yield connect(self.reactor, self.target.client(endpoint, peer=True),
                                 ENRP, bind=host,
                                 timeout=self.target.response_timeout + 2,
                                 name=self.name, inbox=self.inbox)
            self._adopt(wire)
        self.connection = wire
        # A registrar busy with the peers earlier tests left behind may
        # take a while: twice the usual bound.
        presence = yield self.request(
            self.presence(reply=True),
            lambda m: isinstance(m, Presence) and m.sender_id != self.server_id,
            "the target's Presence", 2 * self.target.response_timeout + self.target.slack)
        self.target_id = presence.sender_id
        self._beat()
        return presence

    def _associate(self, endpoint):
        # Over SCTP: from the listening one-to-many socket, so the
        # association leaves from the port the Server Information names.
        from twisted.internet.endpoints import _parse

        _, kwargs = _parse(endpoint)
        hosts = kwargs["host"].split(",")
        d = self._port.connectAssociation(hosts, int(kwargs["port"]),
                                          timeout=self.target.response_timeout + 2)

        def up(stream):
            return self.by_stream(stream)

        return d.addCallback(up)

    def by_stream(self, stream):
        for wire in self.connections:
            if wire.stream is stream:
                return wire
        raise NoAnswer("%s: the association came up without a connection" % self.name)

    def _adopt(self, wire):
        wire.on_message = self._answer
        self.connections.append(wire)

    def _beat(self):
        # A live peer: a Presence every second (the target's MAX-TIME-LAST-
        # HEARD is longer), so that it never takes this peer's PEs over.
        self._heartbeat = None
        if self.connection is not None and self.connection.open:
            self.connection.send(self.presence())
            self._heartbeat = self.reactor.callLater(1.0, self._beat)

    def silence(self):
        """
        Stop sending Presences of its own (it still answers the target).
        """
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        self._heartbeat = None

    @defer.inlineCallbacks
    def stop(self):
        """
        Close every connection and stop listening.
        """
        self.silence()
        self.answer = False
        for wire in list(self.connections):
            yield wire.close()
        self.inbox.closed("the peer stopped")
        if self._port is not None:
            yield self._port.stopListening()

    # -- what this peer says ------------------------------------------------

    def presence(self, reply=False, check=None):
        """
        This peer's Presence, with its PE checksum (or C{check}).
        """
        if check is None:
            check = checksum((h, i) for h, pes in self.owned.items() for i in pes)
        return Presence(self.server_id, self.target_id, check, self.information, reply)

    def send(self, message):
        """
        Send over this peer's own connection to the target.
        """
        self.connection.send(message)

    def send_raw(self, data):
        self.connection.send_raw(data)

    def request(self, message, match, what=None, timeout=None):
        """
        Send C{message}; a L{Deferred} fires with the first matching
        answer over any connection (or fails with L{NoAnswer}).
        """
        d = self.inbox.expect(match, timeout or self.target.response_timeout, what)
        self.send(message)
        return d

    def expect(self, match, timeout, what=None):
        return self.inbox.expect(match, timeout, what)

    # -- answering the target ------------------------------------------------

    def _answer(self, wire, message):
        if not self.answer:
            return
        if isinstance(message, Presence):
            if not self.target_id:
                self.target_id = message.sender_id
            if message.reply_required:
                wire.send(self.presence())
        elif isinstance(message, HandleTableRequest):
            entries = []
            for handle, pes in self.owned.items():
                if pes:
                    entries.append(HandleTableEntry(handle, tuple(pes.values())))
            wire.send(HandleTableResponse(self.server_id, message.sender_id, tuple(entries)))
        elif isinstance(message, ListRequest):
            wire.send(ListResponse(self.server_id, message.sender_id, ()))
