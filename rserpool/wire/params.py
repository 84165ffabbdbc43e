"""
RSerPool parameters (RFC 5354 section 3): TLVs shared by ASAP and ENRP.

Every parameter is ``type:16 | length:16 | value | padding``.  The length
counts the 4-byte header and the value but not the padding that brings the
parameter to a multiple of 4 bytes.  A parameter nested inside another
(an address inside a transport, a transport inside a Pool Element) is padded
too, and that padding is part of the enclosing parameter's value, so it is
counted in the enclosing length; only a parameter's own trailing padding is
not.  RSPLIB writes exactly this, and so do we.

Addresses are represented by :mod:`ipaddress` objects; everything else by
the frozen ``attrs`` classes below.  :func:`encode_parameter` and
:func:`decode_parameter` turn one of them into a TLV and back.
"""
import ipaddress
import itertools
import struct

import attrs

from rserpool.codes import POLICY_FIELDS, POLICY_NAMES, ErrorCause, ParamType, cause_name
from rserpool.wire.protocol_error import ProtocolError

_HH = struct.Struct("!HH")
_H = struct.Struct("!H")
_I = struct.Struct("!I")
_i = struct.Struct("!i")
_III = struct.Struct("!III")
_III_signed = struct.Struct("!IIi")
_HHI = struct.Struct("!HHI")

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address

#: The type code RSPLIB (and draft-dreibholz-rserpool-asap-hropt) sends for
#: the Handle Resolution Option: 0x003f with the action bits 10 (skip the
#: parameter if unknown, do not report).
HANDLE_RESOLUTION_OPTION_TYPE = 0x803F

#: Handle Resolution Option item count meaning "as many as possible".
ITEMS_MAX = 0xFFFFFFFF

#: Transport use values (RFC 5354 section 3.3 and 3.4).
DATA_ONLY = 0
DATA_PLUS_CONTROL = 1

_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")


def _tlv(ptype, value):
    """
    Frame C{value} as a parameter of type C{ptype}, padded to 4 bytes.
    """
    length = 4 + len(value)
    if length > 0xFFFF:
        raise ValueError("parameter of type 0x%04x too long (%d bytes)" % (ptype, length))
    return _HH.pack(ptype, length) + value + _PADDING[length & 3]


def _invalid(reason, data, pos, end):
    return ProtocolError(ErrorCause.INVALID_VALUES, reason, data[pos:end])


# --------------------------------------------------------------------------
# Parameter classes


_ADDRESS_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)


def _addresses(value):
    return tuple(a if isinstance(a, _ADDRESS_TYPES) else ipaddress.ip_address(a) for a in value)


# Decoded addresses are immutable, and a registrar sees the same few again
# and again: keep the objects for the packed bytes (bounded).
_address_cache = {}


def _address_from(packed, cls):
    a = _address_cache.get(packed)
    if a is None:
        if len(_address_cache) >= 4096:
            _address_cache.clear()
        a = _address_cache[packed] = cls(packed)
    return a


def _u16(instance, attribute, value):
    if not 0 <= value <= 0xFFFF:
        raise ValueError("{} must fit in 16 bits, not {!r}".format(attribute.name, value))


def _u32(instance, attribute, value):
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError("{} must fit in 32 bits, not {!r}".format(attribute.name, value))


@attrs.frozen
class SCTPTransport:
    """
    SCTP Transport parameter (RFC 5354 section 3.2): where a PE or registrar
    is reached over SCTP.  Several addresses mean a multi-homed endpoint.

    @ivar port: the SCTP port.
    @ivar addresses: one or more L{ipaddress} addresses.
    @ivar transport_use: L{DATA_ONLY} or L{DATA_PLUS_CONTROL}.
    """

    port: int = attrs.field(validator=_u16)
    addresses: tuple = attrs.field(converter=_addresses)
    transport_use: int = attrs.field(default=DATA_ONLY, validator=_u16)

    param_type = ParamType.SCTP_TRANSPORT
    protocol = "sctp"


@attrs.frozen
class TCPTransport:
    """
    TCP Transport parameter (RFC 5354 section 3.3): exactly one address.

    @ivar port: the TCP port.
    @ivar addresses: a 1-tuple with the L{ipaddress} address.
    @ivar transport_use: L{DATA_ONLY} or L{DATA_PLUS_CONTROL}.
    """

    port: int = attrs.field(validator=_u16)
    addresses: tuple = attrs.field(converter=_addresses)
    transport_use: int = attrs.field(default=DATA_ONLY, validator=_u16)

    param_type = ParamType.TCP_TRANSPORT
    protocol = "tcp"


@attrs.frozen
class UDPTransport:
    """
    UDP Transport parameter (RFC 5354 section 3.4): exactly one address.

    @ivar reserved: the 16-bit reserved field; sent as 0, kept as received.
    """

    port: int = attrs.field(validator=_u16)
    addresses: tuple = attrs.field(converter=_addresses)
    reserved: int = attrs.field(default=0, validator=_u16)

    param_type = ParamType.UDP_TRANSPORT
    protocol = "udp"


@attrs.frozen
class UDPLiteTransport:
    """
    UDP-Lite Transport parameter (RFC 5354 section 3.5): exactly one address.
    """

    port: int = attrs.field(validator=_u16)
    addresses: tuple = attrs.field(converter=_addresses)
    reserved: int = attrs.field(default=0, validator=_u16)

    param_type = ParamType.UDP_LITE_TRANSPORT
    protocol = "udplite"


@attrs.frozen
class DCCPTransport:
    """
    DCCP Transport parameter (RFC 5354 section 3.6): port, service code and
    exactly one address.
    """

    port: int = attrs.field(validator=_u16)
    addresses: tuple = attrs.field(converter=_addresses)
    service_code: int = attrs.field(default=0, validator=_u32)
    reserved: int = attrs.field(default=0, validator=_u16)

    param_type = ParamType.DCCP_TRANSPORT
    protocol = "dccp"


#: All transport parameter classes, by parameter type.
TRANSPORTS = {
    cls.param_type: cls
    for cls in (SCTPTransport, TCPTransport, UDPTransport, UDPLiteTransport, DCCPTransport)
}
TRANSPORT_CLASSES = tuple(TRANSPORTS.values())


@attrs.frozen
class Policy:
    """
    Pool Member Selection Policy parameter (RFC 5354 section 3.7, RFC 5356).

    For a policy type listed in L{rserpool.codes.POLICY_FIELDS} C{values}
    holds one 32-bit integer per field, in wire order; use L{Policy.make}
    to build one by field name and L{Policy.get} to read a field.  An
    unknown policy type is carried opaquely in C{data}, so a registrar or a
    decoder can pass it on unchanged.

    @ivar policy_type: the 32-bit policy type.
    @ivar values: the policy's 32-bit fields.
    @ivar data: the raw value bytes after the type, for unknown types only.
    """

    policy_type: int = attrs.field(validator=_u32)
    values: tuple = attrs.field(default=(), converter=tuple)
    data: bytes = attrs.field(default=b"", converter=bytes)

    param_type = ParamType.POOL_MEMBER_SELECTION_POLICY

    def __attrs_post_init__(self):
        names = POLICY_FIELDS.get(self.policy_type)
        if names is not None:
            if len(self.values) != len(names):
                raise ValueError(
                    "policy 0x%08x has fields %s, got %d values"
                    % (self.policy_type, names, len(self.values))
                )
            if self.data:
                raise ValueError("a known policy type carries no opaque data")
        elif self.values:
            raise ValueError("unknown policy 0x%08x carries opaque data only" % self.policy_type)
        for v in self.values:
            if not 0 <= v <= 0xFFFFFFFF:
                raise ValueError("policy values are 32-bit unsigned, not %r" % (v,))

    @classmethod
    def make(cls, policy_type, **fields):
        """
        Build a policy of a known type from named fields; missing ones are 0.

        @param policy_type: a L{rserpool.codes.PolicyType}.
        @param fields: e.g. C{weight=7} or C{load=0x20000000}.
        @raise ValueError: for an unknown type or field name.
        """
        names = POLICY_FIELDS.get(policy_type)
        if names is None:
            raise ValueError("unknown policy type 0x%08x" % (policy_type,))
        unknown = set(fields) - set(names)
        if unknown:
            raise ValueError("policy %s has no field %s" % (POLICY_NAMES[policy_type], ", ".join(sorted(unknown))))
        return cls(policy_type, tuple(fields.get(n, 0) for n in names))

    @property
    def name(self):
        """
        RSPLIB's name for the policy (C{"RoundRobin"}...), or C{None}.
        """
        return POLICY_NAMES.get(self.policy_type)

    @property
    def fields(self):
        """
        The policy's fields as a C{dict} of name to value (empty if unknown).
        """
        return dict(zip(POLICY_FIELDS.get(self.policy_type, ()), self.values))

    def get(self, name, default=None):
        """
        One field by name, e.g. C{policy.get("load")}.
        """
        return self.fields.get(name, default)


@attrs.frozen
class PoolHandle:
    """
    Pool Handle parameter (RFC 5354 section 3.8): an opaque byte string.
    """

    handle: bytes = attrs.field(converter=bytes)

    param_type = ParamType.POOL_HANDLE


@attrs.frozen
class PoolElement:
    """
    Pool Element parameter (RFC 5354 section 3.9).

    @ivar identifier: the PE identifier (32 bits, chosen by the PE).
    @ivar home_registrar: the home registrar's server id (0 if none yet).
    @ivar registration_life: registration lifetime in milliseconds; a signed
        32-bit integer on the wire.
    @ivar user_transport: where PUs reach the PE (a transport parameter).
    @ivar policy: the PE's L{Policy}.
    @ivar asap_transport: where the registrar reaches the PE over ASAP;
        RSPLIB leaves it out of Registration and puts it into ENRP Handle
        Update and Handle Table Response.
    """

    identifier: int = attrs.field(validator=_u32)
    home_registrar: int = attrs.field(validator=_u32)
    registration_life: int = attrs.field()
    user_transport: object = attrs.field(
        validator=attrs.validators.instance_of(TRANSPORT_CLASSES)
    )
    policy: Policy = attrs.field(validator=attrs.validators.instance_of(Policy))
    asap_transport: object = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(TRANSPORT_CLASSES)),
    )

    param_type = ParamType.POOL_ELEMENT

    @registration_life.validator
    def _check_life(self, attribute, value):
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise ValueError("registration_life is a signed 32-bit integer")


@attrs.frozen
class ServerInformation:
    """
    Server Information parameter (RFC 5354 section 3.10): a registrar's id
    and where its ENRP endpoint listens.
    """

    server_id: int = attrs.field(validator=_u32)
    transport: object = attrs.field(validator=attrs.validators.instance_of(TRANSPORT_CLASSES))

    param_type = ParamType.SERVER_INFORMATION


@attrs.frozen
class Cause:
    """
    One error cause inside an Operation Error (RFC 5354 section 3.11).

    @ivar code: the cause code (an L{ErrorCause} where known).
    @ivar info: the cause-specific information, raw: the offending TLV for
        parameter causes, the offending message for Unrecognized Message.
    """

    code: int = attrs.field(validator=_u16)
    info: bytes = attrs.field(default=b"", converter=bytes)

    @property
    def name(self):
        """
        The cause's name, e.g. C{"UNKNOWN_POOL_HANDLE"}, or RSPLIB's
        (C{"RSPLIB_INVALID_VALUE"}); see L{rserpool.codes.cause_name}.
        """
        return cause_name(self.code)


#: The most bytes of information an error cause we send carries.  The
#: information of Unrecognized Parameter, Unrecognized Message and Invalid
#: Values echoes the offending input (RFC 5354 section 3.11), which may
#: itself fill a whole message: its first KiB tells what was wrong, and an
#: answer is then never larger than a few KiB (issue #14: the echo of a
#: 64 KiB message no longer fitted in the answer's 16-bit length).
MAX_CAUSE_INFO = 1024

#: The most causes an Operation Error we send carries (one per unrecognized
#: parameter of a message, RFC 5354 section 3, at most this many).
MAX_CAUSES = 16


@attrs.frozen
class OperationError:
    """
    Operation Error parameter (RFC 5354 section 3.11): one or more causes.

    The constructors L{of}, L{from_error} and L{unrecognized}, which build
    what a node answers with, keep at most L{MAX_CAUSE_INFO} bytes of each
    cause's information and at most L{MAX_CAUSES} causes, so that an
    answer always fits in a message.  The class itself keeps whatever it
    is given (a decoded Operation Error is as it was received).
    """

    causes: tuple = attrs.field(converter=tuple)

    param_type = ParamType.OPERATION_ERROR

    @classmethod
    def of(cls, code, info=b""):
        """
        An Operation Error with a single cause, its information cut to
        L{MAX_CAUSE_INFO} bytes.
        """
        return cls((Cause(code, info[:MAX_CAUSE_INFO]),))

    @classmethod
    def from_error(cls, error):
        """
        The Operation Error that answers a L{ProtocolError}.
        """
        return cls.of(error.cause, error.info)

    @classmethod
    def unrecognized(cls, tlvs):
        """
        The Operation Error that reports parameters skipped with a report
        asked for (RFC 5354 section 3, action bits 11): one Unrecognized
        Parameter cause per TLV, for the first L{MAX_CAUSES} of them, each
        cut to L{MAX_CAUSE_INFO} bytes.

        @param tlvs: the parameters' bytes (a message's C{unrecognized}).
        """
        return cls(
            tuple(
                Cause(ErrorCause.UNRECOGNIZED_PARAMETER, tlv[:MAX_CAUSE_INFO])
                for tlv in itertools.islice(tlvs, MAX_CAUSES)
            )
        )

    def summary(self, limit=3):
        """
        The causes by name for a log line, at most C{limit} of them
        (C{"INVALID_VALUES, UNKNOWN_POOL_HANDLE and 15998 more"}): one
        64 KiB Error message may hold 16,000 causes, and a log line about it
        stays short.
        """
        names = [c.name for c in self.causes[:limit]]
        rest = len(self.causes) - len(names)
        text = ", ".join(names)
        if rest > 0:
            text += " and %d more" % rest
        return text


@attrs.frozen
class CookieParameter:
    """
    Cookie parameter (RFC 5354 section 3.12): opaque bytes for the PU.
    """

    cookie: bytes = attrs.field(converter=bytes)

    param_type = ParamType.COOKIE


@attrs.frozen
class PEIdentifier:
    """
    PE Identifier parameter (RFC 5354 section 3.13).
    """

    identifier: int = attrs.field(validator=_u32)

    param_type = ParamType.PE_IDENTIFIER


@attrs.frozen
class PEChecksum:
    """
    PE Checksum parameter (RFC 5354 section 3.14): a 16-bit checksum.
    """

    checksum: int = attrs.field(validator=_u16)

    param_type = ParamType.PE_CHECKSUM


@attrs.frozen
class HandleResolutionOption:
    """
    Handle Resolution Option (draft-dreibholz-rserpool-asap-hropt): how many
    PEs a PU wants in a Handle Resolution Response; L{ITEMS_MAX} for as many
    as the registrar gives.  Sent as type 0x803f.
    """

    items: int = attrs.field(validator=_u32)

    param_type = ParamType.HANDLE_RESOLUTION_OPTION


@attrs.frozen
class UnknownParameter:
    """
    A parameter of a type this codec does not know, kept as raw bytes.

    Only L{decode_parameter} returns these; inside a message an unknown
    parameter is handled by the two high bits of its type instead.
    """

    param_type: int = attrs.field(validator=_u16)
    value: bytes = attrs.field(converter=bytes)


# --------------------------------------------------------------------------
# Encoding


def _enc_address(a):
    if a.version == 4:
        return b"\0\x01\0\x08" + a.packed
    return b"\0\x02\0\x14" + a.packed


def _enc_transport(t):
    addrs = b"".join([_enc_address(a) for a in t.addresses])
    ptype = t.param_type
    if ptype == ParamType.DCCP_TRANSPORT:
        head = _HHI.pack(t.port, t.reserved, t.service_code)
    elif ptype == ParamType.SCTP_TRANSPORT or ptype == ParamType.TCP_TRANSPORT:
        head = _HH.pack(t.port, t.transport_use)
    else:
        head = _HH.pack(t.port, t.reserved)
    return _tlv(ptype, head + addrs)


def _enc_policy(p):
    if p.data:
        body = _I.pack(p.policy_type) + p.data
    else:
        body = struct.pack("!%dI" % (1 + len(p.values)), p.policy_type, *p.values)
    return _tlv(ParamType.POOL_MEMBER_SELECTION_POLICY, body)


def _enc_pool_element(pe):
    parts = [
        _III_signed.pack(pe.identifier, pe.home_registrar, pe.registration_life),
        _enc_transport(pe.user_transport),
        _enc_policy(pe.policy),
    ]
    if pe.asap_transport is not None:
        parts.append(_enc_transport(pe.asap_transport))
    return _tlv(ParamType.POOL_ELEMENT, b"".join(parts))


def _enc_causes(causes):
    out = []
    for c in causes:
        length = 4 + len(c.info)
        out.append(_HH.pack(c.code, length) + c.info + _PADDING[length & 3])
    return b"".join(out)


def encode_pool_handle(handle):
    """
    The Pool Handle TLV for C{handle} (bytes).
    """
    return _tlv(ParamType.POOL_HANDLE, handle)


def encode_pe_identifier(identifier):
    """
    The PE Identifier TLV for C{identifier}.
    """
    return b"\0\x0e\0\x08" + _I.pack(identifier)


def encode_cookie(cookie):
    """
    The Cookie TLV for C{cookie} (bytes).
    """
    return _tlv(ParamType.COOKIE, cookie)


def encode_operation_error(error):
    """
    The Operation Error TLV for an L{OperationError}.
    """
    return _tlv(ParamType.OPERATION_ERROR, _enc_causes(error.causes))


def encode_server_information(info):
    """
    The Server Information TLV for a L{ServerInformation}.
    """
    return _tlv(ParamType.SERVER_INFORMATION, _I.pack(info.server_id) + _enc_transport(info.transport))


_ENCODERS = {
    IPv4Address: _enc_address,
    IPv6Address: _enc_address,
    SCTPTransport: _enc_transport,
    TCPTransport: _enc_transport,
    UDPTransport: _enc_transport,
    UDPLiteTransport: _enc_transport,
    DCCPTransport: _enc_transport,
    Policy: _enc_policy,
    PoolHandle: lambda p: encode_pool_handle(p.handle),
    PoolElement: _enc_pool_element,
    ServerInformation: encode_server_information,
    OperationError: encode_operation_error,
    CookieParameter: lambda p: encode_cookie(p.cookie),
    PEIdentifier: lambda p: encode_pe_identifier(p.identifier),
    PEChecksum: lambda p: _tlv(ParamType.PE_CHECKSUM, _H.pack(p.checksum)),
    HandleResolutionOption: lambda p: _tlv(HANDLE_RESOLUTION_OPTION_TYPE, _I.pack(p.items)),
    UnknownParameter: lambda p: _tlv(p.param_type, p.value),
}


def encode_parameter(param):
    """
    Encode one parameter object as its TLV, padding included.

    @param param: an L{ipaddress} address or one of this module's classes.
    @rtype: L{bytes}
    @raise TypeError: for anything else.
    """
    try:
        encoder = _ENCODERS[type(param)]
    except KeyError:
        raise TypeError("not an RSerPool parameter: {!r}".format(param)) from None
    return encoder(param)


# --------------------------------------------------------------------------
# Decoding.  Every decoder takes (data, pos, end, reports): the parameter's
# TLV is data[pos:end] (the length field's extent, padding excluded), and
# `reports` collects the TLVs of unknown parameters whose type asks for a
# report while processing goes on (action bits 11).


def scan(data, pos, end, reports, decoders=None, container=None):
    """
    Decode the sequence of parameters in C{data[pos:end]}.

    Unknown parameter types are handled as RFC 5354 section 3 says, by the
    two high bits of the type: 00 stop and discard silently, 01 stop,
    discard and report (both raise L{ProtocolError} with cause Unrecognized
    Parameter, C{report} telling which), 10 skip, 11 skip and report (the
    TLV is appended to C{reports}).

    Inside a parameter (C{decoders} given) only the parameters it may hold
    are decoded: addresses in a transport, transports and a policy in a
    Pool Element, a transport in a Server Information.  Any other known
    parameter there is Invalid Values, without decoding it.  Nesting is
    thereby bounded by the grammar (a message holds a Pool Element holds a
    transport holds addresses: three levels), whatever the input: Pool
    Elements nested 16,000 deep used to exhaust the stack (issue #14).

    @param decoders: the decoders of the parameters allowed here, by type;
        C{None} for a message body, where every known parameter is decoded
        (the message's decoder checks which it got).
    @param container: the name of the enclosing parameter, for the error.
    @return: a list of decoded parameters.
    @raise ProtocolError: on any malformation.
    """
    if decoders is None:
        decoders = _DECODERS
    out = []
    append = out.append
    while pos < end:
        if end - pos < 4:
            raise _invalid("%d stray bytes after the last parameter" % (end - pos), data, pos, end)
        ptype, plen = _HH.unpack_from(data, pos)
        tend = pos + plen
        if plen < 4 or tend > end:
            raise _invalid(
                "parameter 0x%04x length %d overruns its container" % (ptype, plen), data, pos, end
            )
        decoder = decoders.get(ptype)
        if decoder is not None:
            append(decoder(data, pos, tend, reports))
        elif ptype in _DECODERS:
            # A known parameter where it does not belong (a Pool Element
            # inside a Pool Element...): RFC 5354 section 3 gives it no
            # meaning there.
            raise _invalid(
                "parameter 0x%04x cannot be inside a %s" % (ptype, container), data, pos, tend
            )
        else:
            action = ptype >> 14
            if action < 2:
                raise ProtocolError(
                    ErrorCause.UNRECOGNIZED_PARAMETER,
                    "unrecognized parameter type 0x%04x" % ptype,
                    data[pos:tend],
                    report=action == 1,
                )
            if action == 3:
                reports.append(bytes(data[pos:tend]))
        pos = (tend + 3) & ~3
    return out


def _dec_ipv4(data, pos, end, reports):
    if end - pos != 8:
        raise _invalid("IPv4 Address parameter of length %d" % (end - pos), data, pos, end)
    return _address_from(bytes(data[pos + 4 : end]), IPv4Address)


def _dec_ipv6(data, pos, end, reports):
    if end - pos != 20:
        raise _invalid("IPv6 Address parameter of length %d" % (end - pos), data, pos, end)
    return _address_from(bytes(data[pos + 4 : end]), IPv6Address)


def _transport_addresses(data, pos, start, end, reports, many):
    addrs = scan(data, start, end, reports, _ADDRESS_DECODERS, "transport parameter")
    if not addrs or (not many and len(addrs) != 1):
        raise _invalid(
            "transport parameter with %d addresses" % len(addrs), data, pos, end
        )
    return tuple(addrs)


def _dec_sctp(data, pos, end, reports):
    if end - pos < 8:
        raise _invalid("SCTP Transport parameter too short", data, pos, end)
    port, use = _HH.unpack_from(data, pos + 4)
    return SCTPTransport(port, _transport_addresses(data, pos, pos + 8, end, reports, True), use)


def _dec_tcp(data, pos, end, reports):
    if end - pos < 8:
        raise _invalid("TCP Transport parameter too short", data, pos, end)
    port, use = _HH.unpack_from(data, pos + 4)
    return TCPTransport(port, _transport_addresses(data, pos, pos + 8, end, reports, False), use)


def _dec_udp(data, pos, end, reports):
    if end - pos < 8:
        raise _invalid("UDP Transport parameter too short", data, pos, end)
    port, reserved = _HH.unpack_from(data, pos + 4)
    return UDPTransport(port, _transport_addresses(data, pos, pos + 8, end, reports, False), reserved)


def _dec_udplite(data, pos, end, reports):
    if end - pos < 8:
        raise _invalid("UDP-Lite Transport parameter too short", data, pos, end)
    port, reserved = _HH.unpack_from(data, pos + 4)
    return UDPLiteTransport(
        port, _transport_addresses(data, pos, pos + 8, end, reports, False), reserved
    )


def _dec_dccp(data, pos, end, reports):
    if end - pos < 12:
        raise _invalid("DCCP Transport parameter too short", data, pos, end)
    port, reserved, code = _HHI.unpack_from(data, pos + 4)
    return DCCPTransport(
        port, _transport_addresses(data, pos, pos + 12, end, reports, False), code, reserved
    )


_POLICY_STRUCTS = {t: struct.Struct("!%dI" % len(f)) for t, f in POLICY_FIELDS.items()}


def _dec_policy(data, pos, end, reports):
    if end - pos < 8:
        raise _invalid("Policy parameter without a policy type", data, pos, end)
    (ptype,) = _I.unpack_from(data, pos + 4)
    fmt = _POLICY_STRUCTS.get(ptype)
    if fmt is None:
        return Policy(ptype, (), bytes(data[pos + 8 : end]))
    if end - pos - 8 != fmt.size:
        raise _invalid(
            "policy 0x%08x needs %d bytes of fields, got %d" % (ptype, fmt.size, end - pos - 8),
            data,
            pos,
            end,
        )
    return Policy(ptype, fmt.unpack_from(data, pos + 8))


def _dec_pool_handle(data, pos, end, reports):
    return PoolHandle(bytes(data[pos + 4 : end]))


def _dec_pool_element(data, pos, end, reports):
    if end - pos < 16:
        raise _invalid("Pool Element parameter too short", data, pos, end)
    ident, home, life = _III_signed.unpack_from(data, pos + 4)
    inner = scan(data, pos + 16, end, reports, _POOL_ELEMENT_DECODERS, "Pool Element")
    n = len(inner)
    if (
        n < 2
        or n > 3
        or not isinstance(inner[0], TRANSPORT_CLASSES)
        or not isinstance(inner[1], Policy)
        or (n == 3 and not isinstance(inner[2], TRANSPORT_CLASSES))
    ):
        raise _invalid(
            "Pool Element needs a user transport, a policy and an optional ASAP transport",
            data,
            pos,
            end,
        )
    return PoolElement(ident, home, life, inner[0], inner[1], inner[2] if n == 3 else None)


def _dec_server_information(data, pos, end, reports):
    if end - pos < 8:
        raise _invalid("Server Information parameter too short", data, pos, end)
    (server_id,) = _I.unpack_from(data, pos + 4)
    inner = scan(data, pos + 8, end, reports, _TRANSPORT_DECODERS, "Server Information")
    if len(inner) != 1 or not isinstance(inner[0], TRANSPORT_CLASSES):
        raise _invalid("Server Information needs exactly one transport", data, pos, end)
    return ServerInformation(server_id, inner[0])


def _dec_operation_error(data, pos, end, reports):
    causes = []
    p = pos + 4
    while p < end:
        if end - p < 4:
            raise _invalid("stray bytes after the last error cause", data, pos, end)
        code, clen = _HH.unpack_from(data, p)
        if clen < 4 or p + clen > end:
            raise _invalid("error cause length %d overruns its parameter" % clen, data, pos, end)
        causes.append(Cause(code, bytes(data[p + 4 : p + clen])))
        p = (p + clen + 3) & ~3
    if not causes:
        raise _invalid("Operation Error without a cause", data, pos, end)
    return OperationError(tuple(causes))


def _dec_cookie(data, pos, end, reports):
    return CookieParameter(bytes(data[pos + 4 : end]))


def _dec_pe_identifier(data, pos, end, reports):
    if end - pos != 8:
        raise _invalid("PE Identifier parameter of length %d" % (end - pos), data, pos, end)
    return PEIdentifier(_I.unpack_from(data, pos + 4)[0])


def _dec_pe_checksum(data, pos, end, reports):
    if end - pos != 6:
        raise _invalid("PE Checksum parameter of length %d" % (end - pos), data, pos, end)
    return PEChecksum(_H.unpack_from(data, pos + 4)[0])


def _dec_hropt(data, pos, end, reports):
    if end - pos != 8:
        raise _invalid("Handle Resolution Option of length %d" % (end - pos), data, pos, end)
    return HandleResolutionOption(_I.unpack_from(data, pos + 4)[0])


_DECODERS = {
    ParamType.IPV4_ADDRESS: _dec_ipv4,
    ParamType.IPV6_ADDRESS: _dec_ipv6,
    ParamType.DCCP_TRANSPORT: _dec_dccp,
    ParamType.SCTP_TRANSPORT: _dec_sctp,
    ParamType.TCP_TRANSPORT: _dec_tcp,
    ParamType.UDP_TRANSPORT: _dec_udp,
    ParamType.UDP_LITE_TRANSPORT: _dec_udplite,
    ParamType.POOL_MEMBER_SELECTION_POLICY: _dec_policy,
    ParamType.POOL_HANDLE: _dec_pool_handle,
    ParamType.POOL_ELEMENT: _dec_pool_element,
    ParamType.SERVER_INFORMATION: _dec_server_information,
    ParamType.OPERATION_ERROR: _dec_operation_error,
    ParamType.COOKIE: _dec_cookie,
    ParamType.PE_IDENTIFIER: _dec_pe_identifier,
    ParamType.PE_CHECKSUM: _dec_pe_checksum,
    # The option is defined as 0x003f; RSPLIB sets the "skip" action bits.
    ParamType.HANDLE_RESOLUTION_OPTION: _dec_hropt,
    HANDLE_RESOLUTION_OPTION_TYPE: _dec_hropt,
}
# int keys hash faster than IntEnum members in the hot path
_DECODERS = {int(k): v for k, v in _DECODERS.items()}
# What a parameter may hold (RFC 5354 sections 3.2 to 3.10): see scan.
_ADDRESS_DECODERS = {
    int(t): _DECODERS[t] for t in (ParamType.IPV4_ADDRESS, ParamType.IPV6_ADDRESS)
}
_TRANSPORT_DECODERS = {int(t): _DECODERS[t] for t in TRANSPORTS}
_POOL_ELEMENT_DECODERS = dict(_TRANSPORT_DECODERS)
_POOL_ELEMENT_DECODERS[int(ParamType.POOL_MEMBER_SELECTION_POLICY)] = _dec_policy


def decode_parameter(data):
    """
    Decode exactly one parameter (with or without its trailing padding).

    Unlike inside a message, an unknown parameter type yields an
    L{UnknownParameter} instead of applying the action bits.

    @param data: the TLV's bytes.
    @return: an address or one of this module's parameter classes.
    @raise ProtocolError: when C{data} is not exactly one valid parameter.
    """
    data = bytes(data)
    if len(data) < 4:
        raise ProtocolError(ErrorCause.INVALID_VALUES, "parameter shorter than its header", data)
    ptype, plen = _HH.unpack_from(data, 0)
    if plen < 4 or plen > len(data):
        raise ProtocolError(
            ErrorCause.INVALID_VALUES, "parameter length %d does not fit %d bytes" % (plen, len(data)), data
        )
    if len(data) > ((plen + 3) & ~3):
        raise ProtocolError(ErrorCause.INVALID_VALUES, "bytes after the parameter", data)
    decoder = _DECODERS.get(ptype)
    if decoder is None:
        return UnknownParameter(ptype, data[4:plen])
    return decoder(data, 0, plen, [])
