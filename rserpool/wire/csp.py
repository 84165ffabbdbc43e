"""
RSPLIB's Component Status Protocol (CSP): the UDP reports that
registrars, pool elements and pool users send to RSPLIB's C{cspmonitor}
(default port 2960), so that one monitor shows a whole deployment.

The wire format, from RSPLIB's C{componentstatuspackets.h} and
C{rserpool-csp.h} (all fields in network byte order, no padding):

 - a common header of 24 bytes: type (1, a report), flags (1: the final
   report of a component that stops), length (16 bits, the whole
   datagram), version (32 bits, C{0x0200}), sender id (64 bits) and sender
   time stamp (64 bits: microseconds since the component started, which
   the monitor shows as its uptime);
 - the report interval (32 bits, microseconds: the monitor forgets a
   component after ten intervals without a report, 30 s at most), the
   location and the status (128 bytes each, NUL-padded text), the
   workload (16 bits: a fraction times 0xfffe, 0xffff for none) and the
   number of associations (16 bits);
 - per association 24 bytes: receiver id (64 bits), duration
   (microseconds, all ones for unknown), flags (16 bits), protocol (16
   bits: an IP protocol number, 6 for TCP, 132 for SCTP) and PPID (32
   bits: 11 ASAP, 12 ENRP, 0 data).

A component id is its group (1 registrar, 2 pool element, 3 pool user) in
the top 8 bits and a 56-bit object id: a registrar's or PE's 32-bit id, a
pool user's random number.

Sans I/O: L{encode_report} and L{decode_report} only.
"""
import struct

import attrs

__all__ = [
    "CSP_VERSION",
    "GROUP_REGISTRAR",
    "GROUP_POOL_ELEMENT",
    "GROUP_POOL_USER",
    "IPPROTO_TCP",
    "IPPROTO_SCTP",
    "Association",
    "StatusReport",
    "component_id",
    "encode_report",
    "decode_report",
    "UNKNOWN_DURATION",
]

CSP_VERSION = 0x0200
CSPT_REPORT = 0x01
CSPF_FINAL = 0x01

GROUP_REGISTRAR = 0x0001
GROUP_POOL_ELEMENT = 0x0002
GROUP_POOL_USER = 0x0003

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

#: An association's duration when it is not known.
UNKNOWN_DURATION = 0xFFFFFFFFFFFFFFFF

_TEXT = 128
_HEADER = struct.Struct("!BBHIQQ")
_REPORT = struct.Struct("!I%ds%dsHH" % (_TEXT, _TEXT))
_ASSOCIATION = struct.Struct("!QQHHI")
_OBJECT_MASK = (1 << 56) - 1


def component_id(group, number):
    """
    A component id: C{group} in the top byte, C{number}'s 56 low bits
    (RSPLIB's C{CID_COMPOUND}).
    """
    return ((group & 0xFFFF) << 56) & 0xFFFFFFFFFFFFFFFF | (number & _OBJECT_MASK)


@attrs.frozen
class Association:
    """
    One association a component reports: to whom, for how long, over
    what.
    """

    receiver_id: int
    duration: int = UNKNOWN_DURATION
    flags: int = 0
    protocol: int = IPPROTO_TCP
    ppid: int = 0


@attrs.frozen
class StatusReport:
    """
    A Component Status Report.

    @ivar sender_id: the component id (L{component_id}).
    @ivar timestamp: microseconds since the component started.
    @ivar interval: microseconds between its reports.
    @ivar location: where it is, for people (e.g. C{"host: 192.0.2.1:3863"}).
    @ivar status: how it is, for people.
    @ivar workload: a fraction (0 to 1), or a negative number for none.
    @ivar associations: L{Association}s.
    @ivar final: the component stops (the monitor drops it at once).
    """

    sender_id: int
    timestamp: int
    interval: int
    location: str = ""
    status: str = ""
    workload: float = -1.0
    associations: tuple = ()
    final: bool = False


def _text(text):
    data = text.encode("utf-8", "replace")[:_TEXT - 1]
    # Cut at a character boundary.
    return data.decode("utf-8", "ignore").encode("utf-8")


def _workload(value):
    if value < 0:
        return 0xFFFF
    return int(round(min(1.0, value) * 0xFFFE))


def encode_report(report):
    """
    The datagram of a L{StatusReport}.
    """
    associations = tuple(report.associations)[:(0xFFFF - 288) // 24]
    length = _HEADER.size + _REPORT.size + _ASSOCIATION.size * len(associations)
    parts = [
        _HEADER.pack(CSPT_REPORT, CSPF_FINAL if report.final else 0, length, CSP_VERSION,
                     report.sender_id & 0xFFFFFFFFFFFFFFFF,
                     max(0, report.timestamp) & 0xFFFFFFFFFFFFFFFF),
        _REPORT.pack(min(report.interval, 0xFFFFFFFF), _text(report.location),
                     _text(report.status), _workload(report.workload), len(associations)),
    ]
    for a in associations:
        parts.append(_ASSOCIATION.pack(a.receiver_id & 0xFFFFFFFFFFFFFFFF,
                                       a.duration & 0xFFFFFFFFFFFFFFFF, a.flags, a.protocol,
                                       a.ppid))
    return b"".join(parts)


def decode_report(data):
    """
    A L{StatusReport} from a datagram, as C{cspmonitor} reads it.

    @raise ValueError: not a CSP report of version 0x0200, or its length
        and association count disagree.
    """
    if len(data) < _HEADER.size + _REPORT.size:
        raise ValueError("a CSP report has at least %d bytes, not %d"
                         % (_HEADER.size + _REPORT.size, len(data)))
    kind, flags, length, version, sender, stamp = _HEADER.unpack_from(data)
    if kind != CSPT_REPORT or version != CSP_VERSION:
        raise ValueError("not a CSP report of version 0x0200 (type %d, version 0x%04x)"
                         % (kind, version))
    interval, location, status, workload, count = _REPORT.unpack_from(data, _HEADER.size)
    offset = _HEADER.size + _REPORT.size
    if offset + count * _ASSOCIATION.size != len(data):
        raise ValueError("%d associations do not make %d bytes" % (count, len(data)))
    associations = []
    for _ in range(count):
        associations.append(Association(*_ASSOCIATION.unpack_from(data, offset)))
        offset += _ASSOCIATION.size
    return StatusReport(
        sender, stamp, interval,
        location.split(b"\0", 1)[0].decode("utf-8", "replace"),
        status.split(b"\0", 1)[0].decode("utf-8", "replace"),
        -1.0 if workload == 0xFFFF else workload / float(0xFFFE),
        tuple(associations), bool(flags & CSPF_FINAL))
