"""
Reading RSPLIB's pre-RFC (2007, draft-era) messages.

Before RFC 5354, the drafts (draft-ietf-rserpool-common-param up to about
revision 11, implemented by RSPLIB 2.x) numbered the parameters
differently, encoded the policy as an 8-bit type with a 24-bit value and
put a 32-bit flags word into Server Information.  The message layouts were
otherwise those of the RFCs.  This module translates such a message into
the RFC layout so that the normal codec can decode it, and explains why a
message is not RFC 5352/5353 when it cannot.

It is used by ``rserpool decode`` only; the protocol stack itself speaks the
RFCs and rejects draft-era messages (an RFC peer would not understand them).

============  ==================  ============
draft type    parameter           RFC 5354
============  ==================  ============
0x0001        IPv4 Address        0x0001
0x0002        IPv6 Address        0x0002
0x0003        SCTP Transport      0x0004
0x0004        TCP Transport       0x0005
0x0005        UDP Transport       0x0006
0x0006        Policy              0x0008
0x0007        Pool Handle         0x0009
0x0008        Pool Element        0x000a
0x0009        Server Information  0x000b
0x000a        Operation Error     0x000c
0x000b        Cookie              0x000d
0x000c        PE Identifier       0x000e
0x000d        PE Checksum         0x000f
============  ==================  ============
"""
import struct

from rserpool.wire import ProtocolError, decode

_HH = struct.Struct("!HH")

#: draft type -> (RFC type, name, fixed bytes before nested parameters or
#: None for a leaf)
DRAFT_TYPES = {
    0x0001: (0x0001, "IPv4 Address", None),
    0x0002: (0x0002, "IPv6 Address", None),
    0x0003: (0x0004, "SCTP Transport", 4),
    0x0004: (0x0005, "TCP Transport", 4),
    0x0005: (0x0006, "UDP Transport", 4),
    0x0006: (0x0008, "Policy", None),
    0x0007: (0x0009, "Pool Handle", None),
    0x0008: (0x000A, "Pool Element", 12),
    0x0009: (0x000B, "Server Information", 8),
    0x000A: (0x000C, "Operation Error", None),
    0x000B: (0x000D, "Cookie", None),
    0x000C: (0x000E, "PE Identifier", None),
    0x000D: (0x000F, "PE Checksum", None),
}

#: draft 8-bit policy types seen in RSPLIB 2.x traffic -> RFC 5356 type
_DRAFT_POLICIES = {0x01: 0x00000001}

#: bytes of fixed fields before the parameters, per (protocol, type)
_FIXED = {("asap", 0x07): 4, ("asap", 0x0A): 4}
for _t in range(1, 11):
    _FIXED[("enrp", _t)] = 8
_FIXED[("enrp", 0x04)] = 12
for _t in (7, 8, 9):
    _FIXED[("enrp", _t)] = 12


class _NotDraft(Exception):
    pass


def _pad(n):
    return (n + 3) & ~3


def _translate_params(data, pos, end, seen):
    out = []
    while pos < end:
        if end - pos < 4:
            raise _NotDraft()
        ptype, plen = _HH.unpack_from(data, pos)
        if plen < 4 or pos + plen > end or ptype not in DRAFT_TYPES:
            raise _NotDraft()
        rfc, name, fixed = DRAFT_TYPES[ptype]
        seen.append((ptype, rfc, name))
        value = bytes(data[pos + 4 : pos + plen])
        if ptype == 0x0006:
            # 8-bit policy type, 24-bit value
            if len(value) != 4 or value[0] not in _DRAFT_POLICIES:
                raise _NotDraft()
            value = struct.pack("!I", _DRAFT_POLICIES[value[0]])
        elif ptype == 0x0009:
            # server id, a 32-bit flags word the RFC dropped, the transport
            if len(value) < fixed:
                raise _NotDraft()
            value = value[:4] + _translate_params(value, 8, len(value), seen)
        elif fixed is not None:
            if len(value) < fixed:
                raise _NotDraft()
            value = value[:fixed] + _translate_params(value, fixed, len(value), seen)
        elif ptype == 0x0002 and len(value) == 16 and value[:12] == b"\0" * 10 + b"\xff\xff":
            # RSPLIB 2.x wrote IPv4 addresses as IPv4-mapped IPv6 addresses
            rfc, value = 0x0001, value[12:]
        length = 4 + len(value)
        out.append(_HH.pack(rfc, length) + value + b"\0" * (_pad(length) - length))
        pos = _pad(pos + plen)
    return b"".join(out)


def translate(data, protocol):
    """
    Translate a draft-era message into the RFC layout.

    @return: C{(rfc_bytes, mappings)} where C{mappings} lists the
        C{(draft type, RFC type, name)} of every parameter, or C{None} if
        C{data} is not a draft-era message that differs from the RFC.
    """
    data = bytes(data)
    if len(data) < 4:
        return None
    mtype, flags, length = struct.unpack_from("!BBH", data)
    if length < 4 or length > len(data):
        return None
    fixed = 4 + _FIXED.get((protocol, mtype), 0)
    if length < fixed:
        return None
    seen = []
    try:
        body = _translate_params(data, fixed, length, seen)
    except _NotDraft:
        return None
    if not seen:
        return None
    new = data[4:fixed] + body
    return struct.pack("!BBH", mtype, flags, 4 + len(new)) + new, seen


def decode_draft(data, protocol):
    """
    Decode a draft-era message.

    @return: C{(message, mappings)}, or C{None} if C{data} is not one.
    """
    t = translate(data, protocol)
    if t is None:
        return None
    rfc, seen = t
    try:
        return decode(rfc, protocol), seen
    except ProtocolError:
        return None


def explain(data, protocol):
    """
    Why C{data}, which the RFC codec rejected, is not an RFC message, if it
    is a draft-era one; else C{None}.
    """
    result = decode_draft(data, protocol)
    if result is None:
        return None
    message, seen = result
    names = []
    for draft, rfc, name in seen:
        if draft != rfc:
            text = "%s is 0x%04x (RFC 5354: 0x%04x)" % (name, draft, rfc)
            if text not in names:
                names.append(text)
    from rserpool.tools.pretty import summary

    return "pre-RFC draft layout (RSPLIB 2.x): %s; as RFC: %s" % ("; ".join(names), summary(message))
