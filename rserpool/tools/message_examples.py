"""
One realistic example of every ASAP and ENRP message, for ``rserpool
examples``, for cross-checks with Wireshark and for documentation.

Every example decodes cleanly with Wireshark's dissectors in strict mode
(``shared/tools/rserpool-decode --strict``), which flags any "Unknown"
value: so no example carries the "Unknown Pool Handle" cause or an unknown
message type, although the tests cover both.

The scene: registrars 0x11111111 (10.0.0.1) and 0x22222222 (10.0.0.2) serve
pool "EchoPool"; PE 0x5a5a0001 at 10.0.0.10 offers echo on SCTP port 7 and
is reached by its registrar over SCTP port 49152.
"""
from rserpool.codes import ErrorCause, PolicyType
from rserpool.wire import (
    ADD_PE,
    DATA_PLUS_CONTROL,
    DEL_PE,
    ASAPError,
    BusinessCard,
    Cookie,
    CookieEcho,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    ENRPError,
    HandleResolution,
    HandleResolutionResponse,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    OperationError,
    Policy,
    PoolElement,
    Presence,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    ServerAnnounce,
    ServerInformation,
    TakeoverServer,
    TCPTransport,
    encode,
)

PR1, PR2, PR3 = 0x11111111, 0x22222222, 0x33333333
HANDLE = b"EchoPool"
ROUND_ROBIN = Policy(PolicyType.ROUND_ROBIN)


def _pe(identifier, address, home=PR1, asap=False, policy=ROUND_ROBIN):
    return PoolElement(
        identifier,
        home,
        90000,
        SCTPTransport(7, [address], DATA_PLUS_CONTROL),
        policy,
        SCTPTransport(49152, [address]) if asap else None,
    )


PE1 = _pe(0x5A5A0001, "10.0.0.10")
PE2 = _pe(0x5A5A0002, "10.0.0.11", home=PR2)
PE1_HOMED = _pe(0x5A5A0001, "10.0.0.10", asap=True)
PE2_HOMED = _pe(0x5A5A0002, "10.0.0.11", home=PR2, asap=True)


def _info(server_id, address):
    return ServerInformation(server_id, SCTPTransport(9901, [address]))


#: (protocol, name, message) for every message type.
EXAMPLES = [
    ("asap", "Registration", Registration(HANDLE, _pe(0x5A5A0001, "10.0.0.10", home=0))),
    ("asap", "Deregistration", Deregistration(HANDLE, 0x5A5A0001)),
    ("asap", "Registration Response", RegistrationResponse(HANDLE, 0x5A5A0001)),
    (
        "asap",
        "Registration Response (rejected)",
        RegistrationResponse(
            HANDLE,
            0x5A5A0003,
            reject=True,
            error=OperationError.of(
                ErrorCause.INCONSISTENT_POOLING_POLICY,
                b"\x00\x08\x00\x0c\x00\x00\x00\x04\x00\x00\x00\x01",
            ),
        ),
    ),
    ("asap", "Deregistration Response", DeregistrationResponse(HANDLE, 0x5A5A0001)),
    ("asap", "Handle Resolution", HandleResolution(HANDLE, items=3)),
    (
        "asap",
        "Handle Resolution Response",
        HandleResolutionResponse(HANDLE, ROUND_ROBIN, [PE1, PE2]),
    ),
    ("asap", "Endpoint Keep Alive", EndpointKeepAlive(PR1, HANDLE, 0x5A5A0001)),
    (
        "asap",
        "Endpoint Keep Alive (new home)",
        EndpointKeepAlive(PR2, HANDLE, 0x5A5A0001, home=True),
    ),
    ("asap", "Endpoint Keep Alive Ack", EndpointKeepAliveAck(HANDLE, 0x5A5A0001)),
    ("asap", "Endpoint Unreachable", EndpointUnreachable(HANDLE, 0x5A5A0002)),
    (
        "asap",
        "Server Announce",
        ServerAnnounce(PR1, [SCTPTransport(3863, ["10.0.0.1"]), TCPTransport(3863, ["10.0.0.1"])]),
    ),
    ("asap", "Cookie", Cookie(b"session=42;offset=1048576")),
    ("asap", "Cookie Echo", CookieEcho(b"session=42;offset=1048576")),
    ("asap", "Business Card", BusinessCard(HANDLE, [PE1, PE2], ROUND_ROBIN)),
    (
        "asap",
        "Error",
        # a Handle Resolution Option asking for 0 items: Invalid Values
        ASAPError(OperationError.of(ErrorCause.INVALID_VALUES, bytes.fromhex("803f000800000000"))),
    ),
    (
        "enrp",
        "Presence",
        Presence(PR1, 0, 0x1F3C, _info(PR1, "10.0.0.1"), reply_required=True),
    ),
    ("enrp", "Handle Table Request", HandleTableRequest(PR2, PR1, own_children_only=True)),
    (
        "enrp",
        "Handle Table Response",
        HandleTableResponse(
            PR1, PR2, [HandleTableEntry(HANDLE, [PE1_HOMED])], more_to_send=True
        ),
    ),
    ("enrp", "Handle Update", HandleUpdate(PR1, PR2, ADD_PE, HANDLE, PE1_HOMED)),
    ("enrp", "Handle Update (delete)", HandleUpdate(PR2, PR1, DEL_PE, HANDLE, PE2_HOMED)),
    ("enrp", "List Request", ListRequest(PR3, PR1)),
    (
        "enrp",
        "List Response",
        ListResponse(PR1, PR3, [_info(PR1, "10.0.0.1"), _info(PR2, "10.0.0.2")]),
    ),
    ("enrp", "Init Takeover", InitTakeover(PR1, PR2, PR3)),
    ("enrp", "Init Takeover Ack", InitTakeoverAck(PR2, PR1, PR3)),
    ("enrp", "Takeover Server", TakeoverServer(PR1, PR2, PR3)),
    (
        "enrp",
        "Error",
        # a PE Checksum parameter one byte short: Invalid Values
        ENRPError(PR2, PR1, OperationError.of(ErrorCause.INVALID_VALUES, bytes.fromhex("000f0005ab"))),
    ),
]


def lines():
    """
    The text ``rserpool examples`` prints: a ``# <protocol> <name>`` comment
    line, then the message in hex, for each example.
    """
    out = []
    for protocol, name, message in EXAMPLES:
        out.append("# %s %s" % (protocol, name))
        out.append(encode(message).hex())
    return out
