"""
The SCTP mapping of ASAP and ENRP (RFC 5352 section 5, RFC 5353 section 7)
as an L{IMessageConnection}.

Over SCTP every ASAP or ENRP message is one SCTP user message, marked with
its payload protocol identifier: 11 for ASAP, 12 for ENRP.  No framing is
needed, so L{SCTPMessageProtocol} decodes each SCTP message on its own (a
bad one never costs the association), sends each message as one SCTP
message with its protocol's PPID, and tells the state machines what only
SCTP knows:

 - C{mapping} is C{"sctp"};
 - C{peer_addresses} are all the addresses of the peer's association
   (C{SCTP_GET_PEER_ADDRS}), not just the one its packets came from: a
   multi-homed PE (RSPLIB registers every address it has) may register each
   of them (RFC 5355 section 3, the registrar's ownership check);
 - C{peer_transport} is an L{SCTPTransport} with the peer's port and all
   those addresses (what a registrar stores as a PE's ASAP transport);
 - C{rtt()}, C{rto()} and C{path_mtu()} come from the association's
   C{SCTP_STATUS} (services draft section 5.2.3).

A message whose PPID is neither its protocol's nor 0 is dropped with a log
line, as RSPLIB drops them; PPID 0 ("unspecified") is accepted as the
connection's protocol, so that a plain SCTP client still works.

Nobody has to choose this class: L{rserpool.transport.tcp.MessageStreamFactory}
builds it for an SCTP association (L{rserpool.transport.tcp.message_protocol}),
the TCP mapping for anything else.  So a registrar, PE or PU works over
C{sctp:...} endpoints exactly as over C{tcp:...} ones.  What both mappings
share is L{rserpool.transport.connection.MessageConnectionProtocol}.
"""
import struct

from twisted.logger import Logger

from rserpool.codes import ASAP_PPID, ENRP_PPID
from rserpool.interfaces import NotAvailable, normalize_address
from rserpool.transport.connection import MessageConnectionProtocol, address_of
from rserpool.wire import ASAP, ENRP, ProtocolError, SCTPTransport, decode, encode

__all__ = ["SCTPMessageProtocol", "PPIDS", "split_messages"]

#: The PPID of each protocol (RFC 5352 section 5, RFC 5353 section 7).
PPIDS = {ASAP: ASAP_PPID, ENRP: ENRP_PPID}

_H = struct.Struct("!H")


def split_messages(data):
    """
    Cut already encoded, whole messages apart by their length fields.

    @param data: one or more encoded messages, each padded to 4 bytes.
    @return: a list of C{bytes}, one per message (C{[data]} if C{data}
        does not frame cleanly: it is then sent as it is).
    """
    n = len(data)
    if n < 4:
        return [data]
    first = (_H.unpack_from(data, 2)[0] + 3) & ~3
    if first >= n or first < 4:
        return [data]
    out = []
    pos = 0
    while pos < n:
        if n - pos < 4:
            return [data]
        total = (_H.unpack_from(data, pos + 2)[0] + 3) & ~3
        if total < 4 or pos + total > n:
            return [data]
        out.append(data[pos:pos + total])
        pos += total
    return out


def _addresses(pairs):
    """
    L{ipaddress} addresses of C{(host, port)} pairs, in order, without
    duplicates or unparsable entries.
    """
    out = []
    for host, _port in pairs:
        try:
            address = normalize_address(host)
        except ValueError:
            continue
        if address not in out:
            out.append(address)
    return tuple(out)


class SCTPMessageProtocol(MessageConnectionProtocol):
    """
    One SCTP association carrying ASAP or ENRP messages, one per SCTP
    message (see the module's description).

    @ivar ppid: the PPID of what is sent, and expected.
    """

    log = Logger()
    mapping = "sctp"

    def __init__(self, receiver, protocol=ASAP):
        MessageConnectionProtocol.__init__(self, receiver, protocol)
        self.ppid = PPIDS[protocol]
        self._addresses = None

    def connectionMade(self):
        self.connected = True
        self.peer = address_of(self.transport.getPeer())
        host = self.transport.getHost()
        self.local = address_of(host)
        # Every local address of the association, primary first: a PE
        # serving on the wildcard registers them all (multi-homing).
        local = _addresses((a, 0) for a in getattr(host, "addresses", ()) or ())
        if self.local[0] is not None:
            local = (self.local[0],) + tuple(a for a in local if a != self.local[0])
        self.local_addresses = local
        self._refresh()
        self._start_guard()
        self.receiver.connection_made(self)

    def _refresh(self):
        """
        Read the association's peer addresses again (primary first).
        """
        addresses = ()
        get = getattr(self.transport, "getPeerAddresses", None)
        if get is not None:
            addresses = _addresses(get())
        if not addresses and self.peer[0] is not None:
            addresses = (self.peer[0],)
        if self.peer[0] is not None and addresses and addresses[0] != self.peer[0] \
                and self.peer[0] in addresses:
            addresses = (self.peer[0],) + tuple(a for a in addresses if a != self.peer[0])
        self._addresses = addresses
        if addresses:
            self._peer_transport = SCTPTransport(self.peer[1], addresses)
        else:
            self._peer_transport = None

    def peerAddressChanged(self, event):
        """
        The kernel reported a change of the peer's addresses (SCTP ADD-IP,
        a path confirmed or removed): read them again.
        """
        if self.connected:
            self._refresh()

    @property
    def peer_addresses(self):
        """
        Every address of the peer's association, primary first.
        """
        return self._addresses if self._addresses is not None else ()

    @peer_addresses.setter
    def peer_addresses(self, value):
        # MessageConnectionProtocol.__init__ assigns it; the association's list
        # replaces it in connectionMade.
        self._addresses = tuple(value) if value else None

    # -- receiving --------------------------------------------------------

    def messageReceived(self, data, ppid, stream):
        """
        One SCTP message: one ASAP or ENRP message.
        """
        if not self.connected:
            return
        if ppid != self.ppid and ppid != 0:
            # RSPLIB drops messages with a foreign PPID, too.
            self._note(
                "dropping a message with PPID {ppid} on an {protocol} association from {peer}",
                ppid=ppid, protocol=self.protocol.upper(), peer=self.describe())
            return
        try:
            item = decode(data, self.protocol)
        except ProtocolError as e:
            item = e.detached()
        guard = self.guard
        if guard is not None:
            guard.received()
            if guard.paused or self._pending:
                self._keep([item])
                return
        self._handle([item])

    def dataReceived(self, data):
        """
        A message from a transport that does not give PPIDs.
        """
        self.messageReceived(data, self.ppid, 0)

    # -- IMessageConnection -----------------------------------------------

    def send(self, message):
        """
        Encode C{message} and send it as one SCTP message with the
        protocol's PPID.
        """
        if self.connected:
            data = encode(message)
            self.transport.writeMessage(data, self.ppid)
            if self.guard is not None:
                self.guard.wrote(len(data))

    def send_encoded(self, data):
        """
        Send already encoded messages, each as its own SCTP message.
        """
        if not self.connected:
            return
        write = self.transport.writeMessage
        for part in split_messages(data):
            write(part, self.ppid)
        if self.guard is not None:
            self.guard.wrote(len(data))

    def _status(self, feature):
        get = getattr(self.transport, "getStatus", None)
        if get is None or not self.connected:
            raise NotAvailable(feature, self.mapping)
        try:
            return get()
        except OSError:
            raise NotAvailable(feature, self.mapping) from None

    def rtt(self):
        """
        The primary path's smoothed round-trip time (C{SCTP_STATUS}), in
        seconds.

        @raise NotAvailable: if the association is gone.
        """
        return self._status("rtt").srtt

    def rto(self):
        """
        The primary path's retransmission timeout, in seconds.

        @raise NotAvailable: if the association is gone.
        """
        return self._status("rto").rto

    def path_mtu(self):
        """
        The primary path's MTU, in bytes.

        @raise NotAvailable: if the association is gone.
        """
        return self._status("path_mtu").mtu
