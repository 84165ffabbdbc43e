"""
Tests for L{rserpool.tools.capture}.

The synthetic captures are written by hand with C{struct}, so every field
the reader looks at is visible here.  The real captures in C{tests/data/}
(recorded by C{tests/data/capture-rsplib-session.sh}) are cross-checked
against tshark when it is installed.
"""
import collections
import io
import os
import shutil
import socket
import struct
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, TestCase

from rserpool.tools import capture
from rserpool.tools.capture import (
    CaptureError,
    CapturedMessage,
    CaptureWarning,
    iter_messages,
    iter_records,
)

#: The captures the tests read, carried by the repository (tests/data/).
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SESSION = os.path.join(DATA, "rsplib-3.4-session.pcap")
DEMO_2007 = os.path.join(DATA, "rsplib-demo-2007.pcap")
TSHARK = shutil.which("tshark")

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"


# --------------------------------------------------------------------------
# Packet builders


def msg(mtype, body=b"", flags=0):
    """
    An RSerPool message: type:8 flags:8 length:16 body (not padded).
    """
    return struct.pack("!BBH", mtype, flags, 4 + len(body)) + body


def pad(data):
    return data + b"\0" * (-len(data) % 4)


def data_chunk(tsn, ppid, payload, sid=0, ssn=0, flags=3):
    chunk = struct.pack("!BBHIHHI", 0, flags, 16 + len(payload), tsn, sid, ssn, ppid) + payload
    return pad(chunk)


def idata_chunk(tsn, mid, ppid_or_fsn, payload, sid=0, flags=3):
    chunk = struct.pack("!BBHIHHII", 64, flags, 20 + len(payload), tsn, sid, 0, mid, ppid_or_fsn) + payload
    return pad(chunk)


def sack_chunk(cum_tsn):
    return struct.pack("!BBHIIHH", 3, 0, 16, cum_tsn, 65536, 0, 0)


def sctp(sport, dport, chunks, vtag=0x01020304):
    return struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks)


def udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def tcp(sport, dport, seq, payload=b"", flags=ACK | PSH):
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload


def ipv4(src, dst, proto, payload, ident=1, flags_frag=0, options=b"", total=None):
    ihl = 5 + len(options) // 4
    length = 4 * ihl + len(payload) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        length,
        ident,
        flags_frag,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + options + payload


def ipv6(src, dst, nh, payload):
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), nh, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + payload
    )


def ext(nh, body=b"\0" * 6):
    """
    An IPv6 extension header with the generic (next, length) layout.
    """
    body = body + b"\0" * (-(len(body) + 2) % 8)
    return bytes([nh, (len(body) + 2) // 8 - 1]) + body


def frag6(nh, offset, more, ident, data):
    return struct.pack("!BBHI", nh, 0, offset | more, ident) + data


MAC = b"\x02\0\0\0\0\x01"


def ether(packet, ethertype=0x0800, vlans=()):
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    if vlans:
        first = vlans[0][0]
        return MAC + MAC + struct.pack("!H", first) + _vlan_chain(vlans, ethertype) + packet
    return MAC + MAC + struct.pack("!H", ethertype) + tags + packet


def _vlan_chain(vlans, ethertype):
    out = b""
    for i, (_, vid) in enumerate(vlans):
        following = vlans[i + 1][0] if i + 1 < len(vlans) else ethertype
        out += struct.pack("!HH", vid, following)
    return out


def sll(packet, ethertype=0x0800):
    return struct.pack("!HHH8sH", 0, 1, 6, MAC + b"\0\0", ethertype) + packet


def sll2(packet, ethertype=0x0800):
    return struct.pack("!HHIHBB8s", ethertype, 0, 3, 1, 0, 6, MAC + b"\0\0") + packet


def null(packet, family=2, endian="<"):
    return struct.pack(endian + "I", family) + packet


# --------------------------------------------------------------------------
# File builders


def pcap(linktype, packets, endian="<", nano=False, snaplen=262144):
    """
    A classic pcap file; C{packets} are bytes, or C{(seconds, bytes)}, or
    C{(seconds, bytes, origlen)}.
    """
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, p in enumerate(packets):
        if isinstance(p, bytes):
            p = (1000 + i, p)
        ts, data = p[0], p[1]
        origlen = p[2] if len(p) > 2 else len(data)
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), origlen) + data)
    return b"".join(out)


def block(endian, btype, body):
    body = pad(body)
    return struct.pack(endian + "II", btype, 12 + len(body)) + body + struct.pack(endian + "I", 12 + len(body))


def shb(endian="<"):
    return block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype, endian="<", tsresol=None, tsoffset=None):
    options = b""
    if tsresol is not None:
        options += struct.pack(endian + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0"
    if tsoffset is not None:
        options += struct.pack(endian + "HHq", 14, 8, tsoffset)
    if options:
        options += struct.pack(endian + "HH", 0, 0)
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, 0) + options)


def epb(data, ifid=0, ts=0, endian="<"):
    return block(endian, 6, struct.pack(endian + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data)


def spb(data, endian="<"):
    return block(endian, 3, struct.pack(endian + "I", len(data)) + data)


def opb(data, ifid=0, ts=0, endian="<"):
    return block(
        endian, 2, struct.pack(endian + "HHIIII", ifid, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data
    )


def read(data, **kwargs):
    return list(iter_records(io.BytesIO(data), **kwargs))


def messages(data):
    return [r for r in read(data) if isinstance(r, CapturedMessage)]


def warnings(data):
    return [r for r in read(data) if isinstance(r, CaptureWarning)]


def summary(data):
    """
    C{(frame, protocol, transport, payload)} of every message.
    """
    return [(m.frame, m.protocol, m.transport, m.payload) for m in messages(data)]


ASAP1 = msg(1, b"registration")  # 16 bytes
ASAP2 = msg(0x0C, b"x" * 5)  # 9 bytes: padded to 12 on TCP
ENRP1 = msg(4, b"\0" * 8)
BIG = msg(3, bytes(range(256)) * 4)


# --------------------------------------------------------------------------
# SCTP


class SCTPTests(TestCase):
    def test_bundled_chunks(self):
        """
        Each ASAP/ENRP DATA chunk of a bundle comes out on its own, in
        order; chunks of other protocols and control chunks are skipped.
        """
        packet = sctp(
            3863,
            40000,
            [sack_chunk(7), data_chunk(1, 11, ASAP1), data_chunk(2, 99, b"other"), data_chunk(3, 12, ENRP1, sid=1)],
        )
        data = pcap(1, [ether(ipv4(A4, B4, 132, packet))])
        found = messages(data)
        self.assertEqual(
            [(m.frame, m.protocol, m.transport, m.payload, m.ppid) for m in found],
            [(1, "asap", "sctp", ASAP1, 11), (1, "enrp", "sctp", ENRP1, 12)],
        )
        self.assertEqual(found[0].src, (A4, 3863))
        self.assertEqual(found[0].dst, (B4, 40000))
        self.assertEqual(found[0].timestamp, 1000.0)

    def test_chunk_payload_not_split(self):
        """
        A DATA chunk is one user message; the reader does not look inside.
        """
        payload = ASAP1 + ENRP1
        data = pcap(101, [ipv4(A4, B4, 132, sctp(1, 2, [data_chunk(1, 11, payload)]))])
        self.assertEqual(summary(data), [(1, "asap", "sctp", payload)])

    def test_fragmented_message(self):
        """
        A user message sent in fragments is reassembled by TSN in its
        stream, whatever order the fragments arrive in, ignoring
        retransmitted fragments; the frame is the one that completed it.
        """
        a, b, c = BIG[:300], BIG[300:700], BIG[700:]

        def packet(*chunks):
            return ether(ipv4(A4, B4, 132, sctp(9901, 9901, list(chunks))))

        data = pcap(
            1,
            [
                packet(data_chunk(10, 12, a, sid=2, flags=2)),  # 1: B
                packet(data_chunk(10, 12, a, sid=2, flags=2)),  # 2: retransmitted
                packet(data_chunk(12, 12, c, sid=2, flags=1), data_chunk(13, 12, ENRP1, sid=0)),  # 3: E, other
                packet(data_chunk(11, 12, b, sid=2, flags=0)),  # 4: middle completes
                packet(data_chunk(11, 12, b, sid=2, flags=0)),  # 5: late duplicate
            ],
        )
        self.assertEqual(summary(data), [(3, "enrp", "sctp", ENRP1), (4, "enrp", "sctp", BIG)])

    def test_fragments_of_two_directions(self):
        """
        Fragments are kept apart by association direction.
        """
        one, two = msg(1, b"a" * 40), msg(2, b"b" * 40)
        data = pcap(
            101,
            [
                ipv4(A4, B4, 132, sctp(3863, 5000, [data_chunk(1, 11, one[:20], flags=2)])),
                ipv4(B4, A4, 132, sctp(5000, 3863, [data_chunk(1, 11, two[:20], flags=2)], vtag=9)),
                ipv4(B4, A4, 132, sctp(5000, 3863, [data_chunk(2, 11, two[20:], flags=1)], vtag=9)),
                ipv4(A4, B4, 132, sctp(3863, 5000, [data_chunk(2, 11, one[20:], flags=1)])),
            ],
        )
        found = messages(data)
        self.assertEqual([(m.frame, m.payload, m.src) for m in found], [(3, two, (B4, 5000)), (4, one, (A4, 3863))])

    def test_ppid_zero_uses_port(self):
        """
        DATA with PPID 0 on port 3863 is ASAP, on 9901 ENRP, elsewhere
        nothing; another PPID on an RSerPool port is not ASAP.
        """
        data = pcap(
            101,
            [
                ipv4(A4, B4, 132, sctp(40000, 3863, [data_chunk(1, 0, ASAP1)])),
                ipv4(A4, B4, 132, sctp(9901, 40000, [data_chunk(1, 0, ENRP1)])),
                ipv4(A4, B4, 132, sctp(40000, 40001, [data_chunk(1, 0, ASAP1)])),
                ipv4(A4, B4, 132, sctp(40000, 3863, [data_chunk(1, 33, b"pingpong")])),
            ],
        )
        found = messages(data)
        self.assertEqual(
            [(m.frame, m.protocol, m.ppid) for m in found],
            [(1, "asap", 0), (2, "enrp", 0)],
        )

    def test_idata(self):
        """
        I-DATA chunks (RFC 8260): whole ones, and fragments reassembled by
        FSN, the PPID coming from the first fragment.
        """
        a, b = BIG[:500], BIG[500:]
        data = pcap(
            101,
            [
                ipv4(A4, B4, 132, sctp(1, 2, [idata_chunk(1, 0, 11, ASAP1)])),
                ipv4(A4, B4, 132, sctp(1, 2, [idata_chunk(3, 1, 1, b, flags=1)])),
                ipv4(A4, B4, 132, sctp(1, 2, [idata_chunk(2, 1, 12, a, flags=2)])),
                ipv4(A4, B4, 132, sctp(1, 2, [idata_chunk(4, 2, 99, b"no", flags=2)])),
                ipv4(A4, B4, 132, sctp(1, 2, [idata_chunk(5, 2, 1, b"pe", flags=1)])),
            ],
        )
        self.assertEqual(summary(data), [(1, "asap", "sctp", ASAP1), (3, "enrp", "sctp", BIG)])

    def test_truncated_chunk(self):
        """
        A DATA chunk cut short by the snapshot length is skipped with a
        warning; the chunks before it still come out.
        """
        packet = ipv4(A4, B4, 132, sctp(1, 2, [data_chunk(1, 11, ASAP1), data_chunk(2, 11, BIG)]))
        data = pcap(101, [(5.0, packet[:200], len(packet))])
        self.assertEqual(summary(data), [(1, "asap", "sctp", ASAP1)])
        self.assertEqual([w.frame for w in warnings(data)], [1])

    def test_fragment_buffer_limit(self):
        """
        A stream whose fragments exceed the per-stream limit is dropped with
        a warning.
        """
        self.patch(capture, "MAX_STREAM_BUFFER", 1000)
        packets = [
            ipv4(A4, B4, 132, sctp(1, 2, [data_chunk(tsn, 11, b"z" * 400, flags=2 if tsn == 1 else 0)]))
            for tsn in range(1, 5)
        ]
        records = read(pcap(101, packets))
        self.assertEqual([type(r) for r in records], [CaptureWarning])
        self.assertEqual(records[0].frame, 3)


# --------------------------------------------------------------------------
# UDP


class UDPTests(TestCase):
    def test_ports(self):
        """
        Datagrams to or from 3863 are ASAP, 9901 ENRP, others ignored; the
        payload comes out whole.
        """
        data = pcap(
            113,
            [
                sll(ipv4(A4, "239.0.0.50", 17, udp(3863, 3863, ASAP1))),
                sll(ipv4(A4, B4, 17, udp(9901, 5555, ENRP1 + ENRP1))),
                sll(ipv4(A4, B4, 17, udp(53, 5555, ASAP1))),
                sll(ipv6(A6, "ff02::1", 17, udp(5555, 9901, ENRP1)), 0x86DD),
            ],
        )
        found = messages(data)
        self.assertEqual(
            [(m.frame, m.protocol, m.transport, m.payload, m.ppid) for m in found],
            [
                (1, "asap", "udp", ASAP1, None),
                (2, "enrp", "udp", ENRP1 + ENRP1, None),
                (4, "enrp", "udp", ENRP1, None),
            ],
        )
        self.assertEqual(found[0].dst, ("239.0.0.50", 3863))
        self.assertEqual(found[2].src, (A6, 5555))
        self.assertEqual(found[2].dst, ("ff02::1", 9901))


# --------------------------------------------------------------------------
# TCP


class TCPTests(TestCase):
    def test_reassembly(self):
        """
        The stream is rebuilt by sequence number through out-of-order and
        retransmitted segments and overlaps, then cut at the common header's
        length with 4-byte padding; each message's frame is the frame that
        completed it.
        """
        three = msg(5, b"q" * 30)  # 34 bytes, padded to 36
        stream = pad(ASAP2) + pad(ASAP1) + pad(three) + pad(ENRP1)
        isn = 0xFFFFFFF0  # the sequence numbers wrap around
        s0 = (isn + 1) & 0xFFFFFFFF

        def seg(start, end, flags=ACK | PSH):
            return ether(ipv4(A4, B4, 6, tcp(40000, 3863, (s0 + start) & 0xFFFFFFFF, stream[start:end], flags)))

        first = len(pad(ASAP2)) + len(pad(ASAP1))  # two messages in one segment
        cut = first + 10  # the third message is split
        data = pcap(
            1,
            [
                ether(ipv4(A4, B4, 6, tcp(40000, 3863, isn, flags=SYN))),  # 1
                ether(ipv4(B4, A4, 6, tcp(3863, 40000, 77, flags=SYN | ACK))),  # 2
                seg(0, first),  # 3: ASAP2, ASAP1
                seg(cut, len(stream) - 4),  # 4: out of order
                seg(0, first),  # 5: retransmission
                seg(first, cut + 4),  # 6: completes three (overlaps 4)
                seg(len(stream) - 8, len(stream), ACK | PSH | FIN),  # 7: overlap + rest, FIN
                seg(len(stream) - 8, len(stream), ACK | PSH | FIN),  # 8: retransmitted after close
            ],
        )
        found = messages(data)
        self.assertEqual(
            [(m.frame, m.protocol, m.transport, m.payload) for m in found],
            [(3, "asap", "tcp", ASAP2), (3, "asap", "tcp", ASAP1), (6, "asap", "tcp", three), (7, "asap", "tcp", ENRP1)],
        )
        self.assertEqual(found[0].src, (A4, 40000))
        self.assertEqual(found[0].dst, (B4, 3863))
        self.assertIsNone(found[0].ppid)
        self.assertEqual(warnings(data), [])

    def test_message_split_across_segments(self):
        """
        One message over three segments comes out with the last one's frame,
        on ENRP's port and over IPv6.
        """
        body = pad(BIG)
        packets = [ipv6(A6, B6, 6, tcp(9901, 50000, 100, flags=SYN))]
        for i, start in enumerate(range(0, len(body), 400)):
            packets.append(ipv6(A6, B6, 6, tcp(9901, 50000, 101 + start, body[start:start + 400])))
        data = pcap(101, packets)
        self.assertEqual(summary(data), [(4, "enrp", "tcp", BIG)])

    def test_garbage_stops_stream(self):
        """
        A length below 4 is reported as a warning and the rest of that
        stream is ignored; the other direction goes on.
        """
        bad = pad(ASAP1) + b"\x01\x00\x00\x02" + pad(ASAP2)
        data = pcap(
            101,
            [
                ipv4(A4, B4, 6, tcp(40000, 3863, 1, bad)),
                ipv4(A4, B4, 6, tcp(40000, 3863, 1 + len(bad), pad(ASAP1))),
                ipv4(B4, A4, 6, tcp(3863, 40000, 500, pad(ENRP1))),
            ],
        )
        records = read(data)
        self.assertEqual(
            [(type(r).__name__, r.frame) for r in records],
            [("CapturedMessage", 1), ("CaptureWarning", 1), ("CapturedMessage", 3)],
        )
        self.assertIn("length 2 < 4", records[1].message)
        self.assertEqual(records[2].protocol, "asap")  # from port 3863
        self.assertEqual(records[2].payload, ENRP1)

    def test_new_connection_after_close(self):
        """
        A new SYN on the same ports starts a new stream.
        """
        data = pcap(
            101,
            [
                ipv4(A4, B4, 6, tcp(40000, 3863, 10, flags=SYN)),
                ipv4(A4, B4, 6, tcp(40000, 3863, 11, b"\0\0\0\x01", flags=ACK | PSH)),  # garbage
                ipv4(A4, B4, 6, tcp(40000, 3863, 9000, flags=SYN)),
                ipv4(A4, B4, 6, tcp(40000, 3863, 9001, pad(ASAP1))),
            ],
        )
        self.assertEqual(summary(data), [(4, "asap", "tcp", ASAP1)])
        self.assertEqual([w.frame for w in warnings(data)], [2])

    def test_out_of_order_limit(self):
        """
        Out-of-order data beyond the per-stream limit gives the stream up
        with a warning.
        """
        self.patch(capture, "MAX_STREAM_BUFFER", 1000)
        packets = [ipv4(A4, B4, 6, tcp(1, 3863, 0, flags=SYN))]
        packets += [ipv4(A4, B4, 6, tcp(1, 3863, 100 + 400 * i, b"x" * 400)) for i in range(3)]
        records = read(pcap(101, packets))
        self.assertEqual([(type(r), r.frame) for r in records], [(CaptureWarning, 4)])

    def test_truncated_segment(self):
        """
        A segment cut by the snapshot length is treated as lost.
        """
        packet = ipv4(A4, B4, 6, tcp(1, 3863, 5, pad(BIG)))
        data = pcap(101, [(1.0, packet[:100], len(packet))])
        self.assertEqual(messages(data), [])
        self.assertEqual(len(warnings(data)), 1)


# --------------------------------------------------------------------------
# Link and network layers


def one_udp(linktype, frame):
    data = pcap(linktype, [frame])
    return [(m.frame, m.protocol, m.src, m.dst, m.payload) for m in messages(data)]


class LinkTests(TestCase):
    v4 = ipv4(A4, B4, 17, udp(3863, 3863, ASAP1))
    v6 = ipv6(A6, B6, 17, udp(3863, 3863, ASAP1))
    want4 = [(1, "asap", (A4, 3863), (B4, 3863), ASAP1)]
    want6 = [(1, "asap", (A6, 3863), (B6, 3863), ASAP1)]

    def test_ethernet(self):
        self.assertEqual(one_udp(1, ether(self.v4)), self.want4)
        self.assertEqual(one_udp(1, ether(self.v6, 0x86DD)), self.want6)

    def test_vlan(self):
        """
        802.1Q tags and 802.1ad (QinQ) stacks are skipped.
        """
        self.assertEqual(one_udp(1, ether(self.v4, vlans=[(0x8100, 42)])), self.want4)
        self.assertEqual(one_udp(1, ether(self.v6, 0x86DD, vlans=[(0x88A8, 1), (0x8100, 2)])), self.want6)

    def test_ethernet_trailer(self):
        """
        Padding and FCS after the IP datagram are not payload.
        """
        self.assertEqual(one_udp(1, ether(self.v4) + b"\xde\xad\xbe\xef" * 3), self.want4)

    def test_llc_snap(self):
        frame = MAC + MAC + struct.pack("!H", 8 + len(self.v4)) + b"\xaa\xaa\x03\0\0\0\x08\x00" + self.v4
        self.assertEqual(one_udp(1, frame), self.want4)

    def test_linux_cooked(self):
        self.assertEqual(one_udp(113, sll(self.v4)), self.want4)
        self.assertEqual(one_udp(113, sll(self.v6, 0x86DD)), self.want6)
        self.assertEqual(one_udp(276, sll2(self.v4)), self.want4)
        self.assertEqual(one_udp(276, sll2(self.v6, 0x86DD)), self.want6)

    def test_raw(self):
        for linktype in (101, 12, 14):
            self.assertEqual(one_udp(linktype, self.v4), self.want4)
            self.assertEqual(one_udp(linktype, self.v6), self.want6)
        self.assertEqual(one_udp(228, self.v4), self.want4)
        self.assertEqual(one_udp(229, self.v6), self.want6)

    def test_loopback(self):
        """
        NULL (host byte order, several AF_INET6 values) and LOOP.
        """
        self.assertEqual(one_udp(0, null(self.v4)), self.want4)
        self.assertEqual(one_udp(0, null(self.v4, endian=">")), self.want4)
        for family in (10, 24, 28, 30):
            self.assertEqual(one_udp(0, null(self.v6, family)), self.want6)
        self.assertEqual(one_udp(108, null(self.v6, 24, ">")), self.want6)

    def test_unsupported_linktype(self):
        """
        Frames of an unknown link type are skipped with one warning.
        """
        records = read(pcap(147, [self.v4, self.v4]))
        self.assertEqual([(type(r), r.frame) for r in records], [(CaptureWarning, 1)])

    def test_non_ip(self):
        arp = MAC + MAC + b"\x08\x06" + b"\0" * 28
        self.assertEqual(read(pcap(1, [arp, ether(self.v4)]))[0].frame, 2)

    def test_ipv4_options(self):
        packet = ipv4(A4, B4, 17, udp(9901, 9901, ENRP1), options=b"\x94\x04\0\0" + b"\x01" * 4)
        self.assertEqual(summary(pcap(101, [packet])), [(1, "enrp", "udp", ENRP1)])

    def test_ipv4_total_length_zero(self):
        """
        Segmentation offload leaves the total length at 0 on the sending
        host's capture; the captured length counts.
        """
        packet = ipv4(A4, B4, 17, udp(9901, 9901, ENRP1), total=0)
        self.assertEqual(summary(pcap(101, [packet])), [(1, "enrp", "udp", ENRP1)])

    def test_ipv4_fragments(self):
        """
        IPv4 fragments are reassembled in any order; the frame is the one
        that completed the datagram.
        """
        datagram = udp(5000, 3863, BIG)
        pieces = [(0, datagram[:512], 0x2000), (64, datagram[512:1000], 0x2000), (125, datagram[1000:], 0)]
        frames = [ipv4(A4, B4, 17, piece, ident=77, flags_frag=off | mf) for off, piece, mf in pieces]
        other = ipv4(A4, B4, 17, udp(5000, 3863, ASAP1), ident=78)
        data = pcap(101, [frames[2], frames[0], other, frames[0], frames[1]])
        self.assertEqual(summary(data), [(3, "asap", "udp", ASAP1), (5, "asap", "udp", BIG)])

    def test_ipv6_extension_headers(self):
        """
        Hop-by-hop, routing and destination options headers are walked.
        """
        payload = ext(43) + ext(60, b"\0" * 14) + ext(132) + sctp(3863, 1, [data_chunk(1, 11, ASAP1)])
        packet = ipv6(A6, B6, 0, payload)
        self.assertEqual(summary(pcap(101, [packet])), [(1, "asap", "sctp", ASAP1)])

    def test_ipv6_fragments(self):
        """
        IPv6 fragments are reassembled; the next header comes from the first
        fragment; an atomic fragment is a whole datagram.
        """
        inner = ext(17) + udp(9901, 9901, BIG)
        first = frag6(60, 0, 1, 5, inner[:504])
        second = frag6(60, 504, 0, 5, inner[504:])
        atomic = frag6(17, 0, 0, 6, udp(9901, 9901, ENRP1))
        data = pcap(
            101,
            [ipv6(A6, B6, 44, second), ipv6(A6, B6, 44, atomic), ipv6(A6, B6, 0, ext(44) + first)],
        )
        self.assertEqual(summary(data), [(2, "enrp", "udp", ENRP1), (3, "enrp", "udp", BIG)])


# --------------------------------------------------------------------------
# File formats


class FileFormatTests(TestCase):
    packet = ipv4(A4, B4, 17, udp(3863, 3863, ASAP1))

    def test_pcap_byte_orders_and_resolutions(self):
        for endian in "<>":
            for nano in (False, True):
                data = pcap(101, [(1234.5, self.packet), (1235.000001, self.packet)], endian, nano)
                found = messages(data)
                self.assertEqual([m.frame for m in found], [1, 2])
                self.assertAlmostEqual(found[0].timestamp, 1234.5, places=6)
                self.assertAlmostEqual(found[1].timestamp, 1235.000001, places=6)

    def test_pcap_fcs_bits(self):
        """
        The high bits of the link type field (FCS length) are not part of
        the link type.
        """
        data = bytearray(pcap(1, [ether(self.packet) + b"\0\0\0\0"]))
        data[20:24] = struct.pack("<I", 1 | 0x10000000 | (4 << 29))
        self.assertEqual(len(messages(bytes(data))), 1)

    def test_pcapng(self):
        """
        Sections in both byte orders, per-interface link types and time
        resolutions, Enhanced, Simple and Obsolete Packet Blocks; other
        blocks are skipped, and count as frames only where Wireshark shows
        them as frames (custom blocks, systemd journal entries).
        """
        le, be = "<", ">"
        data = b"".join(
            [
                shb(le),
                idb(1, le),
                idb(101, le, tsresol=9, tsoffset=100),
                block(le, 4, b"\0" * 8),  # Name Resolution Block
                epb(ether(self.packet), 0, 1500000000, le),  # 1
                epb(self.packet, 1, 2500000000, le),  # 2
                block(le, 5, struct.pack("<III", 0, 0, 0)),  # Interface Statistics
                block(le, 0x40000BAD, b"\0" * 8),  # 3: custom blocks are frames
                block(le, 0x80000001, b"\0" * 8),  # local use block
                opb(ether(self.packet), 0, 3000000, le),  # 4
                shb(be),
                idb(113, be, tsresol=0x80 | 10),
                spb(sll(self.packet), be),  # 5
                block(be, 9, b"MESSAGE=hi\n"),  # 6: systemd journal export
                epb(sll(self.packet), 0, 3 * 1024 + 512, be),  # 7
            ]
        )
        found = messages(data)
        self.assertEqual([m.frame for m in found], [1, 2, 4, 5, 7])
        self.assertEqual([m.timestamp for m in found], [1500.0, 102.5, 3.0, 0.0, 3.5])
        self.assertEqual(warnings(data), [])

    def test_pcapng_undefined_interface(self):
        data = shb() + idb(101) + epb(self.packet, 3) + epb(self.packet, 0)
        records = read(data)
        self.assertEqual([(type(r), r.frame) for r in records], [(CaptureWarning, 1), (CapturedMessage, 2)])

    def test_not_a_capture(self):
        for data in [b"", b"hello world, this is text", b"\xd4\xc3\xb2\xa1\x02\x00", shb()[:20]]:
            self.assertRaises(CaptureError, iter_records, io.BytesIO(data))
        bad_version = bytearray(shb())
        bad_version[12:14] = b"\x02\x00"
        self.assertRaises(CaptureError, iter_messages, io.BytesIO(bytes(bad_version)))

    def test_error_is_one_line(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"GIF89a not a capture")
        e = self.assertRaises(CaptureError, iter_messages, path)
        self.assertNotIn("\n", str(e))
        self.assertIn(path, str(e))
        e = self.assertRaises(CaptureError, iter_messages, path + ".missing")
        self.assertIn("cannot open", str(e))

    def test_text_mode_file(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(pcap(101, [self.packet]))
        with open(path, "r", encoding="latin-1") as f:
            self.assertRaises(CaptureError, iter_messages, f)

    def test_truncated_last_record(self):
        """
        A capture cut in the middle of a record yields what came before and
        a warning.
        """
        data = pcap(101, [self.packet, self.packet])[:-5]
        records = read(data)
        self.assertEqual([(type(r), r.frame) for r in records], [(CapturedMessage, 1), (CaptureWarning, 1)])

    def test_path_and_closing(self):
        """
        A path is opened and closed by the iterator; a file object is left
        open.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(pcap(101, [self.packet] * 3))
        self.assertEqual(len(list(iter_messages(path))), 3)
        self.assertEqual(len(list(iter_messages(path.encode()))), 3)
        records = iter_records(path)
        next(records)
        records.close()
        with open(path, "rb") as f:
            list(iter_messages(f))
            self.assertFalse(f.closed)

    def test_warnings_list(self):
        data = pcap(101, [self.packet[:10], self.packet])
        found = []
        self.assertEqual([m.frame for m in iter_messages(io.BytesIO(data), found)], [2])
        self.assertEqual([w.frame for w in found], [1])

    def test_records_are_frozen(self):
        m = messages(pcap(101, [self.packet]))[0]
        self.assertRaises(AttributeError, setattr, m, "frame", 2)
        self.assertEqual(m, CapturedMessage(1, 1000.0, "asap", "udp", (A4, 3863), (B4, 3863), ASAP1, None))


class TsharkAgreementOnSyntheticTests(TestCase):
    """
    tshark numbers the frames of a synthetic pcapng as we do.
    """

    def test_pcapng_frame_numbers(self):
        if TSHARK is None:
            raise SkipTest("tshark is not installed")
        packet = ipv4(A4, B4, 132, sctp(1, 2, [data_chunk(1, 11, ASAP1), data_chunk(2, 12, ENRP1)]))
        data = b"".join(
            [
                shb(),
                idb(101),
                block("<", 4, b"\0" * 8),
                epb(packet, 0, 10**6),
                block("<", 5, struct.pack("<III", 0, 0, 0)),
                block("<", 0xBAD, b"\0\0\0\0abcd"),
                block("<", 9, b"__REALTIME_TIMESTAMP=1000000\nMESSAGE=hi\n"),
                block("<", 0x80000001, b"abcd"),
                epb(ipv4(A4, B4, 17, udp(9901, 9901, ENRP1)), 0, 2 * 10**6),
                shb(">"),
                idb(1, ">"),
                epb(ether(packet), 0, 3 * 10**6, ">"),
            ]
        )
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        ours = collections.Counter((m.frame, m.protocol) for m in iter_messages(path))
        self.assertEqual(ours, tshark_counts(path))
        self.assertEqual(sum(ours.values()), 5)


# --------------------------------------------------------------------------
# Real captures


def tshark_counts(path):
    """
    C{Counter((frame, protocol))} of the ASAP and ENRP messages tshark sees:
    DATA chunks with the E bit and PPID 11 or 12 (or 0 on an RSerPool port),
    and UDP datagrams to or from an RSerPool port.
    """
    fields = [
        "frame.number",
        "sctp.srcport",
        "sctp.dstport",
        "sctp.data_payload_proto_id",
        "sctp.data_e_bit",
        "udp.srcport",
        "udp.dstport",
    ]
    command = [TSHARK, "-n", "-r", path, "-T", "fields", "-E", "occurrence=a"]
    for field in fields:
        command += ["-e", field]
    command += ["-Y", "sctp.data_payload_proto_id or udp.port == 3863 or udp.port == 9901"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    ports = {"3863": "asap", "9901": "enrp"}
    counts = collections.Counter()
    for line in output.splitlines():
        frame, ssport, sdport, ppids, ebits, usport, udport = (line.split("\t") + [""] * 7)[:7]
        frame = int(frame)
        if usport:
            # UDP inside ICMP errors would show two port pairs; take the outer.
            usport, udport = usport.split(",")[0], udport.split(",")[0]
            protocol = ports.get(udport) or ports.get(usport)
            if protocol:
                counts[frame, protocol] += 1
        if ppids:
            port_protocol = ports.get(sdport) or ports.get(ssport)
            for ppid, ebit in zip(ppids.split(","), ebits.split(",")):
                if ebit not in ("1", "True"):
                    continue
                protocol = {"11": "asap", "12": "enrp"}.get(ppid)
                if protocol is None and ppid == "0":
                    protocol = port_protocol
                if protocol:
                    counts[frame, protocol] += 1
    return counts


class RealCaptureTests(TestCase):
    def read_shared(self, path):
        found = []
        records = list(iter_messages(path, found))
        self.assertEqual(found, [])
        return records

    def check(self, path, expected):
        found = self.read_shared(path)
        counts = collections.Counter((m.protocol, m.transport) for m in found)
        self.assertEqual(dict(counts), expected)
        return found

    def check_tshark(self, path, found):
        if TSHARK is None:
            raise SkipTest("tshark is not installed; the hard-coded counts were checked")
        self.assertEqual(collections.Counter((m.frame, m.protocol) for m in found), tshark_counts(path))

    def test_rsplib_session_counts(self):
        """
        RSPLIB 3.4, Linux cooked v2: ASAP and ENRP over SCTP and the UDP
        multicast announcements.
        """
        found = self.check(
            SESSION,
            {("asap", "sctp"): 293, ("enrp", "sctp"): 155, ("asap", "udp"): 51, ("enrp", "udp"): 21},
        )
        self.assertEqual({m.dst for m in found if m.transport == "udp"}, {("239.0.0.50", 3863), ("239.0.0.51", 9901)})
        self.check_tshark(SESSION, found)

    def test_rsplib_demo_2007_counts(self):
        """
        The 2007 demo (Ethernet, pre-RFC, IPv6 SCTP present): ASAP and ENRP
        over SCTP on non-standard ports, found by PPID.
        """
        found = self.check(DEMO_2007, {("asap", "sctp"): 148, ("enrp", "sctp"): 545})
        self.check_tshark(DEMO_2007, found)

    def test_timestamps_and_addresses_match_tshark(self):
        if TSHARK is None:
            raise SkipTest("tshark is not installed")
        found = self.read_shared(SESSION)
        command = [TSHARK, "-n", "-r", SESSION, "-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch"]
        command += ["-e", "ip.src", "-e", "ip.dst", "-Y", "asap or enrp"]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        theirs = {}
        for line in output.splitlines():
            frame, epoch, src, dst = line.split("\t")
            theirs[int(frame)] = (round(float(epoch), 6), src, dst)
        ours = {m.frame: (round(m.timestamp, 6), m.src[0], m.dst[0]) for m in found}
        self.assertEqual(ours, theirs)


# --------------------------------------------------------------------------
# Totality


def _valid_capture():
    packets = [
        ether(ipv4(A4, B4, 132, sctp(3863, 1, [data_chunk(1, 11, ASAP1), data_chunk(2, 12, BIG[:100], flags=2)]))),
        ether(ipv4(A4, B4, 132, sctp(3863, 1, [data_chunk(3, 12, BIG[100:200], flags=1)]))),
        ether(ipv4(A4, B4, 17, udp(9901, 9901, ENRP1)), vlans=[(0x8100, 1)]),
        ether(ipv4(A4, B4, 6, tcp(1, 3863, 0, flags=SYN))),
        ether(ipv4(A4, B4, 6, tcp(1, 3863, 1 + 16, pad(ASAP2)))),
        ether(ipv4(A4, B4, 6, tcp(1, 3863, 1, pad(ASAP1)))),
        ether(ipv4(A4, B4, 17, udp(1, 3863, BIG[:600]), ident=3, flags_frag=0x2000)),
        ether(ipv4(A4, B4, 17, BIG[600:700], ident=3, flags_frag=76)),
        ether(ipv6(A6, B6, 0, ext(44) + frag6(17, 0, 0, 1, udp(3863, 2, ASAP1))), 0x86DD),
    ]
    return pcap(1, packets)


def _valid_pcapng():
    packet = ipv4(A4, B4, 132, sctp(9901, 9901, [data_chunk(1, 12, ENRP1)]))
    return shb() + idb(101, tsresol=9) + epb(packet, 0, 5) + spb(packet) + shb(">") + idb(113, ">") + opb(sll(packet), 0, 1, ">")


def _drain(data):
    try:
        records = list(iter_records(io.BytesIO(data)))
    except CaptureError:
        return None
    for r in records:
        assert isinstance(r, (CapturedMessage, CaptureWarning)), r
    return records


_VALID = [_valid_capture(), _valid_pcapng()]


def _held(decoder):
    """
    The bytes the decoder's reassembly state holds, counted as it charges
    them.
    """
    overhead = capture._OVERHEAD
    total = 0
    for state in decoder.ip_frags.values():
        total += sum(len(p) + overhead for p in state.pieces.values())
    for stream in decoder.sctp_streams.values():
        total += sum(len(p) + overhead for _, p in stream.fragments.values())
    for message in decoder.idata.values():
        total += sum(len(p) + overhead for p in message.fragments.values())
    for stream in decoder.tcp.values():
        total += len(stream.buf) + sum(len(p) + overhead for p in stream.ooo.values())
    return total


def _drain_checking_memory(packets, linktype=101):
    """
    Feed frames to a decoder and check that its memory accounting matches
    what it holds after every frame.
    """
    out = []
    decoder = capture._Decoder(out)
    for i, packet in enumerate(packets, 1):
        decoder.packet(i, float(i), linktype, packet)
        assert decoder.pending == _held(decoder), (i, decoder.pending, _held(decoder))
    return out


class TotalityTests(TestCase):
    def test_valid_inputs(self):
        self.assertEqual(len([r for r in _drain(_VALID[0]) if isinstance(r, CapturedMessage)]), 7)
        self.assertEqual(len(_drain(_VALID[1])), 3)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=2000))
    def test_random_bytes(self, data):
        _drain(data)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(list(capture._PCAP_MAGIC) + [b"\x0a\x0d\x0d\x0a"]), st.binary(max_size=3000))
    def test_random_bytes_after_magic(self, magic, data):
        _drain(magic + data)

    @settings(max_examples=500, deadline=None)
    @given(
        st.integers(0, 1),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
        st.integers(0, 10**6),
        st.binary(max_size=64),
    )
    def test_mutated_captures(self, which, flips, cut, insertion):
        """
        Flipping bytes, truncating and inserting junk into a valid capture
        never raises anything but L{CaptureError}.
        """
        data = bytearray(_VALID[which])
        for position, value in flips:
            data[position % len(data)] = value
        at = cut % (len(data) + 1)
        if insertion:
            data[at:at] = insertion
        else:
            del data[at:]
        _drain(bytes(data))

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 16383), st.integers(0, 255)), min_size=1, max_size=20))
    def test_mutated_real_capture(self, flips):
        """
        Bytes flipped in the first 16 KiB of the RSPLIB 3.4 capture.
        """
        with open(SESSION, "rb") as f:
            data = bytearray(f.read(16384))
        for position, value in flips:
            data[position] = value
        _drain(bytes(data))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=200), max_size=20), st.sampled_from([0, 1, 12, 101, 108, 113, 276]))
    def test_random_frames(self, frames, linktype):
        """
        Random frame contents behind every supported link type.
        """
        _drain(pcap(linktype, frames))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.binary(max_size=40), st.integers(0, 0x3F)), max_size=30))
    def test_random_tcp(self, segments):
        """
        Arbitrary TCP segments on an RSerPool port: sequence numbers, flags
        and contents.
        """
        _drain_checking_memory([ipv4(A4, B4, 6, tcp(1, 3863, seq, body, flags)) for seq, body, flags in segments])

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(0, 0xFFFFFFFF),
        st.lists(st.tuples(st.integers(0, 60), st.integers(0, 30), st.sampled_from([0, PSH, FIN])), max_size=30),
    )
    def test_tcp_segments_of_one_stream(self, isn, segments):
        """
        Segments cut from one valid stream, in any order, repeated and
        overlapping: the messages that come out are the stream's, in order,
        and the memory accounting holds.
        """
        stream = pad(ASAP2) + pad(ASAP1) + pad(ENRP1) + pad(ASAP2)
        packets = [ipv4(A4, B4, 6, tcp(1, 3863, isn, flags=SYN))]
        for start, size, flags in segments:
            packets.append(ipv4(A4, B4, 6, tcp(1, 3863, (isn + 1 + start) & 0xFFFFFFFF, stream[start:start + size], flags | ACK)))
        found = [m.payload for m in _drain_checking_memory(packets) if isinstance(m, CapturedMessage)]
        self.assertEqual(found, [ASAP2, ASAP1, ENRP1, ASAP2][: len(found)])

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 8), st.integers(0, 3), st.integers(0, 2), st.sampled_from([0, 11, 12]), st.binary(max_size=30)),
            max_size=30,
        )
    )
    def test_random_sctp_fragments(self, chunks):
        """
        Arbitrary DATA and I-DATA fragments: TSNs, flags, streams, PPIDs.
        """
        packets = []
        for tsn, flags, sid, ppid, body in chunks:
            chunk = data_chunk(tsn, ppid, body, sid=sid, flags=flags)
            if tsn % 2:
                chunk = idata_chunk(tsn, sid, ppid if flags & 2 else tsn, body, sid=sid, flags=flags)
            packets.append(ipv4(A4, B4, 132, sctp(3863, 3863, [chunk])))
        _drain_checking_memory(packets)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1), st.binary(max_size=24)), max_size=20))
    def test_random_ip_fragments(self, pieces):
        """
        Arbitrary IPv4 and IPv6 fragments of two datagrams.
        """
        packets = []
        for offset, more, body in pieces:
            packets.append(ipv4(A4, B4, 17, body, ident=offset % 2, flags_frag=(offset // 2) | (more << 13)))
            packets.append(ipv6(A6, B6, 44, frag6(17, (offset // 2) * 8, more, offset % 2, body)))
        _drain_checking_memory(packets)

    def test_many_middle_fragments(self):
        """
        A long run of SCTP middle fragments with no first one costs linear
        time and is dropped at the fragment limit.
        """
        packets = [ipv4(A4, B4, 132, sctp(1, 2, [data_chunk(tsn, 11, b"", flags=0)])) for tsn in range(5000)]
        records = _drain_checking_memory(packets)
        self.assertEqual(len(records), 4)
        self.assertTrue(all(isinstance(r, CaptureWarning) for r in records))


class SpeedTests(TestCase):
    def test_many_packets(self):
        """
        Reading is linear: 20000 frames of SCTP, UDP and TCP in well under
        the time a slow machine needs.
        """
        import time

        sctp_frame = ether(ipv4(A4, B4, 132, sctp(3863, 1, [sack_chunk(1), data_chunk(1, 11, ASAP1)])))
        udp_frame = ether(ipv4(A4, B4, 17, udp(9901, 9901, ENRP1)))
        other = ether(ipv4(A4, B4, 17, udp(53, 53, b"x" * 40)))
        packets = [ether(ipv4(A4, B4, 6, tcp(1, 3863, 0, flags=SYN)))]
        for i in range(5000):
            packets += [sctp_frame, udp_frame, other, ether(ipv4(A4, B4, 6, tcp(1, 3863, 1 + 16 * i, ASAP1)))]
        data = pcap(1, packets)
        start = time.perf_counter()
        count = sum(1 for _ in iter_messages(io.BytesIO(data)))
        elapsed = time.perf_counter() - start
        self.assertEqual(count, 15000)
        self.assertLess(elapsed, 10.0)
