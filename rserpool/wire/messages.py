"""
ASAP (RFC 5352 section 2.2) and ENRP (RFC 5353 section 2) messages.

A message is ``type:8 | flags:8 | length:16 | body``.  The length counts the
header and the body; every parameter in the body is padded to 4 bytes, so a
message we write is a multiple of 4 bytes long and its length field counts
the padding of its last parameter too, as RSPLIB does.  When reading, a
length that leaves out that final padding is accepted as well.

ASAP and ENRP use the same type numbers: the transport (SCTP PPID 11 or 12,
port 3863 or 9901) tells them apart, so :func:`decode` takes the protocol.

Flags are named boolean attributes (``reject``, ``home``, ``more_to_send``,
...).  Flag bits a message does not define are sent as 0 and ignored when
received.  Unknown parameters whose type says "skip and report" (RFC 5354
section 3, action bits 11) do not stop decoding; their TLVs end up in the
message's ``unrecognized`` attribute, for the caller to report in an
Operation Error.  That attribute is not part of the message's equality and
is never encoded.
"""
import struct

import attrs

from rserpool.codes import ASAPType, ENRPType, ErrorCause
from rserpool.wire import params as P
from rserpool.wire.protocol_error import ProtocolError
from rserpool.wire.params import (
    CookieParameter,
    HandleResolutionOption,
    OperationError,
    PEChecksum,
    PEIdentifier,
    Policy,
    PoolElement,
    PoolHandle,
    ServerInformation,
    TRANSPORT_CLASSES,
    _u16,
    _u32,
)

_BBH = struct.Struct("!BBH")
_I = struct.Struct("!I")
_II = struct.Struct("!II")
_III = struct.Struct("!III")
_IIHH = struct.Struct("!IIHH")

ASAP = "asap"
ENRP = "enrp"

#: Handle Update actions (RFC 5353 section 2.4).
ADD_PE = 0
DEL_PE = 1


def _unrecognized():
    return attrs.field(default=(), eq=False, repr=False, converter=tuple, kw_only=True)


def _handle():
    return attrs.field(converter=bytes)


def _optional_error():
    return attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(OperationError))
    )


# --------------------------------------------------------------------------
# ASAP


@attrs.frozen
class Registration:
    """
    ASAP Registration (RFC 5352 section 2.2.1): a PE asks to join a pool.
    """

    pool_handle: bytes = _handle()
    pool_element: PoolElement = attrs.field(validator=attrs.validators.instance_of(PoolElement))
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.REGISTRATION


@attrs.frozen
class Deregistration:
    """
    ASAP Deregistration (RFC 5352 section 2.2.2): a PE leaves a pool.
    """

    pool_handle: bytes = _handle()
    identifier: int = attrs.field(validator=_u32)
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.DEREGISTRATION


@attrs.frozen
class RegistrationResponse:
    """
    ASAP Registration Response (RFC 5352 section 2.2.3).

    @ivar reject: the R flag: the registration was refused; C{error} says why.
    """

    pool_handle: bytes = _handle()
    identifier: int = attrs.field(validator=_u32)
    reject: bool = False
    error: OperationError = _optional_error()
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.REGISTRATION_RESPONSE


@attrs.frozen
class DeregistrationResponse:
    """
    ASAP Deregistration Response (RFC 5352 section 2.2.4).
    """

    pool_handle: bytes = _handle()
    identifier: int = attrs.field(validator=_u32)
    error: OperationError = _optional_error()
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.DEREGISTRATION_RESPONSE


@attrs.frozen
class HandleResolution:
    """
    ASAP Handle Resolution (RFC 5352 section 2.2.5).

    @ivar items: the Handle Resolution Option's item count, or C{None} to
        send no option (the registrar then uses its default).
    """

    pool_handle: bytes = _handle()
    items: int = attrs.field(default=None, validator=attrs.validators.optional(_u32))
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.HANDLE_RESOLUTION


@attrs.frozen
class HandleResolutionResponse:
    """
    ASAP Handle Resolution Response (RFC 5352 section 2.2.6): the pool's
    policy and the selected PEs, or an Operation Error (Unknown Pool Handle).
    """

    pool_handle: bytes = _handle()
    policy: Policy = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Policy))
    )
    pool_elements: tuple = attrs.field(default=(), converter=tuple)
    error: OperationError = _optional_error()
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.HANDLE_RESOLUTION_RESPONSE


@attrs.frozen
class EndpointKeepAlive:
    """
    ASAP Endpoint Keep Alive (RFC 5352 section 2.2.7), from a home registrar
    to its PE.

    @ivar home: the H flag: the sender wants to become the PE's new home
        registrar (after a takeover).
    @ivar identifier: the PE identifier; not in the RFC, added by RSPLIB
        (C{None} to leave it out).
    """

    server_id: int = attrs.field(validator=_u32)
    pool_handle: bytes = _handle()
    identifier: int = attrs.field(default=None, validator=attrs.validators.optional(_u32))
    home: bool = False
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.ENDPOINT_KEEP_ALIVE


@attrs.frozen
class EndpointKeepAliveAck:
    """
    ASAP Endpoint Keep Alive Ack (RFC 5352 section 2.2.8).
    """

    pool_handle: bytes = _handle()
    identifier: int = attrs.field(validator=_u32)
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.ENDPOINT_KEEP_ALIVE_ACK


@attrs.frozen
class EndpointUnreachable:
    """
    ASAP Endpoint Unreachable (RFC 5352 section 2.2.9): a PU reports a PE.
    """

    pool_handle: bytes = _handle()
    identifier: int = attrs.field(validator=_u32)
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.ENDPOINT_UNREACHABLE


@attrs.frozen
class ServerAnnounce:
    """
    ASAP Server Announce (RFC 5352 section 2.2.10): a registrar tells where
    it serves ASAP.  RSPLIB sends no transports; the sender's address is
    then the registrar's.
    """

    server_id: int = attrs.field(validator=_u32)
    transports: tuple = attrs.field(default=(), converter=tuple)
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.SERVER_ANNOUNCE


@attrs.frozen
class Cookie:
    """
    ASAP Cookie (RFC 5352 section 2.2.11): state a PE hands its PU.
    """

    cookie: bytes = attrs.field(converter=bytes)
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.COOKIE


@attrs.frozen
class CookieEcho:
    """
    ASAP Cookie Echo (RFC 5352 section 2.2.12): a PU returns its last cookie
    to the PE it failed over to.
    """

    cookie: bytes = attrs.field(converter=bytes)
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.COOKIE_ECHO


@attrs.frozen
class BusinessCard:
    """
    ASAP Business Card (RFC 5352 section 2.2.13): the pool a PU belongs to
    and the PEs to fail over to, in order.
    """

    pool_handle: bytes = _handle()
    pool_elements: tuple = attrs.field(converter=tuple)
    policy: Policy = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Policy))
    )
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.BUSINESS_CARD


@attrs.frozen
class ASAPError:
    """
    ASAP Error (RFC 5352 section 2.2.14).
    """

    error: OperationError = attrs.field(validator=attrs.validators.instance_of(OperationError))
    unrecognized: tuple = _unrecognized()

    protocol = ASAP
    message_type = ASAPType.ERROR


# --------------------------------------------------------------------------
# ENRP: every body starts with the sender's and the receiver's server ids.


def _server_id():
    return attrs.field(validator=_u32)


@attrs.frozen
class Presence:
    """
    ENRP Presence (RFC 5353 section 2.1).

    @ivar checksum: the sender's PE checksum (PE Checksum parameter).
    @ivar reply_required: the R flag.
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    checksum: int = attrs.field(validator=_u16)
    server_information: ServerInformation = attrs.field(
        validator=attrs.validators.instance_of(ServerInformation)
    )
    reply_required: bool = False
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.PRESENCE


@attrs.frozen
class HandleTableRequest:
    """
    ENRP Handle Table Request (RFC 5353 section 2.2).

    @ivar own_children_only: the W flag: only PEs the receiver is home for.
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    own_children_only: bool = False
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.HANDLE_TABLE_REQUEST


@attrs.frozen
class HandleTableEntry:
    """
    One pool of a Handle Table Response: a handle and its PEs.
    """

    pool_handle: bytes = _handle()
    pool_elements: tuple = attrs.field(converter=tuple)


@attrs.frozen
class HandleTableResponse:
    """
    ENRP Handle Table Response (RFC 5353 section 2.3).

    @ivar entries: L{HandleTableEntry} items, in wire order.
    @ivar more_to_send: the M flag.
    @ivar reject: the R flag.
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    entries: tuple = attrs.field(default=(), converter=tuple)
    more_to_send: bool = False
    reject: bool = False
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.HANDLE_TABLE_RESPONSE


@attrs.frozen
class HandleUpdate:
    """
    ENRP Handle Update (RFC 5353 section 2.4).

    @ivar action: L{ADD_PE} or L{DEL_PE}.
    @ivar takeover_suggested: the T flag (RSPLIB extension,
        draft-dreibholz-rserpool-enrp-takeover).
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    action: int = attrs.field(validator=_u16)
    pool_handle: bytes = _handle()
    pool_element: PoolElement = attrs.field(validator=attrs.validators.instance_of(PoolElement))
    takeover_suggested: bool = False
    reserved: int = attrs.field(default=0, validator=_u16)
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.HANDLE_UPDATE


@attrs.frozen
class ListRequest:
    """
    ENRP List Request (RFC 5353 section 2.5).
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.LIST_REQUEST


@attrs.frozen
class ListResponse:
    """
    ENRP List Response (RFC 5353 section 2.6).
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    servers: tuple = attrs.field(default=(), converter=tuple)
    reject: bool = False
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.LIST_RESPONSE


@attrs.frozen
class InitTakeover:
    """
    ENRP Init Takeover (RFC 5353 section 2.7).
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    target_id: int = _server_id()
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.INIT_TAKEOVER


@attrs.frozen
class InitTakeoverAck:
    """
    ENRP Init Takeover Ack (RFC 5353 section 2.8).
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    target_id: int = _server_id()
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.INIT_TAKEOVER_ACK


@attrs.frozen
class TakeoverServer:
    """
    ENRP Takeover Server (RFC 5353 section 2.9).
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    target_id: int = _server_id()
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.TAKEOVER_SERVER


@attrs.frozen
class ENRPError:
    """
    ENRP Error (RFC 5353 section 2.10).
    """

    sender_id: int = _server_id()
    receiver_id: int = _server_id()
    error: OperationError = attrs.field(validator=attrs.validators.instance_of(OperationError))
    unrecognized: tuple = _unrecognized()

    protocol = ENRP
    message_type = ENRPType.ERROR


ASAP_MESSAGES = (
    Registration,
    Deregistration,
    RegistrationResponse,
    DeregistrationResponse,
    HandleResolution,
    HandleResolutionResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    ServerAnnounce,
    Cookie,
    CookieEcho,
    BusinessCard,
    ASAPError,
)
ENRP_MESSAGES = (
    Presence,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    ListRequest,
    ListResponse,
    InitTakeover,
    InitTakeoverAck,
    TakeoverServer,
    ENRPError,
)
MESSAGE_CLASSES = ASAP_MESSAGES + ENRP_MESSAGES


# --------------------------------------------------------------------------
# Encoding: each function returns (flags, body bytes).

_ph = P.encode_pool_handle
_pei = P.encode_pe_identifier
_pe = P._enc_pool_element
_oe = P.encode_operation_error


def _e_registration(m):
    return 0, _ph(m.pool_handle) + _pe(m.pool_element)


def _e_handle_and_id(m):
    return 0, _ph(m.pool_handle) + _pei(m.identifier)


def _e_registration_response(m):
    body = _ph(m.pool_handle) + _pei(m.identifier)
    if m.error is not None:
        body += _oe(m.error)
    return int(m.reject), body


def _e_deregistration_response(m):
    body = _ph(m.pool_handle) + _pei(m.identifier)
    if m.error is not None:
        body += _oe(m.error)
    return 0, body


def _e_handle_resolution(m):
    body = _ph(m.pool_handle)
    if m.items is not None:
        body += P._tlv(P.HANDLE_RESOLUTION_OPTION_TYPE, _I.pack(m.items))
    return 0, body


def _e_handle_resolution_response(m):
    parts = [_ph(m.pool_handle)]
    if m.policy is not None:
        parts.append(P._enc_policy(m.policy))
    parts.extend(_pe(pe) for pe in m.pool_elements)
    if m.error is not None:
        parts.append(_oe(m.error))
    return 0, b"".join(parts)


def _e_keep_alive(m):
    body = _I.pack(m.server_id) + _ph(m.pool_handle)
    if m.identifier is not None:
        body += _pei(m.identifier)
    return int(m.home), body


def _e_server_announce(m):
    return 0, _I.pack(m.server_id) + b"".join(P._enc_transport(t) for t in m.transports)


def _e_cookie(m):
    return 0, P.encode_cookie(m.cookie)


def _e_business_card(m):
    parts = [_ph(m.pool_handle)]
    if m.policy is not None:
        parts.append(P._enc_policy(m.policy))
    parts.extend(_pe(pe) for pe in m.pool_elements)
    return 0, b"".join(parts)


def _e_asap_error(m):
    return 0, _oe(m.error)


def _e_presence(m):
    return int(m.reply_required), (
        _II.pack(m.sender_id, m.receiver_id)
        + P._tlv(P.ParamType.PE_CHECKSUM, struct.pack("!H", m.checksum))
        + P.encode_server_information(m.server_information)
    )


def _e_ids(m):
    return 0, _II.pack(m.sender_id, m.receiver_id)


def _e_handle_table_request(m):
    return int(m.own_children_only), _II.pack(m.sender_id, m.receiver_id)


def _e_handle_table_response(m):
    parts = [_II.pack(m.sender_id, m.receiver_id)]
    for entry in m.entries:
        parts.append(_ph(entry.pool_handle))
        parts.extend(_pe(pe) for pe in entry.pool_elements)
    return int(m.reject) | (int(m.more_to_send) << 1), b"".join(parts)


def _e_handle_update(m):
    return int(m.takeover_suggested), (
        _IIHH.pack(m.sender_id, m.receiver_id, m.action, m.reserved)
        + _ph(m.pool_handle)
        + _pe(m.pool_element)
    )


def _e_list_response(m):
    return int(m.reject), _II.pack(m.sender_id, m.receiver_id) + b"".join(
        P.encode_server_information(s) for s in m.servers
    )


def _e_target(m):
    return 0, _III.pack(m.sender_id, m.receiver_id, m.target_id)


def _e_enrp_error(m):
    return 0, _II.pack(m.sender_id, m.receiver_id) + _oe(m.error)


_ENCODERS = {
    Registration: _e_registration,
    Deregistration: _e_handle_and_id,
    RegistrationResponse: _e_registration_response,
    DeregistrationResponse: _e_deregistration_response,
    HandleResolution: _e_handle_resolution,
    HandleResolutionResponse: _e_handle_resolution_response,
    EndpointKeepAlive: _e_keep_alive,
    EndpointKeepAliveAck: _e_handle_and_id,
    EndpointUnreachable: _e_handle_and_id,
    ServerAnnounce: _e_server_announce,
    Cookie: _e_cookie,
    CookieEcho: _e_cookie,
    BusinessCard: _e_business_card,
    ASAPError: _e_asap_error,
    Presence: _e_presence,
    HandleTableRequest: _e_handle_table_request,
    HandleTableResponse: _e_handle_table_response,
    HandleUpdate: _e_handle_update,
    ListRequest: _e_ids,
    ListResponse: _e_list_response,
    InitTakeover: _e_target,
    InitTakeoverAck: _e_target,
    TakeoverServer: _e_target,
    ENRPError: _e_enrp_error,
}


def encode(message):
    """
    Encode an ASAP or ENRP message.

    @param message: an instance of one of L{MESSAGE_CLASSES}.
    @return: the message's bytes, a multiple of 4 bytes long.
    @raise TypeError: if C{message} is not a message.
    @raise ValueError: if the message does not fit a 16-bit length.
    """
    try:
        encoder = _ENCODERS[type(message)]
    except KeyError:
        raise TypeError("not an ASAP or ENRP message: {!r}".format(message)) from None
    flags, body = encoder(message)
    length = 4 + len(body)
    if length > 0xFFFF:
        raise ValueError("message too long for its 16-bit length field (%d bytes)" % length)
    return _BBH.pack(message.message_type, flags, length) + body


def echo(message, limit=P.MAX_CAUSE_INFO):
    """
    A received message as the information of an error cause that echoes
    it (Unrecognized Message, or Invalid Values for a message the receiver
    cannot use; RFC 5354 sections 3.11.2 and 3.11.3): its encoding, cut to
    C{limit} bytes.

    Unlike L{encode} this never fails for a message too long for its
    length field: a decoded message whose length left out its final
    padding, or that was 64 KiB long, may not encode again.

    @param message: an instance of one of L{MESSAGE_CLASSES}.
    @rtype: L{bytes}
    """
    flags, body = _ENCODERS[type(message)](message)
    length = min(4 + len(body), 0xFFFF)
    return (_BBH.pack(message.message_type, flags, length) + body)[:limit]


def fit(message):
    """
    A message carrying an Operation Error (an answer that echoes input),
    made to fit its 16-bit length field: the information of its causes is
    cut, the last cause's first, and if that is not enough causes are
    dropped (one is always kept).  A message that fits, or carries no
    error, is returned as it is; one too long for other reasons still is,
    and L{encode} raises C{ValueError} for it.

    A rejected Registration Response echoes the pool handle, and its
    Invalid Values cause the offending Pool Handle parameter again: for a
    handle of 64,000 bytes, only a part of the second copy fits.

    @param message: an instance of one of L{MESSAGE_CLASSES}.
    @return: the message, or a copy with a shorter error.
    """
    error = getattr(message, "error", None)
    if error is None:
        return message
    # The message's size without its causes (one empty cause is 4 bytes),
    # hence the room left for them (the Operation Error's own header is 4).
    flags, body = _ENCODERS[type(message)](attrs.evolve(message, error=OperationError.of(0)))
    room = 0xFFFF - (4 + len(body) - 4)
    causes = list(error.causes)
    excess = sum(4 + ((len(c.info) + 3) & ~3) for c in causes) - room
    if excess <= 0:
        return message
    for i in range(len(causes) - 1, -1, -1):
        if excess <= 0:
            break
        c = causes[i]
        padded = (len(c.info) + 3) & ~3
        keep = max(0, padded - excess) & ~3
        causes[i] = P.Cause(c.code, c.info[:keep])
        excess -= padded - keep
    while excess > 0 and len(causes) > 1:
        causes.pop()
        excess -= 4
    if excess > 0:
        return message
    return attrs.evolve(message, error=OperationError(tuple(causes)))


# --------------------------------------------------------------------------
# Decoding: each function takes (data, flags, pos, end, reports) where the
# body is data[pos:end] and returns the message.


def _invalid(reason, data, end):
    return ProtocolError(ErrorCause.INVALID_VALUES, reason, data[:end])


def _params(data, pos, end, reports, name, *shape):
    """
    Scan the parameters of a message body and check them against C{shape}:
    one class (or tuple of classes) per expected parameter; a shape item
    wrapped in a list is optional.
    """
    got = P.scan(data, pos, end, reports)
    out = []
    i = 0
    for want in shape:
        optional = isinstance(want, list)
        cls = want[0] if optional else want
        if i < len(got) and isinstance(got[i], cls):
            out.append(got[i])
            i += 1
        elif optional:
            out.append(None)
        else:
            raise _invalid("%s lacks a required parameter" % name, data, end)
    if i != len(got):
        raise _invalid("%s has an unexpected %s" % (name, type(got[i]).__name__), data, end)
    return out


def _fixed(data, pos, end, fmt, name):
    if end - pos < fmt.size:
        raise _invalid("%s too short" % name, data, end)
    return fmt.unpack_from(data, pos), pos + fmt.size


def _d_registration(data, flags, pos, end, r):
    ph, pe = _params(data, pos, end, r, "Registration", PoolHandle, PoolElement)
    return Registration(ph.handle, pe, unrecognized=r)


def _handle_and_id(cls):
    name = cls.__name__

    def decode(data, flags, pos, end, r):
        ph, pei = _params(data, pos, end, r, name, PoolHandle, PEIdentifier)
        return cls(ph.handle, pei.identifier, unrecognized=r)

    return decode


def _d_registration_response(data, flags, pos, end, r):
    ph, pei, err = _params(
        data, pos, end, r, "Registration Response", PoolHandle, PEIdentifier, [OperationError]
    )
    return RegistrationResponse(ph.handle, pei.identifier, bool(flags & 1), err, unrecognized=r)


def _d_deregistration_response(data, flags, pos, end, r):
    ph, pei, err = _params(
        data, pos, end, r, "Deregistration Response", PoolHandle, PEIdentifier, [OperationError]
    )
    return DeregistrationResponse(ph.handle, pei.identifier, err, unrecognized=r)


def _d_handle_resolution(data, flags, pos, end, r):
    ph, opt = _params(data, pos, end, r, "Handle Resolution", PoolHandle, [HandleResolutionOption])
    return HandleResolution(ph.handle, None if opt is None else opt.items, unrecognized=r)


def _d_handle_resolution_response(data, flags, pos, end, r):
    got = P.scan(data, pos, end, r)
    if not got or not isinstance(got[0], PoolHandle):
        raise _invalid("Handle Resolution Response lacks its Pool Handle", data, end)
    rest = got[1:]
    policy = error = None
    if rest and isinstance(rest[0], Policy):
        policy, rest = rest[0], rest[1:]
    if rest and isinstance(rest[-1], OperationError):
        error, rest = rest[-1], rest[:-1]
    for pe in rest:
        if not isinstance(pe, PoolElement):
            raise _invalid(
                "Handle Resolution Response has an unexpected %s" % type(pe).__name__, data, end
            )
    if policy is None and error is None:
        raise _invalid("Handle Resolution Response has neither a policy nor an error", data, end)
    return HandleResolutionResponse(got[0].handle, policy, tuple(rest), error, unrecognized=r)


def _d_keep_alive(data, flags, pos, end, r):
    (server_id,), pos = _fixed(data, pos, end, _I, "Endpoint Keep Alive")
    ph, pei = _params(data, pos, end, r, "Endpoint Keep Alive", PoolHandle, [PEIdentifier])
    return EndpointKeepAlive(
        server_id, ph.handle, None if pei is None else pei.identifier, bool(flags & 1), unrecognized=r
    )


def _d_server_announce(data, flags, pos, end, r):
    (server_id,), pos = _fixed(data, pos, end, _I, "Server Announce")
    got = P.scan(data, pos, end, r)
    for t in got:
        if not isinstance(t, TRANSPORT_CLASSES):
            raise _invalid("Server Announce carries a %s" % type(t).__name__, data, end)
    return ServerAnnounce(server_id, tuple(got), unrecognized=r)


def _cookie(cls):
    name = cls.__name__

    def decode(data, flags, pos, end, r):
        (c,) = _params(data, pos, end, r, name, CookieParameter)
        return cls(c.cookie, unrecognized=r)

    return decode


def _d_business_card(data, flags, pos, end, r):
    got = P.scan(data, pos, end, r)
    if not got or not isinstance(got[0], PoolHandle):
        raise _invalid("Business Card lacks its Pool Handle", data, end)
    rest = got[1:]
    policy = None
    if rest and isinstance(rest[0], Policy):
        policy, rest = rest[0], rest[1:]
    for pe in rest:
        if not isinstance(pe, PoolElement):
            raise _invalid("Business Card has an unexpected %s" % type(pe).__name__, data, end)
    return BusinessCard(got[0].handle, tuple(rest), policy, unrecognized=r)


def _d_asap_error(data, flags, pos, end, r):
    (err,) = _params(data, pos, end, r, "Error", OperationError)
    return ASAPError(err, unrecognized=r)


def _d_presence(data, flags, pos, end, r):
    (s, rcv), pos = _fixed(data, pos, end, _II, "Presence")
    ck, info = _params(data, pos, end, r, "Presence", PEChecksum, ServerInformation)
    return Presence(s, rcv, ck.checksum, info, bool(flags & 1), unrecognized=r)


def _d_handle_table_request(data, flags, pos, end, r):
    (s, rcv), pos = _fixed(data, pos, end, _II, "Handle Table Request")
    _params(data, pos, end, r, "Handle Table Request")
    return HandleTableRequest(s, rcv, bool(flags & 1), unrecognized=r)


def _d_handle_table_response(data, flags, pos, end, r):
    (s, rcv), pos = _fixed(data, pos, end, _II, "Handle Table Response")
    got = P.scan(data, pos, end, r)
    entries = []
    handle = None
    pes = []
    for p in got:
        if isinstance(p, PoolHandle):
            if handle is not None:
                entries.append(HandleTableEntry(handle, tuple(pes)))
            handle, pes = p.handle, []
        elif isinstance(p, PoolElement) and handle is not None:
            pes.append(p)
        else:
            raise _invalid("Handle Table Response has a misplaced %s" % type(p).__name__, data, end)
    if handle is not None:
        entries.append(HandleTableEntry(handle, tuple(pes)))
    return HandleTableResponse(
        s, rcv, tuple(entries), bool(flags & 2), bool(flags & 1), unrecognized=r
    )


def _d_handle_update(data, flags, pos, end, r):
    (s, rcv, action, reserved), pos = _fixed(data, pos, end, _IIHH, "Handle Update")
    ph, pe = _params(data, pos, end, r, "Handle Update", PoolHandle, PoolElement)
    return HandleUpdate(s, rcv, action, ph.handle, pe, bool(flags & 1), reserved, unrecognized=r)


def _d_list_request(data, flags, pos, end, r):
    (s, rcv), pos = _fixed(data, pos, end, _II, "List Request")
    _params(data, pos, end, r, "List Request")
    return ListRequest(s, rcv, unrecognized=r)


def _d_list_response(data, flags, pos, end, r):
    (s, rcv), pos = _fixed(data, pos, end, _II, "List Response")
    got = P.scan(data, pos, end, r)
    for p in got:
        if not isinstance(p, ServerInformation):
            raise _invalid("List Response carries a %s" % type(p).__name__, data, end)
    return ListResponse(s, rcv, tuple(got), bool(flags & 1), unrecognized=r)


def _target(cls):
    name = cls.__name__

    def decode(data, flags, pos, end, r):
        (s, rcv, target), pos = _fixed(data, pos, end, _III, name)
        _params(data, pos, end, r, name)
        return cls(s, rcv, target, unrecognized=r)

    return decode


def _d_enrp_error(data, flags, pos, end, r):
    (s, rcv), pos = _fixed(data, pos, end, _II, "Error")
    (err,) = _params(data, pos, end, r, "Error", OperationError)
    return ENRPError(s, rcv, err, unrecognized=r)


_ASAP_DECODERS = {
    ASAPType.REGISTRATION: _d_registration,
    ASAPType.DEREGISTRATION: _handle_and_id(Deregistration),
    ASAPType.REGISTRATION_RESPONSE: _d_registration_response,
    ASAPType.DEREGISTRATION_RESPONSE: _d_deregistration_response,
    ASAPType.HANDLE_RESOLUTION: _d_handle_resolution,
    ASAPType.HANDLE_RESOLUTION_RESPONSE: _d_handle_resolution_response,
    ASAPType.ENDPOINT_KEEP_ALIVE: _d_keep_alive,
    ASAPType.ENDPOINT_KEEP_ALIVE_ACK: _handle_and_id(EndpointKeepAliveAck),
    ASAPType.ENDPOINT_UNREACHABLE: _handle_and_id(EndpointUnreachable),
    ASAPType.SERVER_ANNOUNCE: _d_server_announce,
    ASAPType.COOKIE: _cookie(Cookie),
    ASAPType.COOKIE_ECHO: _cookie(CookieEcho),
    ASAPType.BUSINESS_CARD: _d_business_card,
    ASAPType.ERROR: _d_asap_error,
}
_ENRP_DECODERS = {
    ENRPType.PRESENCE: _d_presence,
    ENRPType.HANDLE_TABLE_REQUEST: _d_handle_table_request,
    ENRPType.HANDLE_TABLE_RESPONSE: _d_handle_table_response,
    ENRPType.HANDLE_UPDATE: _d_handle_update,
    ENRPType.LIST_REQUEST: _d_list_request,
    ENRPType.LIST_RESPONSE: _d_list_response,
    ENRPType.INIT_TAKEOVER: _target(InitTakeover),
    ENRPType.INIT_TAKEOVER_ACK: _target(InitTakeoverAck),
    ENRPType.TAKEOVER_SERVER: _target(TakeoverServer),
    ENRPType.ERROR: _d_enrp_error,
}
_DECODERS = {
    ASAP: {int(k): v for k, v in _ASAP_DECODERS.items()},
    ENRP: {int(k): v for k, v in _ENRP_DECODERS.items()},
}


def message_length(data):
    """
    The length of the message that starts C{data}, padding included, or
    C{None} if fewer than 4 bytes are there.

    @raise ProtocolError: if the length field is below the header's size.
    """
    if len(data) < 4:
        return None
    (length,) = struct.unpack_from("!H", data, 2)
    if length < 4:
        raise ProtocolError(
            ErrorCause.INVALID_VALUES, "message length %d is shorter than the header" % length, data[:4]
        )
    return (length + 3) & ~3


def decode(data, protocol=ASAP):
    """
    Decode exactly one ASAP or ENRP message.

    C{data} holds the message and, optionally, its padding to a multiple of
    4 bytes; anything more is an error (use L{rserpool.wire.StreamDecoder}
    for a byte stream).

    @param data: the message's bytes.
    @param protocol: C{"asap"} or C{"enrp"}.
    @return: an instance of one of L{MESSAGE_CLASSES}.
    @raise ProtocolError: for any input that is not a valid message; its
        C{cause} is the RFC 5354 error cause to answer with.
    """
    try:
        table = _DECODERS[protocol]
    except KeyError:
        raise ValueError("protocol must be 'asap' or 'enrp', not {!r}".format(protocol)) from None
    n = len(data)
    if n < 4:
        raise ProtocolError(ErrorCause.INVALID_VALUES, "%d bytes are no message header" % n, data)
    mtype, flags, length = _BBH.unpack_from(data, 0)
    if length < 4:
        raise ProtocolError(
            ErrorCause.INVALID_VALUES, "message length %d is shorter than the header" % length, data
        )
    if length > n:
        raise ProtocolError(
            ErrorCause.INVALID_VALUES,
            "message length %d overruns the %d bytes received" % (length, n),
            data,
        )
    if n > ((length + 3) & ~3):
        raise ProtocolError(
            ErrorCause.INVALID_VALUES,
            "%d bytes follow the %d-byte message" % (n - length, length),
            data,
        )
    decoder = table.get(mtype)
    if decoder is None:
        raise ProtocolError(
            ErrorCause.UNRECOGNIZED_MESSAGE,
            "unrecognized %s message type 0x%02x" % (protocol.upper(), mtype),
            data[:length],
        )
    reports = []
    try:
        return decoder(data, flags, 4, length, reports)
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError, struct.error) as e:
        # The decoders check every field; this is a last line of defence so
        # that decoding stays total even if a check was forgotten.
        raise ProtocolError(ErrorCause.INVALID_VALUES, "invalid field: %s" % (e,), data[:length])
