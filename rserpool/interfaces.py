"""
What the ASAP and ENRP state machines see of a transport mapping.

A state machine gets a connection handle (L{IMessageConnection}) with every
message and never learns which mapping carries it: the TCP mapping of
L{rserpool.transport.tcp}, later SCTP or TLS, or a fake in a test.  The
services draft (draft-ietf-rserpool-service-02 section 5.2) lists what a
mapping must give (message orientation, a heartbeat, control told apart from
data), what it may give (several streams, unordered delivery) and what it
should expose if the transport has it (RTT and RTO estimates, path MTU, a
lifetime for outgoing messages).  Whatever a mapping cannot give raises
L{NotAvailable}: the draft asks for "appropriate error messages or
indications" rather than a faked value.

This module imports no reactor.
"""
import ipaddress

from zope.interface import Attribute, Interface


class NotAvailable(Exception):
    """
    The mapping cannot provide this feature (services draft sections 5.2.2
    and 5.2.3), e.g. the path MTU over TCP.

    @ivar feature: the feature's name, e.g. C{"path_mtu"}.
    @ivar mapping: the mapping's name, e.g. C{"tcp"}.
    """

    def __init__(self, feature, mapping):
        Exception.__init__(self, feature, mapping)
        self.feature = feature
        self.mapping = mapping

    def __str__(self):
        return "{} is not available over the {} mapping".format(self.feature, self.mapping)


class IMessageConnection(Interface):
    """
    One association or connection that carries whole ASAP or ENRP messages.
    """

    mapping = Attribute("The mapping's name: C{'tcp'}, C{'sctp'}, ...")
    protocol = Attribute("C{'asap'} or C{'enrp'}: what flows on it.")
    peer = Attribute(
        "The remote end as C{(address, port)}: an L{ipaddress} address "
        "(IPv4-mapped IPv6 addresses are given as IPv4) and an C{int}."
    )
    local = Attribute("The local end as C{(address, port)}, like C{peer}.")
    local_addresses = Attribute(
        "Every address of the local end, primary first (one over TCP, "
        "every local address of the association over SCTP)."
    )
    peer_addresses = Attribute(
        "Every address of the remote end (one over TCP, several for a "
        "multi-homed SCTP peer), as L{ipaddress} addresses."
    )
    identity = Attribute(
        "The TLS-PSK identity (bytes) the remote end proved, or C{None} "
        "(no TLS-PSK, or not known)."
    )
    role = Attribute(
        "The role its key file gives the TLS-PSK identity (C{'any'}, C{'pe'}, "
        "C{'pu'}), or C{None} without one."
    )
    peer_transport = Attribute(
        "The remote end as a transport parameter (L{rserpool.wire.TCPTransport}, "
        "L{rserpool.wire.SCTPTransport}, ...), or C{None} if unknown."
    )

    def send(message):
        """
        Send one message (an instance of L{rserpool.wire.MESSAGE_CLASSES}).
        """

    def send_encoded(data):
        """
        Send the bytes of one or more already encoded, whole messages.
        """

    def close():
        """
        Close the connection after what was sent has been delivered.  The
        receiver's C{connection_lost} follows.
        """

    def rtt():
        """
        The smoothed round-trip time in seconds.

        @raise NotAvailable: if the mapping does not measure it.
        """

    def rto():
        """
        The retransmission timeout in seconds.

        @raise NotAvailable: if the mapping does not expose it.
        """

    def path_mtu():
        """
        The path MTU in bytes.

        @raise NotAvailable: if the mapping does not expose it.
        """


class IMessageReceiver(Interface):
    """
    The owner of connections: a state machine's adapter, called by a mapping
    with whole, decoded messages.
    """

    def connection_made(connection):
        """
        A connection (an L{IMessageConnection}) is up.
        """

    def message_received(connection, message):
        """
        A whole, valid message arrived.
        """

    def protocol_error(connection, error):
        """
        A well framed message could not be decoded (a
        L{rserpool.wire.ProtocolError}, which says what to answer).  When
        the framing itself is lost the mapping calls this too, then closes
        the connection.
        """

    def connection_lost(connection):
        """
        The connection is gone (closed by either side or failed).
        """


def normalize_address(host):
    """
    Turn a host string from a socket into an L{ipaddress} address, mapping
    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) back to IPv4, so that
    a PE's registered IPv4 address compares equal to its peer address on a
    dual-stack listener.

    @param host: a textual address, possibly with an IPv6 zone (C{%eth0}).
    @return: an L{ipaddress.IPv4Address} or L{ipaddress.IPv6Address}.
    """
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
