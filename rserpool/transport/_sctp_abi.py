"""
The Linux kernel's SCTP socket API, as constants and C{struct} formats.

Python's L{socket} module knows C{IPPROTO_SCTP} but none of the SCTP socket
options, ancillary data types or notification layouts.  They are written
down here from the Linux UAPI header C{<linux/sctp.h>} (the RFC 6458 socket
API as Linux implements it), each with the header's name for it.

Formats use C{"="}: native byte order (the kernel's), standard sizes and
I{no} automatic alignment, so every padding byte the C compiler inserts is
spelled out as C{x}.  C{sctp_assoc_t} is C{__s32} on Linux.

Nothing here opens a socket: the functions only pack and unpack bytes, so
they are tested on any host, with or without kernel SCTP.
"""
import socket
import struct

import attrs

# -- protocol and option level ------------------------------------------------

#: C{IPPROTO_SCTP} (<netinet/in.h>), also the C{cmsg_level} of SCTP ancillary
#: data.
IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
#: C{SOL_SCTP} (<linux/socket.h>): the socket option level.
SOL_SCTP = 132

# -- socket options (<linux/sctp.h>) -------------------------------------------

SCTP_RTOINFO = 0
SCTP_ASSOCINFO = 1
SCTP_INITMSG = 2
SCTP_NODELAY = 3
SCTP_AUTOCLOSE = 4
SCTP_PRIMARY_ADDR = 6
SCTP_DISABLE_FRAGMENTS = 8
SCTP_PEER_ADDR_PARAMS = 9
SCTP_EVENTS = 11
SCTP_MAXSEG = 13
SCTP_STATUS = 14
SCTP_GET_PEER_ADDR_INFO = 15
SCTP_RECVRCVINFO = 32
SCTP_RECVNXTINFO = 33
SCTP_DEFAULT_SNDINFO = 34
SCTP_SOCKOPT_BINDX_ADD = 100
SCTP_SOCKOPT_BINDX_REM = 101
SCTP_SOCKOPT_PEELOFF = 102
SCTP_GET_PEER_ADDRS = 108
SCTP_GET_LOCAL_ADDRS = 109
SCTP_SOCKOPT_CONNECTX = 110

# -- cmsg_type values of ancillary data (enum sctp_cmsg_type) -------------------

SCTP_INIT = 0
SCTP_SNDRCV = 1
SCTP_SNDINFO = 2
SCTP_RCVINFO = 3
SCTP_NXTINFO = 4

# -- msghdr.msg_flags (enum sctp_msg_flags; MSG_EOR from <bits/socket.h>) ---

MSG_NOTIFICATION = 0x8000
MSG_EOR = getattr(socket, "MSG_EOR", 0x80)
MSG_FIN = 0x200

# -- sinfo_flags / snd_flags / rcv_flags (enum sctp_sinfo_flags) ----------------

SCTP_UNORDERED = 1 << 0
SCTP_ADDR_OVER = 1 << 1
SCTP_ABORT = 1 << 2
SCTP_SACK_IMMEDIATELY = 1 << 3
SCTP_SENDALL = 1 << 6
#: Shut the association down gracefully (C{SCTP_EOF = MSG_FIN}).
SCTP_EOF = MSG_FIN

# -- notification types (enum sctp_sn_type) --------------------------------------

SCTP_SN_TYPE_BASE = 1 << 15
SCTP_DATA_IO_EVENT = SCTP_SN_TYPE_BASE
SCTP_ASSOC_CHANGE = SCTP_SN_TYPE_BASE + 1
SCTP_PEER_ADDR_CHANGE = SCTP_SN_TYPE_BASE + 2
SCTP_SEND_FAILED = SCTP_SN_TYPE_BASE + 3
SCTP_REMOTE_ERROR = SCTP_SN_TYPE_BASE + 4
SCTP_SHUTDOWN_EVENT = SCTP_SN_TYPE_BASE + 5
SCTP_PARTIAL_DELIVERY_EVENT = SCTP_SN_TYPE_BASE + 6
SCTP_ADAPTATION_INDICATION = SCTP_SN_TYPE_BASE + 7
SCTP_AUTHENTICATION_EVENT = SCTP_SN_TYPE_BASE + 8
SCTP_SENDER_DRY_EVENT = SCTP_SN_TYPE_BASE + 9

# -- sac_state of SCTP_ASSOC_CHANGE (enum sctp_sac_state) -----------------------

SCTP_COMM_UP = 0
SCTP_COMM_LOST = 1
SCTP_RESTART = 2
SCTP_SHUTDOWN_COMP = 3
SCTP_CANT_STR_ASSOC = 4

# -- spc_state of SCTP_PEER_ADDR_CHANGE (enum sctp_spc_state) -------------------

SCTP_ADDR_AVAILABLE = 0
SCTP_ADDR_UNREACHABLE = 1
SCTP_ADDR_REMOVED = 2
SCTP_ADDR_ADDED = 3
SCTP_ADDR_MADE_PRIM = 4
SCTP_ADDR_CONFIRMED = 5
SCTP_ADDR_POTENTIALLY_FAILED = 6

# -- spp_flags of SCTP_PEER_ADDR_PARAMS (enum sctp_spp_flags) -------------------

#: Turn heartbeats on (and take C{spp_hbinterval}, unless 0).
SPP_HB_ENABLE = 1 << 0
#: Turn heartbeats off.
SPP_HB_DISABLE = 1 << 1
#: Send a heartbeat at once (one peer address only).
SPP_HB_DEMAND = 1 << 2
SPP_PMTUD_ENABLE = 1 << 3
SPP_PMTUD_DISABLE = 1 << 4
SPP_SACKDELAY_ENABLE = 1 << 5
SPP_SACKDELAY_DISABLE = 1 << 6
#: C{spp_hbinterval} 0 means zero, not "unchanged".
SPP_HB_TIME_IS_ZERO = 1 << 7
SPP_IPV6_FLOWLABEL = 1 << 8
SPP_DSCP = 1 << 9

# -- structures ---------------------------------------------------------------

#: C{struct sctp_initmsg}: num_ostreams, max_instreams, max_attempts,
#: max_init_timeo (all C{__u16}); 8 bytes.
INITMSG = struct.Struct("=HHHH")

#: C{struct sctp_sndrcvinfo}: stream, ssn, flags (C{__u16}), 2 bytes of
#: padding, ppid, context, timetolive, tsn, cumtsn (C{__u32}), assoc_id
#: (C{sctp_assoc_t}); 32 bytes.
SNDRCVINFO = struct.Struct("=HHH2xIIIIIi")

#: C{struct sctp_sndinfo}: sid, flags (C{__u16}), ppid, context
#: (C{__u32}), assoc_id; 16 bytes.
SNDINFO = struct.Struct("=HHIIi")

#: C{struct sctp_rcvinfo}: sid, ssn, flags (C{__u16}), 2 bytes of padding,
#: ppid, tsn, cumtsn, context (C{__u32}), assoc_id; 28 bytes.
RCVINFO = struct.Struct("=HHH2xIIIIi")

#: The first 10 of the 14 C{__u8} fields of C{struct sctp_event_subscribe}
#: (data_io, association, address, send_failure, peer_error, shutdown,
#: partial_delivery, adaptation_layer, authentication, sender_dry).  The
#: kernel takes a prefix of the structure (C{optlen} up to its size).
EVENT_SUBSCRIBE = struct.Struct("=10B")

#: C{sn_header} of C{union sctp_notification}: type, flags (C{__u16}),
#: length (C{__u32}); 8 bytes.
SN_HEADER = struct.Struct("=HHI")

#: C{struct sctp_assoc_change} without its C{sac_info[]}: type, flags,
#: length, state, error, outbound_streams, inbound_streams, assoc_id; 20
#: bytes.
ASSOC_CHANGE = struct.Struct("=HHIHHHHi")

#: C{struct sctp_paddr_change} (C{packed, aligned(4)}): type, flags,
#: length, a 128-byte C{sockaddr_storage}, state, error (C{int}),
#: assoc_id; 148 bytes.
PADDR_CHANGE = struct.Struct("=HHI128siii")

#: C{struct sctp_shutdown_event}: type, flags, length, assoc_id; 12 bytes.
SHUTDOWN_EVENT = struct.Struct("=HHIi")

#: C{struct sctp_paddrinfo} (C{packed, aligned(4)}): assoc_id, a 128-byte
#: C{sockaddr_storage}, state (C{__s32}), cwnd, srtt, rto, mtu (C{__u32});
#: 152 bytes.  srtt and rto are in milliseconds.
PADDRINFO = struct.Struct("=i128siIIII")

#: C{struct sctp_paddrparams} (C{packed, aligned(4)}), the value of
#: C{SCTP_PEER_ADDR_PARAMS}: assoc_id, a 128-byte C{sockaddr_storage}
#: (all zero: the whole association), hbinterval (C{__u32}, milliseconds),
#: pathmaxrxt (C{__u16}), pathmtu, sackdelay, flags, ipv6_flowlabel
#: (C{__u32}), dscp (C{__u8}), 1 byte of tail padding; 156 bytes.  gcc's
#: C{offsetof} on <linux/sctp.h>: hbinterval 132, pathmaxrxt 136, pathmtu
#: 138, sackdelay 142, flags 146, ipv6_flowlabel 150, dscp 154.
PADDRPARAMS = struct.Struct("=i128sIHIIIIBx")

#: C{struct sctp_status}: assoc_id, state (C{__s32}), rwnd (C{__u32}),
#: unackdata, penddata, instrms, outstrms (C{__u16}), fragmentation_point
#: (C{__u32}), then a C{struct sctp_paddrinfo} (L{PADDRINFO}); 176 bytes.
STATUS = struct.Struct("=iiIHHHHI" + PADDRINFO.format[1:])

#: C{struct sctp_getaddrs}: assoc_id, addr_num (C{__u32}), then
#: C{addr_num} packed C{sockaddr_in} / C{sockaddr_in6}.
GETADDRS = struct.Struct("=iI")

#: C{struct sockaddr_in}: family (native C{sa_family_t}), port and address
#: in network order, 8 bytes of zero; 16 bytes.
SOCKADDR_IN = struct.Struct("=H2s4s8x")
#: C{struct sockaddr_in6}: family, port, flowinfo (network order), 16-byte
#: address, scope_id (native); 28 bytes.
SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")


# -- helpers ------------------------------------------------------------------


def ppid_to_kernel(ppid):
    """
    The value to put into C{snd_ppid} / C{sinfo_ppid} for a PPID.

    The kernel copies these fields into the DATA chunk without converting
    them (RFC 6458 section 5.3.2: "the SCTP stack performs no byte order
    modification of this field"), so a PPID must be given in network byte
    order, as RSPLIB does with C{htonl(PPID_ASAP)}.  Wireshark then shows
    ASAP as PPID 11.

    @param ppid: the payload protocol identifier, 0 to 2**32-1.
    @return: the integer whose native bytes are C{ppid} in network order.
    """
    return socket.htonl(ppid)


def ppid_from_kernel(value):
    """
    The PPID of a received message from C{rcv_ppid} / C{sinfo_ppid}; the
    inverse of L{ppid_to_kernel}.
    """
    return socket.ntohl(value)


def pack_sndinfo(ppid, stream=0, flags=0, assoc_id=0, context=0):
    """
    C{struct sctp_sndinfo} for the C{SCTP_SNDINFO} ancillary data of
    C{sendmsg}.

    @param ppid: the message's payload protocol identifier.
    @param stream: the stream number.
    @param flags: C{SCTP_UNORDERED}, C{SCTP_EOF}, C{SCTP_ABORT}, ...
    @param assoc_id: the association (one-to-many sockets; ignored on
        one-to-one sockets).
    @param context: opaque, returned in a send failure notification.
    @return: 16 bytes.
    """
    return SNDINFO.pack(stream, flags, ppid_to_kernel(ppid), context, assoc_id)


@attrs.frozen
class ReceiveInfo:
    """
    What the kernel tells about a received message, from C{SCTP_RCVINFO}
    (or the older C{SCTP_SNDRCV}) ancillary data.

    @ivar stream: the stream it came on.
    @ivar ppid: its payload protocol identifier, host order.
    @ivar flags: C{SCTP_UNORDERED} if it was sent unordered.
    @ivar assoc_id: its association.
    @ivar ssn: its stream sequence number.
    @ivar tsn: the TSN of its first chunk.
    """

    stream: int = 0
    ppid: int = 0
    flags: int = 0
    assoc_id: int = 0
    ssn: int = 0
    tsn: int = 0

    @property
    def unordered(self):
        """
        Whether the message was sent unordered.
        """
        return bool(self.flags & SCTP_UNORDERED)


def parse_receive_info(ancdata):
    """
    Find the message information in the ancillary data returned by
    C{recvmsg}.

    @param ancdata: C{[(level, type, data), ...]} as from
        L{socket.socket.recvmsg}.
    @return: a L{ReceiveInfo}, or C{None} if there is none.
    """
    info = None
    for level, ctype, data in ancdata:
        if level != IPPROTO_SCTP:
            continue
        if ctype == SCTP_RCVINFO and len(data) >= RCVINFO.size:
            sid, ssn, flags, ppid, tsn, _cumtsn, _context, assoc_id = RCVINFO.unpack_from(data)
            return ReceiveInfo(sid, ppid_from_kernel(ppid), flags, assoc_id, ssn, tsn)
        if ctype == SCTP_SNDRCV and len(data) >= SNDRCVINFO.size:
            sid, ssn, flags, ppid, _ctx, _ttl, tsn, _cumtsn, assoc_id = SNDRCVINFO.unpack_from(data)
            info = ReceiveInfo(sid, ppid_from_kernel(ppid), flags, assoc_id, ssn, tsn)
    return info


def pack_sockaddr(host, port=0):
    """
    C{struct sockaddr_in} or C{sockaddr_in6} for an address, as
    C{SCTP_SOCKOPT_BINDX_ADD} and C{SCTP_SOCKOPT_CONNECTX} take them,
    packed back to back.

    @param host: a textual IPv4 or IPv6 address (an IPv6 zone such as
        C{%eth0} is not supported).
    @param port: the port.
    @raise ValueError: if C{host} is not an IP address.
    """
    port_bytes = int(port).to_bytes(2, "big")
    try:
        return SOCKADDR_IN.pack(socket.AF_INET, port_bytes, socket.inet_pton(socket.AF_INET, host))
    except OSError:
        pass
    try:
        raw = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        raise ValueError("not an IP address: {!r}".format(host)) from None
    return SOCKADDR_IN6.pack(socket.AF_INET6, port_bytes, b"\0\0\0\0", raw, 0)


def unpack_sockaddrs(data, count=None):
    """
    Read packed C{sockaddr_in} / C{sockaddr_in6} structures, as in the
    answer to C{SCTP_GET_PEER_ADDRS} or in a C{sockaddr_storage}.

    @param data: the bytes.
    @param count: how many to read; C{None} for as many as there are.
    @return: a list of C{(host, port)}; IPv4-mapped IPv6 addresses are given
        as IPv4.
    """
    out = []
    pos = 0
    while (count is None or len(out) < count) and pos + 2 <= len(data):
        (family,) = struct.unpack_from("=H", data, pos)
        if family == socket.AF_INET and pos + SOCKADDR_IN.size <= len(data):
            _f, port, raw = SOCKADDR_IN.unpack_from(data, pos)
            out.append((socket.inet_ntop(socket.AF_INET, raw), int.from_bytes(port, "big")))
            pos += SOCKADDR_IN.size
        elif family == socket.AF_INET6 and pos + SOCKADDR_IN6.size <= len(data):
            _f, port, _flow, raw, _scope = SOCKADDR_IN6.unpack_from(data, pos)
            if raw[:12] == b"\0" * 10 + b"\xff\xff":
                host = socket.inet_ntop(socket.AF_INET, raw[12:])
            else:
                host = socket.inet_ntop(socket.AF_INET6, raw)
            out.append((host, int.from_bytes(port, "big")))
            pos += SOCKADDR_IN6.size
        else:
            break
    return out


def unpack_getaddrs(data):
    """
    The addresses in the answer to C{SCTP_GET_PEER_ADDRS} or
    C{SCTP_GET_LOCAL_ADDRS} (a C{struct sctp_getaddrs}).

    @return: a list of C{(host, port)}.
    """
    _assoc_id, count = GETADDRS.unpack_from(data)
    return unpack_sockaddrs(data[GETADDRS.size :], count)


def pack_events(data_io=False, association=False, address=False, send_failure=False,
                peer_error=False, shutdown=False):
    """
    C{struct sctp_event_subscribe} (its first 10 fields) for
    C{setsockopt(SOL_SCTP, SCTP_EVENTS, ...)}.
    """
    return EVENT_SUBSCRIBE.pack(
        data_io, association, address, send_failure, peer_error, shutdown, 0, 0, 0, 0
    )


@attrs.frozen
class PeerAddressParams:
    """
    C{struct sctp_paddrparams}: an association's (or one peer address's)
    heartbeat, retransmission, path MTU and SACK delay settings
    (C{SCTP_PEER_ADDR_PARAMS}, RFC 6458 section 8.1.12).

    @ivar assoc_id: the association (0 on a one-to-one socket).
    @ivar hbinterval: the heartbeat interval in milliseconds (the kernel
        adds the path's RTO and a jitter to it).
    @ivar pathmaxrxt: retransmissions (heartbeats included) after which a
        peer address is considered unreachable.
    @ivar pathmtu: the path MTU (with C{SPP_PMTUD_DISABLE}).
    @ivar sackdelay: the delayed SACK timeout in milliseconds.
    @ivar flags: C{SPP_HB_ENABLE}, C{SPP_HB_DISABLE}, ...
    @ivar address: C{(host, port)} of the peer address they are for, or
        C{None} for the whole association.
    """

    assoc_id: int = 0
    hbinterval: int = 0
    pathmaxrxt: int = 0
    pathmtu: int = 0
    sackdelay: int = 0
    flags: int = 0
    address: tuple = None

    @property
    def heartbeat_enabled(self):
        """
        Whether heartbeats are on (C{SPP_HB_ENABLE} in C{flags}).
        """
        return bool(self.flags & SPP_HB_ENABLE)


def pack_paddrparams(assoc_id=0, hbinterval=0, pathmaxrxt=0, flags=0, pathmtu=0, sackdelay=0,
                     address=None):
    """
    C{struct sctp_paddrparams} for C{setsockopt(SOL_SCTP,
    SCTP_PEER_ADDR_PARAMS, ...)}, or as the request of its C{getsockopt}.

    A zero C{hbinterval}, C{pathmaxrxt}, C{pathmtu} or C{sackdelay} leaves
    the kernel's value unchanged; C{hbinterval} is only taken with
    C{SPP_HB_ENABLE} in C{flags}.

    @param address: C{(host, port)} of one peer address, or C{None} (an
        all-zero C{sockaddr_storage}) for the whole association and all its
        paths.
    @return: 156 bytes.
    """
    storage = b"" if address is None else pack_sockaddr(*address)
    return PADDRPARAMS.pack(assoc_id, storage.ljust(128, b"\0"), hbinterval, pathmaxrxt,
                            pathmtu, sackdelay, flags, 0, 0)


def parse_paddrparams(data):
    """
    Read a C{struct sctp_paddrparams} (the answer of C{getsockopt(SOL_SCTP,
    SCTP_PEER_ADDR_PARAMS)}).

    @return: a L{PeerAddressParams}.
    @raise ValueError: if C{data} is shorter than the structure up to
        C{spp_flags} (the kernel's shortest form, 148 bytes).
    """
    if len(data) < PADDRPARAMS.size:
        if len(data) < 148:
            raise ValueError("struct sctp_paddrparams of %d bytes is too short" % len(data))
        data = bytes(data).ljust(PADDRPARAMS.size, b"\0")
    (assoc_id, storage, hbinterval, pathmaxrxt, pathmtu, sackdelay, flags, _flowlabel,
     _dscp) = PADDRPARAMS.unpack_from(data)
    found = unpack_sockaddrs(storage, 1)
    return PeerAddressParams(assoc_id, hbinterval, pathmaxrxt, pathmtu, sackdelay, flags,
                             found[0] if found else None)


# -- notifications ------------------------------------------------------------


@attrs.frozen
class AssociationChange:
    """
    C{SCTP_ASSOC_CHANGE}: an association came up, went down or restarted.

    @ivar state: C{SCTP_COMM_UP}, C{SCTP_COMM_LOST}, C{SCTP_RESTART},
        C{SCTP_SHUTDOWN_COMP} or C{SCTP_CANT_STR_ASSOC}.
    @ivar error: the SCTP error cause code, if any.
    @ivar outbound_streams: streams negotiated towards the peer.
    @ivar inbound_streams: streams negotiated from the peer.
    @ivar assoc_id: the association.
    """

    state: int
    error: int
    outbound_streams: int
    inbound_streams: int
    assoc_id: int


@attrs.frozen
class PeerAddressChange:
    """
    C{SCTP_PEER_ADDR_CHANGE}: an address of a multi-homed peer changed
    state.

    @ivar address: C{(host, port)}.
    @ivar state: C{SCTP_ADDR_AVAILABLE}, C{SCTP_ADDR_UNREACHABLE},
        C{SCTP_ADDR_REMOVED}, C{SCTP_ADDR_ADDED}, C{SCTP_ADDR_MADE_PRIM},
        C{SCTP_ADDR_CONFIRMED}, ...
    @ivar error: the error, if any.
    @ivar assoc_id: the association.
    """

    address: tuple
    state: int
    error: int
    assoc_id: int


@attrs.frozen
class ShutdownEvent:
    """
    C{SCTP_SHUTDOWN_EVENT}: the peer sent SHUTDOWN; no more data can be
    sent on the association.
    """

    assoc_id: int


@attrs.frozen
class OtherNotification:
    """
    A notification this module does not interpret.

    @ivar type: its C{sn_type}.
    @ivar data: its bytes, header included.
    """

    type: int
    data: bytes


def parse_notification(data):
    """
    Decode a notification (a message received with C{MSG_NOTIFICATION}).

    @param data: the notification's bytes.
    @return: an L{AssociationChange}, L{PeerAddressChange},
        L{ShutdownEvent} or L{OtherNotification}.
    @raise ValueError: if C{data} is shorter than its layout.
    """
    if len(data) < SN_HEADER.size:
        raise ValueError("SCTP notification of %d bytes is shorter than its header" % len(data))
    sn_type, _flags, _length = SN_HEADER.unpack_from(data)
    try:
        if sn_type == SCTP_ASSOC_CHANGE:
            _t, _f, _l, state, error, outs, ins, assoc_id = ASSOC_CHANGE.unpack_from(data)
            return AssociationChange(state, error, outs, ins, assoc_id)
        if sn_type == SCTP_PEER_ADDR_CHANGE:
            _t, _f, _l, storage, state, error, assoc_id = PADDR_CHANGE.unpack_from(data)
            addresses = unpack_sockaddrs(storage, 1)
            return PeerAddressChange(addresses[0] if addresses else None, state, error, assoc_id)
        if sn_type == SCTP_SHUTDOWN_EVENT:
            return ShutdownEvent(SHUTDOWN_EVENT.unpack_from(data)[3])
    except struct.error:
        raise ValueError(
            "SCTP notification 0x%04x of %d bytes is too short" % (sn_type, len(data))
        ) from None
    return OtherNotification(sn_type, bytes(data))
