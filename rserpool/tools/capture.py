"""
Extract ASAP and ENRP message payloads from packet captures.

This module reads classic pcap and pcapng files with nothing but the
standard library and yields the bytes of every ASAP (RFC 5352) and ENRP
(RFC 5353) message it finds, with the frame number, time and addresses.  It
does not decode the messages: that is L{rserpool.wire}'s job.

What counts as an ASAP or ENRP message:

  - SCTP: every DATA (and I-DATA, RFC 8260) user message whose payload
    protocol identifier is 11 (ASAP) or 12 (ENRP), as RFC 5352 section 5
    and RFC 5353 section 4 assign them; and, because some stacks leave the
    PPID at 0, a user message with PPID 0 to or from port 3863 (ASAP) or
    9901 (ENRP).  Bundled chunks are reported one by one; fragmented user
    messages are reassembled.
  - UDP: every datagram to or from port 3863 (ASAP Server Announce) or
    9901 (ENRP Presence over multicast).
  - TCP: the byte stream to or from port 3863 or 9901, cut into messages by
    the common header C{type:8 flags:8 length:16}.

Records come out in capture order.  L{iter_records} yields
L{CapturedMessage} and L{CaptureWarning} records interleaved;
L{iter_messages} yields only the messages and can collect the warnings in a
list.  A file that is not a capture raises L{CaptureError} when the
iterator is created; nothing inside a readable file raises: damaged packets
are skipped with a warning.
"""
import heapq
import os
import socket
import struct

import attrs

from rserpool.codes import ASAP_PORT, ASAP_PPID, ENRP_PORT, ENRP_PPID

__all__ = [
    "MAX_STREAM_BUFFER",
    "MAX_PENDING_BYTES",
    "CaptureError",
    "CapturedMessage",
    "CaptureWarning",
    "iter_records",
    "iter_messages",
]


#: Most bytes held for one reassembly: one TCP direction's out-of-order
#: segments, or one SCTP stream's fragments.  Beyond it the stream is given
#: up with a warning.
MAX_STREAM_BUFFER = 1 << 20
#: Most bytes held for all reassembly at once (IP fragments, SCTP fragments,
#: TCP segments); beyond it new pieces are dropped with a warning.
MAX_PENDING_BYTES = 32 << 20
#: A record or block bigger than this means the file is corrupt (Wireshark
#: gives up at the same size for pcapng blocks).
MAX_RECORD_SIZE = 16 << 20

# Each piece held for reassembly costs this much on top of its bytes, so
# that empty pieces cannot pile up unbounded.
_OVERHEAD = 64
_MAX_FRAGMENTS = 1024  # SCTP fragments of one stream, or of one I-DATA message
_MAX_IP_PIECES = 256  # fragments of one IP datagram
_MAX_IP_DATAGRAMS = 256  # incomplete IP datagrams kept for reassembly
_MAX_SCTP_STREAMS = 1024  # SCTP streams with incomplete user messages
_MAX_TCP_STREAMS = 16384  # TCP directions tracked (closed ones included)

_PORT_PROTOCOL = {ASAP_PORT: "asap", ENRP_PORT: "enrp"}
_PPID_PROTOCOL = {ASAP_PPID: "asap", ENRP_PPID: "enrp"}


class CaptureError(Exception):
    """
    The capture cannot be read at all: the file cannot be opened, is not a
    pcap or pcapng file, or its file header is truncated.

    C{str()} of it is one line naming the file and the cause.
    """


@attrs.frozen
class CapturedMessage:
    """
    One ASAP or ENRP message payload found in a capture.

    @ivar frame: the 1-based number of the frame that carried the payload,
    as Wireshark numbers it; for a message reassembled from several
    frames (SCTP fragments, TCP segments, IP fragments), the frame that
    completed it.

    @ivar timestamp: that frame's time, in seconds since the epoch (0.0 for
    pcapng Simple Packet Blocks, which have no time).

    @ivar protocol: C{"asap"} or C{"enrp"}.

    @ivar transport: C{"sctp"}, C{"udp"} or C{"tcp"}.

    @ivar src: the sender as C{(address, port)}; the address is a string
    such as C{"10.0.0.1"} or C{"2001:db8::1"}.

    @ivar dst: the receiver as C{(address, port)}.

    @ivar payload: the bytes.  For SCTP, one user message (one DATA chunk or
    a reassembled fragmented message); for UDP, one datagram's payload;
    neither is split further.  For TCP, one message cut at the common
    header's length (padding excluded).

    @ivar ppid: the SCTP payload protocol identifier, or C{None} for UDP and
    TCP.
    """

    frame: int
    timestamp: float
    protocol: str
    transport: str
    src: tuple
    dst: tuple
    payload: bytes
    ppid: object = None


@attrs.frozen
class CaptureWarning:
    """
    Something in a readable capture that was skipped: a truncated or
    malformed packet, an unsupported link type, a TCP stream whose framing
    broke, a reassembly buffer that overflowed, a damaged record that ends
    the file early.

    @ivar frame: the frame it concerns (the last frame read for problems of
    the file itself; 0 before the first frame).

    @ivar timestamp: that frame's time, or 0.0.

    @ivar message: one line describing what was skipped and why.
    """

    frame: int
    timestamp: float
    message: str


# --------------------------------------------------------------------------
# Files


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000000),
    b"\xa1\xb2\xc3\xd4": (">", 1000000),
    b"\x4d\x3c\xb2\xa1": ("<", 1000000000),
    b"\xa1\xb2\x3c\x4d": (">", 1000000000),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
# Blocks that are not packets but that Wireshark (4.0) shows as frames, so
# they count in the frame numbers: systemd journal export, custom blocks,
# sysdig events.
_PCAPNG_OTHER_FRAMES = frozenset((0x9, 0xBAD, 0x40000BAD, 0x204, 0x216, 0x221))


def _reader(f):
    """
    A read function that returns exactly C{n} bytes unless the file ends.
    """
    read = f.read

    def read_exact(n):
        data = read(n)
        if data is None:
            data = b""
        if not isinstance(data, bytes):
            if isinstance(data, str):
                raise CaptureError("capture file object is in text mode; open it with 'rb'")
            data = bytes(data)
        if 0 < len(data) < n:
            parts = [data]
            got = len(data)
            while got < n:
                more = read(n - got)
                if not more:
                    break
                parts.append(bytes(more))
                got += len(more)
            data = b"".join(parts)
        return data

    return read_exact


class _Frames:
    """
    The frames of one capture file: C{(number, timestamp, linktype, data)}.

    The constructor reads the file header and raises L{CaptureError} if it
    is not a capture; iterating reads the records.  Problems with records
    are reported through C{warn(frame, message)}, after which reading stops
    if the file cannot be followed any further.
    """

    def __init__(self, f, name, warn):
        self._read = _reader(f)
        self._name = name
        self._warn = warn
        self.frame = 0
        head = self._read(4)
        if not head:
            raise CaptureError("{}: empty file, not a pcap or pcapng capture".format(name))
        if head in _PCAP_MAGIC:
            rest = self._read(20)
            if len(rest) < 20:
                raise CaptureError("{}: truncated pcap file header".format(name))
            endian, self._divisor = _PCAP_MAGIC[head]
            network = struct.unpack(endian + "I", rest[16:20])[0]
            # The pcap file format: the link type is the low 16 bits; the
            # high bits may say how long an FCS the frames carry.
            self._linktype = network & 0xFFFF
            self._record = struct.Struct(endian + "IIII")
            self._iter = self._pcap()
        elif head == _PCAPNG_SHB:
            rest = self._read(8)
            if len(rest) < 8:
                raise CaptureError("{}: truncated pcapng section header".format(name))
            endian = _PCAPNG_BOM.get(rest[4:8])
            if endian is None:
                raise CaptureError("{}: bad pcapng byte-order magic".format(name))
            problem = self._section(endian, rest)
            if problem:
                raise CaptureError("{}: {}".format(name, problem))
            self._iter = self._pcapng()
        else:
            raise CaptureError("{}: not a pcap or pcapng capture (magic {})".format(name, head.hex()))

    def __iter__(self):
        return self._iter

    # classic pcap

    def _pcap(self):
        read = self._read
        record = self._record.unpack
        divisor = self._divisor
        linktype = self._linktype
        frame = 0
        while True:
            header = read(16)
            if len(header) < 16:
                if header:
                    self._warn(frame, "capture ends in the middle of a record header")
                return
            sec, frac, caplen, _ = record(header)
            if caplen > MAX_RECORD_SIZE:
                self._warn(frame, "record {} claims {} bytes; the file is damaged from here on".format(frame + 1, caplen))
                return
            data = read(caplen)
            if len(data) < caplen:
                self._warn(frame, "capture ends in the middle of frame {}".format(frame + 1))
                return
            frame += 1
            self.frame = frame
            yield frame, sec + frac / divisor, linktype, data

    # pcapng

    def _section(self, endian, rest):
        """
        Read the rest of a Section Header Block whose first 12 bytes were
        read (C{rest} holds bytes 4 to 12); return a problem or C{None}.
        """
        blen = struct.unpack(endian + "I", rest[:4])[0]
        if blen < 28 or blen % 4 or blen > MAX_RECORD_SIZE:
            return "bad pcapng section header length {}".format(blen)
        body = self._read(blen - 12)
        if len(body) < blen - 12:
            return "truncated pcapng section header"
        major = struct.unpack(endian + "H", body[:2])[0]
        if major != 1:
            return "unsupported pcapng version {}".format(major)
        self._endian = endian
        self._block = struct.Struct(endian + "II")
        # (linktype, divisor, offset) per Interface Description Block
        self._interfaces = []
        return None

    def _pcapng(self):
        read = self._read
        frame = 0
        while True:
            head = read(8)
            if len(head) < 8:
                if head:
                    self._warn(frame, "capture ends in the middle of a pcapng block header")
                return
            if head[:4] == _PCAPNG_SHB:
                # A new section, perhaps in the other byte order.
                bom = read(4)
                endian = _PCAPNG_BOM.get(bom)
                if endian is None:
                    self._warn(frame, "bad pcapng byte-order magic in a later section; stopping")
                    return
                problem = self._section(endian, head[4:8] + bom)
                if problem:
                    self._warn(frame, problem + "; stopping")
                    return
                continue
            btype, blen = self._block.unpack(head)
            if blen < 12 or blen % 4 or blen > MAX_RECORD_SIZE:
                self._warn(frame, "bad pcapng block length {}; the file is damaged from here on".format(blen))
                return
            body = read(blen - 8)
            if len(body) < blen - 8:
                self._warn(frame, "capture ends in the middle of a pcapng block")
                return
            if btype == 6 or btype == 3 or btype == 2:
                frame += 1
                self.frame = frame
                packet = self._packet(btype, body, frame)
                if packet is not None:
                    yield (frame,) + packet
            elif btype == 1:
                self._interface(body)
            elif btype in _PCAPNG_OTHER_FRAMES:
                frame += 1
                self.frame = frame

    def _interface(self, body):
        endian = self._endian
        if len(body) < 12:
            self._warn(self.frame, "malformed pcapng interface description")
            self._interfaces.append((None, 1000000, 0))
            return
        linktype = struct.unpack(endian + "H", body[:2])[0]
        divisor = 1000000
        offset = 0
        pos = 8
        end = len(body) - 4
        while pos + 4 <= end:
            code, olen = struct.unpack(endian + "HH", body[pos:pos + 4])
            if code == 0:
                break
            value = body[pos + 4:pos + 4 + olen]
            if code == 9 and len(value) >= 1:  # if_tsresol
                v = value[0]
                divisor = 1 << (v & 0x7F) if v & 0x80 else 10 ** v
            elif code == 14 and len(value) >= 8:  # if_tsoffset
                offset = struct.unpack(endian + "q", value[:8])[0]
            pos += 4 + ((olen + 3) & ~3)
        self._interfaces.append((linktype, divisor, offset))

    def _packet(self, btype, body, frame):
        endian = self._endian
        size = len(body) - 4  # without the trailing length
        if btype == 6:  # Enhanced Packet Block
            if size < 20:
                self._warn(frame, "malformed pcapng enhanced packet block")
                return None
            ifid, high, low, caplen = struct.unpack(endian + "IIII", body[:16])
            start = 20
        elif btype == 3:  # Simple Packet Block: interface 0, no time
            if size < 4:
                self._warn(frame, "malformed pcapng simple packet block")
                return None
            ifid = high = low = 0
            caplen = min(struct.unpack(endian + "I", body[:4])[0], size - 4)
            start = 4
        else:  # Obsolete Packet Block
            if size < 20:
                self._warn(frame, "malformed pcapng packet block")
                return None
            ifid = struct.unpack(endian + "H", body[:2])[0]
            high, low, caplen = struct.unpack(endian + "III", body[4:16])
            start = 20
        if caplen > size - start:
            self._warn(frame, "pcapng packet block shorter than its captured length")
            return None
        if ifid >= len(self._interfaces):
            self._warn(frame, "packet on undefined pcapng interface {}".format(ifid))
            return None
        linktype, divisor, offset = self._interfaces[ifid]
        if linktype is None:
            return None
        if btype == 3:
            timestamp = 0.0
        else:
            timestamp = ((high << 32) | low) / divisor + offset
        return timestamp, linktype, body[start:start + caplen]


# --------------------------------------------------------------------------
# Packets


def _address(raw):
    if len(raw) == 4:
        return socket.inet_ntoa(raw)
    return socket.inet_ntop(socket.AF_INET6, raw)


def _serial(a, b):
    """
    C{a - b} in 32-bit serial number arithmetic (RFC 1982), signed.
    """
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d & 0x80000000 else d


_HHI = struct.Struct("!HHI")
_IHHI = struct.Struct("!IHHI")
_IHHII = struct.Struct("!IHHII")
_HHH = struct.Struct("!HHH")
_HHIIH = struct.Struct("!HHIIH")

_VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
# IPv6 extension headers with the common (next, length in 8 octets - 1)
# layout: hop-by-hop, routing, destination options, mobility, HIP, shim6.
_IPV6_EXTENSIONS = frozenset((0, 43, 60, 135, 139, 140))
_BSD_AF_INET6 = frozenset((10, 24, 28, 30))  # Linux, *BSD, FreeBSD, macOS


class _IPReassembly:
    """
    The fragments of one IP datagram (RFC 791, RFC 8200 section 4.5).
    """

    __slots__ = ("pieces", "end", "nbytes", "nxt")

    def __init__(self):
        self.pieces = {}
        self.end = None
        self.nbytes = 0
        self.nxt = None


class _SCTPStream:
    """
    DATA fragments of one SCTP stream in one direction, by TSN.
    """

    __slots__ = ("fragments", "nbytes")

    def __init__(self):
        self.fragments = {}  # tsn -> (flags, ppid, payload)
        self.nbytes = 0


class _IDataMessage:
    """
    I-DATA fragments of one user message (RFC 8260), by FSN.
    """

    __slots__ = ("fragments", "nbytes", "ppid", "last", "ignore")

    def __init__(self):
        self.fragments = {}
        self.nbytes = 0
        self.ppid = None
        self.last = None
        self.ignore = False


class _TCPStream:
    """
    One direction of a TCP connection to or from an RSerPool port.
    """

    __slots__ = ("isn", "next", "pos", "buf", "ooo", "heap", "nbytes", "skip", "fin", "state", "offset")

    def __init__(self, isn, next_seq):
        self.isn = isn
        self.next = next_seq  # sequence number of the next byte expected
        self.pos = 0  # its position in the stream, which does not wrap
        self.buf = bytearray()
        self.ooo = {}  # position -> payload of segments beyond self.pos
        self.heap = []  # the positions in self.ooo, as a heap
        self.nbytes = 0  # bytes held in self.ooo, with _OVERHEAD each
        self.skip = 0  # padding still to drop from the stream
        self.fin = None
        self.state = "open"  # "open", "closed", "dead"
        self.offset = 0  # stream offset of self.buf[0]


class _Decoder:
    """
    Turns frames into records, keeping the reassembly state.
    """

    def __init__(self, out):
        self.out = out
        self.frame = 0
        self.timestamp = 0.0
        self.pending = 0
        self.ip_frags = {}
        self.sctp_streams = {}
        self.idata = {}
        self.tcp = {}
        self.bad_linktypes = set()
        self.link = {
            1: self.ethernet,
            0: self.null,
            108: self.loop,
            113: self.sll,
            276: self.sll2,
            101: self.raw,
            12: self.raw,
            14: self.raw,
            228: self.raw,
            229: self.raw,
        }

    def warn(self, message):
        self.out.append(CaptureWarning(self.frame, self.timestamp, message))

    def emit(self, protocol, transport, src, sport, dst, dport, payload, ppid=None):
        self.out.append(
            CapturedMessage(
                self.frame,
                self.timestamp,
                protocol,
                transport,
                (_address(src), sport),
                (_address(dst), dport),
                bytes(payload),
                ppid,
            )
        )

    def charge(self, nbytes):
        """
        Reserve C{nbytes} of the global reassembly budget, or say no.
        """
        if self.pending + nbytes > MAX_PENDING_BYTES:
            self.warn("reassembly memory limit reached; a fragment or segment was dropped")
            return False
        self.pending += nbytes
        return True

    # link layers

    def packet(self, frame, timestamp, linktype, data):
        self.frame = frame
        self.timestamp = timestamp
        handler = self.link.get(linktype)
        if handler is None:
            if linktype not in self.bad_linktypes:
                self.bad_linktypes.add(linktype)
                self.warn("link type {} is not supported; its frames are skipped".format(linktype))
            return
        handler(data)

    def ethernet(self, data):
        if len(data) < 14:
            self.warn("truncated Ethernet header")
            return
        self.ethertype((data[12] << 8) | data[13], data, 14)

    def sll(self, data):
        if len(data) < 16:
            self.warn("truncated Linux cooked header")
            return
        self.ethertype((data[14] << 8) | data[15], data, 16)

    def sll2(self, data):
        if len(data) < 20:
            self.warn("truncated Linux cooked v2 header")
            return
        self.ethertype((data[0] << 8) | data[1], data, 20)

    def ethertype(self, etype, data, off):
        for _ in range(8):
            if etype == 0x0800:
                self.ipv4(data, off)
                return
            if etype == 0x86DD:
                self.ipv6(data, off)
                return
            if etype in _VLAN_TYPES:  # IEEE 802.1Q / 802.1ad tags
                if len(data) < off + 4:
                    self.warn("truncated VLAN tag")
                    return
                etype = (data[off + 2] << 8) | data[off + 3]
                off += 4
            elif etype <= 1500 and data[off:off + 3] == b"\xaa\xaa\x03" and len(data) >= off + 8:
                # 802.3 length with an LLC/SNAP header carrying an ethertype
                etype = (data[off + 6] << 8) | data[off + 7]
                off += 8
            else:
                return

    def null(self, data):
        if len(data) < 4:
            self.warn("truncated loopback header")
            return
        # The address family is in the capturing host's byte order.
        family = struct.unpack("<I", data[:4])[0]
        if family > 0xFFFF:
            family = struct.unpack(">I", data[:4])[0]
        self.family(family, data)

    def loop(self, data):
        if len(data) < 4:
            self.warn("truncated loopback header")
            return
        self.family(struct.unpack(">I", data[:4])[0], data)

    def family(self, family, data):
        if family == 2:
            self.ipv4(data, 4)
        elif family in _BSD_AF_INET6:
            self.ipv6(data, 4)

    def raw(self, data):
        if not data:
            return
        version = data[0] >> 4
        if version == 4:
            self.ipv4(data, 0)
        elif version == 6:
            self.ipv6(data, 0)

    # network layer

    def ipv4(self, data, off):
        n = len(data)
        if n - off < 20:
            self.warn("truncated IPv4 header")
            return
        vihl = data[off]
        ihl = (vihl & 15) * 4
        if vihl >> 4 != 4 or ihl < 20:
            self.warn("malformed IPv4 header")
            return
        total = (data[off + 2] << 8) | data[off + 3]
        if total == 0:
            total = n - off  # segmentation offload: length left at 0
        if total < ihl:
            self.warn("malformed IPv4 total length")
            return
        end = off + total
        truncated = end > n
        if truncated:
            end = n
        if off + ihl > end:
            self.warn("truncated IPv4 header")
            return
        fragment = (data[off + 6] << 8) | data[off + 7]
        proto = data[off + 9]
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        payload = data[off + ihl:end]
        if fragment & 0x3FFF:
            if truncated:
                self.warn("truncated IPv4 fragment")
                return
            key = (4, src, dst, proto, data[off + 4:off + 6])
            whole = self.ip_fragment(key, (fragment & 0x1FFF) * 8, fragment & 0x2000, payload, proto)
            if whole is None:
                return
            payload = whole[0]
        self.transport(proto, src, dst, payload, truncated)

    def ipv6(self, data, off):
        n = len(data)
        if n - off < 40:
            self.warn("truncated IPv6 header")
            return
        if data[off] >> 4 != 6:
            self.warn("malformed IPv6 header")
            return
        plen = (data[off + 4] << 8) | data[off + 5]
        nxt = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        start = off + 40
        end = start + plen if plen else n  # 0: a jumbogram (RFC 2675)
        truncated = end > n
        if truncated:
            end = n
        payload = data[start:end]
        pos = 0
        for _ in range(64):
            if nxt in _IPV6_EXTENSIONS or nxt == 51:
                if len(payload) - pos < 8:
                    self.warn("truncated IPv6 extension header")
                    return
                if nxt == 51:  # AH: length in 4-octet units minus 2
                    size = (payload[pos + 1] + 2) * 4
                else:
                    size = (payload[pos + 1] + 1) * 8
                nxt = payload[pos]
                pos += size
            elif nxt == 44:
                if len(payload) - pos < 8:
                    self.warn("truncated IPv6 fragment header")
                    return
                following = payload[pos]
                offset = ((payload[pos + 2] << 8) | payload[pos + 3]) & 0xFFF8
                more = payload[pos + 3] & 1
                rest = payload[pos + 8:]
                if offset == 0 and not more:
                    # RFC 6946 atomic fragment: the whole datagram
                    payload, nxt, pos = rest, following, 0
                    continue
                if truncated:
                    self.warn("truncated IPv6 fragment")
                    return
                key = (6, src, dst, payload[pos + 4:pos + 8])
                whole = self.ip_fragment(key, offset, more, rest, following)
                if whole is None:
                    return
                payload, nxt = whole
                pos = 0
            else:
                break
        else:
            self.warn("too many IPv6 extension headers")
            return
        if pos > len(payload):
            self.warn("truncated IPv6 extension header")
            return
        self.transport(nxt, src, dst, payload[pos:] if pos else payload, truncated)

    def ip_fragment(self, key, offset, more, piece, nxt):
        """
        Add a fragment; return C{(datagram, next header)} when complete.
        """
        table = self.ip_frags
        state = table.get(key)
        if state is None:
            if len(table) >= _MAX_IP_DATAGRAMS:
                old = next(iter(table))
                self.drop_ip(old)
                self.warn("too many incomplete IP datagrams; dropped the oldest")
            state = table[key] = _IPReassembly()
        if offset + len(piece) > 0x10000 + 0xFFFF:
            self.warn("IP fragment beyond the largest datagram")
            return None
        old = state.pieces.get(offset)
        if old is not None and len(old) >= len(piece):
            return None  # a duplicate
        if old is None and len(state.pieces) >= _MAX_IP_PIECES:
            self.drop_ip(key)
            self.warn("IP datagram in more than {} fragments; dropped it".format(_MAX_IP_PIECES))
            return None
        grow = len(piece) - len(old) if old is not None else len(piece) + _OVERHEAD
        if not self.charge(grow):
            return None
        state.pieces[offset] = piece
        state.nbytes += grow
        if offset == 0:
            state.nxt = nxt
        if not more:
            state.end = offset + len(piece)
        if state.end is None or 0 not in state.pieces:
            return None
        parts = []
        pos = 0
        for start in sorted(state.pieces):
            if start > pos:
                return None  # a hole
            data = state.pieces[start]
            if start + len(data) > pos:
                parts.append(data[pos - start:])
                pos = start + len(data)
        if pos < state.end:
            return None
        self.drop_ip(key)
        return b"".join(parts)[:state.end], state.nxt

    def drop_ip(self, key):
        state = self.ip_frags.pop(key)
        self.pending -= state.nbytes

    def transport(self, proto, src, dst, segment, truncated):
        if proto == 132:
            self.sctp(src, dst, segment)
        elif proto == 17:
            self.udp(src, dst, segment)
        elif proto == 6:
            self.tcp_segment(src, dst, segment, truncated)

    # SCTP (RFC 9260)

    def sctp(self, src, dst, seg):
        n = len(seg)
        if n < 12:
            self.warn("truncated SCTP common header")
            return
        sport, dport, vtag = _HHI.unpack_from(seg)
        pos = 12
        while pos + 4 <= n:
            ctype = seg[pos]
            flags = seg[pos + 1]
            clen = (seg[pos + 2] << 8) | seg[pos + 3]
            if clen < 4:
                self.warn("malformed SCTP chunk length {}".format(clen))
                return
            if pos + clen > n:
                if ctype == 0 or ctype == 64:
                    self.warn("truncated SCTP DATA chunk")
                return
            if ctype == 0:
                if clen < 16:
                    self.warn("malformed SCTP DATA chunk")
                else:
                    tsn, sid, _, ppid = _IHHI.unpack_from(seg, pos + 4)
                    self.data(src, sport, dst, dport, vtag, flags, tsn, sid, ppid, seg[pos + 16:pos + clen])
            elif ctype == 64:
                if clen < 20:
                    self.warn("malformed SCTP I-DATA chunk")
                else:
                    _, sid, _, mid, ppid = _IHHII.unpack_from(seg, pos + 4)
                    self.idata_chunk(src, sport, dst, dport, vtag, flags, sid, mid, ppid, seg[pos + 20:pos + clen])
            pos += (clen + 3) & ~3

    def protocol(self, ppid, sport, dport):
        protocol = _PPID_PROTOCOL.get(ppid)
        if protocol is None and ppid == 0:
            # Some stacks leave the PPID at 0: go by the well-known port.
            protocol = _PORT_PROTOCOL.get(dport) or _PORT_PROTOCOL.get(sport)
        return protocol

    def data(self, src, sport, dst, dport, vtag, flags, tsn, sid, ppid, payload):
        protocol = self.protocol(ppid, sport, dport)
        if protocol is None:
            return
        if flags & 3 == 3:
            self.emit(protocol, "sctp", src, sport, dst, dport, payload, ppid)
            return
        # RFC 9260 section 6.9: the fragments of a user message have
        # consecutive TSNs, the first with B set, the last with E set.
        # The verification tag names the association even across paths.
        key = (sport, dport, vtag, sid)
        table = self.sctp_streams
        stream = table.get(key)
        if stream is None:
            if len(table) >= _MAX_SCTP_STREAMS:
                self.drop_sctp(next(iter(table)))
                self.warn("too many SCTP streams with incomplete messages; dropped the oldest")
            stream = table[key] = _SCTPStream()
        fragments = stream.fragments
        if tsn in fragments:
            return  # a retransmission
        size = len(payload) + _OVERHEAD
        if stream.nbytes + size > MAX_STREAM_BUFFER or len(fragments) >= _MAX_FRAGMENTS:
            self.drop_sctp(key)
            self.warn("SCTP stream {} fragments exceed {} bytes; dropped them".format(sid, MAX_STREAM_BUFFER))
            return
        if not self.charge(size):
            return
        fragments[tsn] = (flags, payload)
        stream.nbytes += size
        first = tsn
        while not fragments[first][0] & 2:
            before = (first - 1) & 0xFFFFFFFF
            if before not in fragments or fragments[before][0] & 1:
                return
            first = before
        last = tsn
        while not fragments[last][0] & 1:
            after = (last + 1) & 0xFFFFFFFF
            if after not in fragments or fragments[after][0] & 2:
                return
            last = after
        parts = []
        t = first
        while True:
            part = fragments.pop(t)[1]
            parts.append(part)
            stream.nbytes -= len(part) + _OVERHEAD
            self.pending -= len(part) + _OVERHEAD
            if t == last:
                break
            t = (t + 1) & 0xFFFFFFFF
        if not fragments:
            del table[key]
        self.emit(protocol, "sctp", src, sport, dst, dport, b"".join(parts), ppid)

    def drop_sctp(self, key):
        stream = self.sctp_streams.pop(key)
        self.pending -= stream.nbytes

    def idata_chunk(self, src, sport, dst, dport, vtag, flags, sid, mid, ppid_fsn, payload):
        if flags & 3 == 3:
            protocol = self.protocol(ppid_fsn, sport, dport)
            if protocol is not None:
                self.emit(protocol, "sctp", src, sport, dst, dport, payload, ppid_fsn)
            return
        # RFC 8260 section 2.1: the B fragment carries the PPID and FSN 0.
        fsn = 0 if flags & 2 else ppid_fsn
        key = (sport, dport, vtag, sid, flags & 4, mid)
        table = self.idata
        message = table.get(key)
        if message is None:
            if len(table) >= _MAX_SCTP_STREAMS:
                self.drop_idata(next(iter(table)))
                self.warn("too many incomplete SCTP I-DATA messages; dropped the oldest")
            message = table[key] = _IDataMessage()
        if flags & 2:
            message.ppid = ppid_fsn
            if self.protocol(ppid_fsn, sport, dport) is None:
                message.ignore = True
                self.pending -= message.nbytes
                message.nbytes = 0
                message.fragments.clear()
        if flags & 1:
            message.last = fsn
        if message.ignore:
            if message.last is not None:
                del table[key]
            return
        if fsn in message.fragments:
            return
        size = len(payload) + _OVERHEAD
        if message.nbytes + size > MAX_STREAM_BUFFER or len(message.fragments) >= _MAX_FRAGMENTS:
            self.drop_idata(key)
            self.warn("SCTP I-DATA message exceeds {} bytes; dropped it".format(MAX_STREAM_BUFFER))
            return
        if not self.charge(size):
            return
        message.fragments[fsn] = payload
        message.nbytes += size
        if message.ppid is None or message.last is None or len(message.fragments) != message.last + 1:
            return
        if any(i not in message.fragments for i in range(message.last + 1)):
            return
        self.drop_idata(key)
        whole = b"".join(message.fragments[i] for i in range(message.last + 1))
        protocol = self.protocol(message.ppid, sport, dport)
        self.emit(protocol, "sctp", src, sport, dst, dport, whole, message.ppid)

    def drop_idata(self, key):
        message = self.idata.pop(key)
        self.pending -= message.nbytes

    # UDP

    def udp(self, src, dst, seg):
        if len(seg) < 8:
            self.warn("truncated UDP header")
            return
        sport, dport, ulen = _HHH.unpack_from(seg)
        protocol = _PORT_PROTOCOL.get(dport) or _PORT_PROTOCOL.get(sport)
        if protocol is None:
            return
        if ulen == 0:
            ulen = len(seg)  # RFC 2675 jumbogram
        if ulen < 8:
            self.warn("malformed UDP length {}".format(ulen))
            return
        if ulen > len(seg):
            self.warn("truncated UDP datagram to or from port {}".format(dport if dport in _PORT_PROTOCOL else sport))
            return
        self.emit(protocol, "udp", src, sport, dst, dport, seg[8:ulen])

    # TCP

    def tcp_segment(self, src, dst, seg, truncated):
        if len(seg) < 20:
            self.warn("truncated TCP header")
            return
        sport, dport, seq, _, offflags = _HHIIH.unpack_from(seg)
        protocol = _PORT_PROTOCOL.get(dport) or _PORT_PROTOCOL.get(sport)
        if protocol is None:
            return
        hlen = (offflags >> 12) * 4
        if hlen < 20 or hlen > len(seg):
            self.warn("malformed TCP header")
            return
        if truncated:
            self.warn("TCP segment truncated by the capture; treated as lost")
            return
        flags = offflags & 0x3F
        payload = seg[hlen:]
        key = (src, sport, dst, dport)
        table = self.tcp
        stream = table.get(key)
        if flags & 0x04:  # RST
            if stream is not None and stream.state == "open" and (stream.buf or stream.ooo):
                self.warn(self.tcp_name(key) + ": reset in the middle of a message")
            self.drop_tcp(key)
            return
        if flags & 0x02:  # SYN
            if stream is None or stream.isn != seq:
                self.drop_tcp(key)
                stream = self.new_tcp(key, seq, (seq + 1) & 0xFFFFFFFF)
            seq = (seq + 1) & 0xFFFFFFFF
        if stream is None:
            if not payload:
                return
            # Joined mid-stream: hope this segment starts a message.
            stream = self.new_tcp(key, None, seq)
        if stream.state != "open":
            return
        if payload:
            self.tcp_data(key, stream, protocol, seq, payload)
        if flags & 0x01 and stream.state == "open":  # FIN
            stream.fin = (seq + len(payload)) & 0xFFFFFFFF
        if stream.fin is not None and stream.fin == stream.next and stream.state == "open":
            if stream.buf and stream.skip == 0:
                self.warn(self.tcp_name(key) + ": connection closed in the middle of a message")
            self.close_tcp(stream, "closed")

    def tcp_name(self, key):
        src, sport, dst, dport = key
        return "TCP {}:{} -> {}:{}".format(_address(src), sport, _address(dst), dport)

    def new_tcp(self, key, isn, next_seq):
        table = self.tcp
        if len(table) >= _MAX_TCP_STREAMS:
            self.drop_tcp(next(iter(table)))
        stream = table[key] = _TCPStream(isn, next_seq)
        return stream

    def drop_tcp(self, key):
        stream = self.tcp.pop(key, None)
        if stream is not None:
            self.pending -= stream.nbytes + len(stream.buf)

    def close_tcp(self, stream, state):
        self.pending -= stream.nbytes + len(stream.buf)
        stream.ooo = {}
        stream.heap = []
        stream.nbytes = 0
        stream.buf = bytearray()
        stream.state = state

    def tcp_data(self, key, stream, protocol, seq, payload):
        rel = _serial(seq, stream.next)
        if rel < 0:
            if rel + len(payload) <= 0:
                return  # a retransmission of bytes already in the stream
            payload = payload[-rel:]
            rel = 0
        if rel > 0:
            if rel > MAX_STREAM_BUFFER:
                self.warn(self.tcp_name(key) + ": segment far beyond the expected sequence number; ignored")
                return
            position = stream.pos + rel
            old = stream.ooo.get(position)
            if old is not None and len(old) >= len(payload):
                return
            grow = len(payload) - len(old) if old is not None else len(payload) + _OVERHEAD
            if stream.nbytes + grow > MAX_STREAM_BUFFER:
                self.warn(self.tcp_name(key) + ": more than {} bytes out of order; giving up on this stream".format(MAX_STREAM_BUFFER))
                self.close_tcp(stream, "dead")
                return
            if not self.charge(grow):
                return
            if old is None:
                heapq.heappush(stream.heap, position)
            stream.ooo[position] = payload
            stream.nbytes += grow
            return
        self.tcp_append(stream, payload)
        heap = stream.heap
        ooo = stream.ooo
        while heap and heap[0] <= stream.pos:
            start = heapq.heappop(heap)
            data = ooo.pop(start)
            size = len(data) + _OVERHEAD
            stream.nbytes -= size
            self.pending -= size
            r = start - stream.pos
            if r + len(data) > 0:
                self.tcp_append(stream, data[-r:] if r else data)
        self.tcp_frame(key, stream, protocol)

    def tcp_append(self, stream, data):
        stream.next = (stream.next + len(data)) & 0xFFFFFFFF
        stream.pos += len(data)
        if stream.skip:
            if len(data) <= stream.skip:
                stream.skip -= len(data)
                stream.offset += len(data)
                return
            data = data[stream.skip:]
            stream.offset += stream.skip
            stream.skip = 0
        stream.buf += data
        self.pending += len(data)

    def tcp_frame(self, key, stream, protocol):
        """
        Cut the in-order bytes into messages: RFC 5352 section 2.1's
        common header C{type:8 flags:8 length:16}, padded to 4 bytes.
        """
        buf = stream.buf
        size = len(buf)
        pos = 0
        src, sport, dst, dport = key
        while size - pos >= 4:
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length < 4:
                self.warn(
                    "{}: message length {} < 4 at stream offset {}; ignoring the rest of this stream".format(
                        self.tcp_name(key), length, stream.offset + pos
                    )
                )
                self.close_tcp(stream, "dead")
                return
            if size - pos < length:
                break
            self.emit(protocol, "tcp", src, sport, dst, dport, buf[pos:pos + length])
            padded = (length + 3) & ~3
            if size - pos < padded:
                stream.skip = padded - (size - pos)
                pos = size
                break
            pos += padded
        if pos:
            del buf[:pos]
            stream.offset += pos
            self.pending -= pos


# --------------------------------------------------------------------------
# The public API


class _RecordIterator:
    """
    The iterator L{iter_records} returns; closes the file it opened.
    """

    def __init__(self, frames, decoder, out, owned):
        self._owned = owned
        self._gen = self._run(frames, decoder, out)

    def _run(self, frames, decoder, out):
        try:
            packet = decoder.packet
            for frame, timestamp, linktype, data in frames:
                packet(frame, timestamp, linktype, data)
                if out:
                    yield from out
                    del out[:]
            if out:
                yield from out
                del out[:]
        except OSError as e:
            raise CaptureError("cannot read capture: {}".format(e.strerror or e)) from e
        finally:
            self._close_file()

    def _close_file(self):
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def close(self):
        """
        Stop reading and close the file if this iterator opened it.
        """
        self._gen.close()
        self._close_file()

    def __del__(self):
        self._close_file()


def _open(source):
    if isinstance(source, (str, bytes, os.PathLike)):
        name = os.fsdecode(source)
        try:
            return open(source, "rb"), name, True
        except OSError as e:
            raise CaptureError("cannot open capture {}: {}".format(name, e.strerror or e)) from e
    if not hasattr(source, "read"):
        raise TypeError("expected a path or a binary file object, not {!r}".format(type(source).__name__))
    return source, getattr(source, "name", None) or "capture", False


def iter_records(source):
    """
    Read a capture and yield its ASAP and ENRP messages and the problems
    met, in capture order.

    The file header is read at once, so an unreadable file raises here
    rather than on the first C{next()}.

    @param source: a path (C{str}, C{bytes} or path-like) or a file object
    open for binary reading.  A file this function opens is closed when
    the iterator is exhausted, closed or collected; a file object passed
    in is left open.

    @return: an iterator of L{CapturedMessage} and L{CaptureWarning}
    records.

    @raise CaptureError: the file cannot be opened or read, or is not a pcap
    or pcapng capture.  Reading the records raises nothing else, whatever
    the bytes (a read error from the operating system becomes a
    L{CaptureError} too).
    """
    f, name, owned = _open(source)
    out = []
    decoder = _Decoder(out)
    try:
        frames = _Frames(f, name, lambda frame, message: out.append(CaptureWarning(frame, decoder.timestamp, message)))
    except OSError as e:
        if owned:
            f.close()
        raise CaptureError("cannot read capture {}: {}".format(name, e.strerror or e)) from e
    except BaseException:
        if owned:
            f.close()
        raise
    return _RecordIterator(frames, decoder, out, f if owned else None)


def _messages(records, warnings):
    for record in records:
        if type(record) is CapturedMessage:
            yield record
        elif warnings is not None:
            warnings.append(record)


def iter_messages(source, warnings=None):
    """
    Read a capture and yield its ASAP and ENRP messages in capture order.

    @param source: a path or a binary file object, as for L{iter_records}.

    @param warnings: if a list, the L{CaptureWarning} records for skipped
    packets and broken streams are appended to it as they are met.

    @return: an iterator of L{CapturedMessage}.

    @raise CaptureError: as L{iter_records}, when called.
    """
    return _messages(iter_records(source), warnings)
