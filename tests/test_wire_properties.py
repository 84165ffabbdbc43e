"""
Property tests for the wire codec: generated messages survive a round trip,
and no input, random or mutated, makes the decoder raise anything but
ProtocolError.
"""
import ipaddress
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from rserpool.codes import POLICY_FIELDS
from rserpool.wire import (
    ASAPError,
    BusinessCard,
    Cause,
    Cookie,
    CookieEcho,
    DCCPTransport,
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
    ProtocolError,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    ServerAnnounce,
    ServerInformation,
    StreamDecoder,
    TakeoverServer,
    TCPTransport,
    UDPLiteTransport,
    UDPTransport,
    decode,
    encode,
)
from rserpool.tools.message_examples import EXAMPLES

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
s32 = st.integers(-0x80000000, 0x7FFFFFFF)
handles = st.binary(min_size=0, max_size=40)
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
)
one_address = st.lists(addresses, min_size=1, max_size=1)
transports = st.one_of(
    st.builds(SCTPTransport, u16, st.lists(addresses, min_size=1, max_size=4), st.integers(0, 1)),
    st.builds(TCPTransport, u16, one_address, st.integers(0, 1)),
    st.builds(UDPTransport, u16, one_address, u16),
    st.builds(UDPLiteTransport, u16, one_address, u16),
    st.builds(DCCPTransport, u16, one_address, u32, u16),
)


@st.composite
def policies(draw):
    if draw(st.booleans()):
        ptype = draw(st.sampled_from(sorted(POLICY_FIELDS)))
        n = len(POLICY_FIELDS[ptype])
        return Policy(ptype, draw(st.lists(u32, min_size=n, max_size=n)))
    ptype = draw(u32.filter(lambda t: t not in POLICY_FIELDS))
    return Policy(ptype, (), draw(st.binary(max_size=12)))


pool_elements = st.builds(
    PoolElement, u32, u32, s32, transports, policies(), st.one_of(st.none(), transports)
)
errors = st.builds(
    OperationError, st.lists(st.builds(Cause, u16, st.binary(max_size=12)), min_size=1, max_size=3)
)
opt_errors = st.one_of(st.none(), errors)
infos = st.builds(ServerInformation, u32, transports)

asap_messages = st.one_of(
    st.builds(Registration, handles, pool_elements),
    st.builds(Deregistration, handles, u32),
    st.builds(RegistrationResponse, handles, u32, st.booleans(), opt_errors),
    st.builds(DeregistrationResponse, handles, u32, opt_errors),
    st.builds(HandleResolution, handles, st.one_of(st.none(), u32)),
    st.builds(
        HandleResolutionResponse,
        handles,
        policies(),
        st.lists(pool_elements, max_size=3),
        opt_errors,
    ),
    st.builds(HandleResolutionResponse, handles, st.none(), st.just(()), errors),
    st.builds(EndpointKeepAlive, u32, handles, st.one_of(st.none(), u32), st.booleans()),
    st.builds(EndpointKeepAliveAck, handles, u32),
    st.builds(EndpointUnreachable, handles, u32),
    st.builds(ServerAnnounce, u32, st.lists(transports, max_size=3)),
    st.builds(Cookie, st.binary(max_size=64)),
    st.builds(CookieEcho, st.binary(max_size=64)),
    st.builds(
        BusinessCard, handles, st.lists(pool_elements, max_size=3), st.one_of(st.none(), policies())
    ),
    st.builds(ASAPError, errors),
)
enrp_messages = st.one_of(
    st.builds(Presence, u32, u32, u16, infos, st.booleans()),
    st.builds(HandleTableRequest, u32, u32, st.booleans()),
    st.builds(
        HandleTableResponse,
        u32,
        u32,
        st.lists(
            st.builds(HandleTableEntry, handles, st.lists(pool_elements, max_size=2)), max_size=3
        ),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(HandleUpdate, u32, u32, u16, handles, pool_elements, st.booleans(), u16),
    st.builds(ListRequest, u32, u32),
    st.builds(ListResponse, u32, u32, st.lists(infos, max_size=3), st.booleans()),
    st.builds(InitTakeover, u32, u32, u32),
    st.builds(InitTakeoverAck, u32, u32, u32),
    st.builds(TakeoverServer, u32, u32, u32),
    st.builds(ENRPError, u32, u32, errors),
)
messages = st.one_of(asap_messages, enrp_messages)

VALID = [(p, encode(m)) for p, _, m in EXAMPLES]


def decode_total(data, protocol):
    """
    Decode; anything but a message or ProtocolError fails the test.
    """
    try:
        return decode(data, protocol)
    except ProtocolError as e:
        assert isinstance(e.info, bytes)
        # the decoder's catch-all must never be what rejects a message:
        # every malformation has its own check and reason
        assert not e.reason.startswith("invalid field"), e
        return e


class RoundTripTests(unittest.TestCase):
    @SETTINGS
    @given(messages)
    def test_round_trip(self, message):
        data = encode(message)
        self.assertEqual(len(data) % 4, 0)
        self.assertEqual(struct.unpack("!H", data[2:4])[0], len(data))
        self.assertEqual(decode(data, message.protocol), message)

    @SETTINGS
    @given(st.lists(asap_messages, max_size=5), st.data())
    def test_stream_any_chunking(self, msgs, data):
        stream = b"".join(encode(m) for m in msgs)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        decoder = StreamDecoder("asap")
        out = []
        last = 0
        for cut in cuts + [len(stream)]:
            out.extend(decoder.feed(stream[last:cut]))
            last = cut
        self.assertEqual(out, msgs)


class TotalityTests(unittest.TestCase):
    @SETTINGS
    @given(st.binary(max_size=300), st.sampled_from(["asap", "enrp"]))
    def test_random_bytes(self, data, protocol):
        decode_total(data, protocol)

    @SETTINGS
    @given(st.binary(max_size=200), st.integers(1, 15), st.sampled_from(["asap", "enrp"]))
    def test_random_bodies_with_valid_header(self, body, mtype, protocol):
        data = struct.pack("!BBH", mtype, 0, 4 + len(body)) + body
        decode_total(data, protocol)

    @SETTINGS
    @given(
        st.sampled_from(VALID),
        st.lists(st.tuples(st.integers(0, 10000), st.integers(0, 255)), min_size=1, max_size=6),
    )
    def test_mutated_bytes(self, valid, changes):
        protocol, data = valid
        data = bytearray(data)
        for where, value in changes:
            data[where % len(data)] = value
        decode_total(bytes(data), protocol)

    @SETTINGS
    @given(st.sampled_from(VALID), st.integers(0, 400), st.sampled_from(["asap", "enrp"]))
    def test_truncated_and_cross_protocol(self, valid, cut, protocol):
        _, data = valid
        decode_total(data[: cut % (len(data) + 1)], protocol)

    @SETTINGS
    @given(st.binary(max_size=400))
    def test_stream_garbage(self, data):
        decoder = StreamDecoder("enrp")
        try:
            for item in decoder.feed(data):
                self.assertTrue(isinstance(item, ProtocolError) or hasattr(item, "protocol"))
        except ProtocolError:
            pass
