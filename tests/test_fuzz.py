"""
Totality of the network input paths (issue #14), proven by fuzzing.

The regression tests hold the exact inputs with which the fuzzer
(C{bench/fuzz.py}) or the issue's tester crashed the codec, the stream
decoder or the registrar, with the answers now expected, byte for byte.
The property tests run the fuzzer's own targets under hypothesis with a
small budget: C{decode} of mutated valid messages of every type,
L{StreamDecoder} fed arbitrary streams in arbitrary chunks, and a registrar
(ASAP and ENRP sides) fed random sequences of messages, good and bad, over
several fake connections.  C{python3 bench/fuzz.py} runs the same targets
on 10^6 inputs.
"""
import importlib.util
import ipaddress
import os
import random
import struct
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from rserpool.codes import ErrorCause, PolicyType
from rserpool.wire import (
    ASAP,
    ENRP,
    MAX_CAUSE_INFO,
    MAX_CAUSES,
    ASAPError,
    Cause,
    ENRPError,
    HandleResolution,
    HandleResolutionResponse,
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
    ServerInformation,
    StreamDecoder,
    TCPTransport,
    brief,
    decode,
    echo,
    encode,
    fit,
)


def _load_fuzzer():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "bench", "fuzz.py")
    spec = importlib.util.spec_from_file_location("rserpool_bench_fuzz", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzzer()

ROUND_ROBIN = Policy.make(PolicyType.ROUND_ROBIN)


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def tlv(ptype, value):
    return struct.pack("!HH", ptype, 4 + len(value)) + value + b"\0" * (-len(value) % 4)


def message(mtype, body, flags=0):
    return struct.pack("!BBH", mtype, flags, 4 + len(body)) + body


def nested_pool_elements(depth):
    inner = b""
    for _ in range(depth):
        inner = tlv(0x000A, struct.pack("!III", 1, 0, 0) + inner)
    return inner


# --------------------------------------------------------------------------
# Regression tests: the codec


class NestingTests(unittest.TestCase):
    """
    Parameters nest only as RFC 5354 lets them: decoding never recurses
    deeper than a message, a Pool Element, a transport and an address.
    """

    def assertCause(self, data, cause, info, protocol=ASAP, report=True):
        with self.assertRaises(ProtocolError) as caught:
            decode(data, protocol)
        self.assertEqual(caught.exception.cause, cause)
        self.assertEqual(caught.exception.info, info)
        self.assertEqual(caught.exception.report, report)
        return caught.exception

    def test_pool_element_inside_pool_element(self):
        """
        A Pool Element holding a Pool Element: Invalid Values, with the
        misplaced parameter as information.
        """
        data = h("01 00 002c  0009 0005 50 000000"
                 "000a 0020 00000001 00000000 00000000"
                 "000a 0010 00000002 00000000 00000000")
        e = self.assertCause(data, ErrorCause.INVALID_VALUES,
                             h("000a 0010 00000002 00000000 00000000"))
        self.assertEqual(e.reason, "parameter 0x000a cannot be inside a Pool Element")

    def test_pool_elements_nested_4000_deep(self):
        """
        The issue's RecursionError: Pool Elements nested 4,000 deep (64 KiB)
        now give Invalid Values at the second level, without recursing.
        """
        data = message(1, tlv(9, b"P") + nested_pool_elements(4000))
        self.assertEqual(len(data), 64012)
        limit = sys.getrecursionlimit()
        # Three levels of parameters need only a few frames more than this.
        sys.setrecursionlimit(len(_frames()) + 60)
        try:
            self.assertCause(data, ErrorCause.INVALID_VALUES, nested_pool_elements(3999))
        finally:
            sys.setrecursionlimit(limit)

    def test_nested_over_tcp(self):
        """
        The issue's 148 KB traceback: the nested message over the TCP
        mapping now gets an ASAP Error, and the connection goes on.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig
        from rserpool.receivers import ASAPReceiver
        from rserpool.transport.tcp import MessageStreamProtocol

        registrar = ASAPRegistrar(RegistrarConfig(server_id=1))
        protocol = MessageStreamProtocol(ASAPReceiver(registrar, Clock()), ASAP)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        data = message(1, tlv(9, b"P") + nested_pool_elements(4000))
        protocol.dataReceived(data + encode(HandleResolution(b"P")))
        error, response = StreamDecoder(ASAP).feed(transport.value())
        self.assertEqual(error.error.causes, (Cause(3, nested_pool_elements(3999)[:1024]),))
        self.assertEqual(response.pool_handle, b"P")
        self.assertFalse(transport.disconnecting)

    def test_transport_inside_transport(self):
        """
        SCTP transports nested 8,000 deep (8 bytes a level) in a Server
        Information of a Presence: Invalid Values at the first nesting.
        """
        inner = tlv(1, bytes([127, 0, 0, 1]))
        for _ in range(8000):
            inner = tlv(4, b"\0\x07\0\0" + inner)
        body = h("00000001 00000000") + tlv(0xF, b"\0\0") + tlv(0xB, h("00000001") + inner)
        data = message(1, body)
        self.assertEqual(len(data), 64036)
        with self.assertRaises(ProtocolError) as caught:
            decode(data, ENRP)
        self.assertEqual(caught.exception.cause, ErrorCause.INVALID_VALUES)
        self.assertEqual(caught.exception.reason,
                         "parameter 0x0004 cannot be inside a transport parameter")

    def test_policy_inside_transport(self):
        """
        A policy inside the user transport of a Pool Element.
        """
        data = message(1, tlv(9, b"P") + tlv(0xA, h("00000001 00000000 00000000")
                                             + tlv(5, h("0007 0000") + tlv(8, h("00000001")))
                                             + tlv(8, h("00000001"))))
        self.assertCause(data, ErrorCause.INVALID_VALUES, tlv(8, h("00000001")))

    def test_unknown_parameter_inside_pool_element(self):
        """
        Unknown types inside a parameter still follow their action bits:
        01 reports Unrecognized Parameter, 00 is silent, 10 and 11 are
        skipped.
        """
        pe = h("00000001 00000000 00000000") + tlv(5, h("0007 0000") + tlv(1, h("7f000001")))
        policy = tlv(8, h("00000001"))
        for ptype, report in ((0x4099, True), (0x0099, False)):
            unknown = tlv(ptype, b"ab")
            data = message(1, tlv(9, b"P") + tlv(0xA, pe + unknown + policy))
            self.assertCause(data, ErrorCause.UNRECOGNIZED_PARAMETER, unknown[:6], report=report)
        data = message(1, tlv(9, b"P") + tlv(0xA, pe + tlv(0xC099, b"ab") + policy))
        self.assertEqual(decode(data, ASAP).unrecognized, (tlv(0xC099, b"ab")[:6],))


def _frames():
    frames = []
    f = sys._getframe()
    while f is not None:
        frames.append(f)
        f = f.f_back
    return frames


class EchoTests(unittest.TestCase):
    """
    The answers that echo input fit in a message whatever the input.
    """

    def test_unrecognized_message_of_64k(self):
        """
        Found by the fuzzer: an ASAP message of unknown type 0x41 filling
        65,524 bytes.  Its Unrecognized Message cause echoed all of it, and
        the ASAP Error (65,536 bytes) did not encode: the connection was
        dropped without an answer.  The echo is now its first KiB.
        """
        data = h("0041 fff4 0009 fff0") + b"x" * 65516
        with self.assertRaises(ProtocolError) as caught:
            decode(data, ASAP)
        e = caught.exception
        self.assertEqual((e.cause, len(e.info)), (ErrorCause.UNRECOGNIZED_MESSAGE, 65524))
        answer = encode(ASAPError(OperationError.from_error(e)))
        self.assertEqual(answer, h("0e00 040c 000c 0408 0002 0404") + data[:1024])
        answer = encode(ENRPError(1, 2, OperationError.from_error(e)))
        self.assertEqual(answer, h("0a00 0414 00000001 00000002 000c 0408 0002 0404")
                         + data[:1024])

    def test_trailing_bytes_of_64k(self):
        """
        Found by the fuzzer: 65,538 bytes whose length field says 0xffff;
        the Invalid Values cause echoed them all (struct.error).
        """
        data = h("0500 ffff 0009 fff0") + b"x" * 65530
        with self.assertRaises(ProtocolError) as caught:
            decode(data, ASAP)
        self.assertEqual(len(caught.exception.info), 65538)
        answer = encode(ASAPError(OperationError.from_error(caught.exception)))
        self.assertEqual(answer, h("0e00 040c 000c 0408 0003 0404") + data[:1024])

    def test_of_and_unrecognized_are_bounded(self):
        self.assertEqual(MAX_CAUSE_INFO, 1024)
        self.assertEqual(OperationError.of(3, b"y" * 5000).causes, (Cause(3, b"y" * 1024),))
        tlvs = [tlv(0xC000 + i, b"z" * 2000) for i in range(100)]
        error = OperationError.unrecognized(tlvs)
        self.assertEqual(len(error.causes), MAX_CAUSES)
        self.assertEqual(error.causes[5], Cause(1, tlvs[5][:1024]))
        self.assertEqual(len(encode(ASAPError(error))), 4 + 4 + 16 * 1028)
        # what is decoded is kept whole
        self.assertEqual(len(OperationError((Cause(3, b"y" * 5000),)).causes[0].info), 5000)

    def test_echo(self):
        """
        L{echo} cuts, and never fails for a message too long to encode.
        """
        m = HandleResolutionResponse(b"x" * 65524, error=OperationError.of(9))
        self.assertRaises(ValueError, encode, m)
        self.assertEqual(echo(m), h("0600 ffff 0009 fff8") + b"x" * 1016)
        self.assertEqual(echo(HandleResolution(b"P")), h("0500 000c 0009 0005 5000 0000"))

    def test_fit(self):
        """
        L{fit} cuts the causes' information of a message that would not
        fit, and leaves the rest.
        """
        handle = b"h" * 65487
        m = RegistrationResponse(handle, 7, True, OperationError.of(3, tlv(9, handle)))
        self.assertRaises(ValueError, encode, m)
        data = encode(fit(m))
        self.assertEqual(len(data), 65532)
        # 65,512 bytes without the information: 20 of it fit
        self.assertEqual(fit(m).error.causes, (Cause(3, h("0009 ffd3") + b"h" * 16),))
        small = RegistrationResponse(b"P", 7, True, OperationError.of(3, b"abc"))
        self.assertIs(fit(small), small)
        many = ASAPError(OperationError([Cause(1, b"z" * 60)] * 2000))
        self.assertEqual(len(encode(fit(many))), 65532)
        self.assertEqual(len(fit(many).error.causes), 2000)

    def test_brief(self):
        self.assertEqual(brief(b"EchoPool"), "b'EchoPool'")
        self.assertEqual(brief(b"\xff" * 65000), repr(b"\xff" * 48)[:-1] + "'... (65000 bytes)")

    def test_summary(self):
        error = OperationError([Cause(1)] * 15998 + [Cause(9), Cause(3)])
        self.assertEqual(
            error.summary(),
            "UNRECOGNIZED_PARAMETER, UNRECOGNIZED_PARAMETER, UNRECOGNIZED_PARAMETER and"
            " 15997 more")
        self.assertEqual(OperationError.of(9).summary(), "UNKNOWN_POOL_HANDLE")

    def test_reason_bounded(self):
        e = ProtocolError(ErrorCause.INVALID_VALUES, "r" * 1000)
        self.assertEqual(len(e.reason), 200)
        self.assertTrue(e.reason.endswith("..."))


class StreamTests(unittest.TestCase):
    """
    The TCP framing: bounded buffering and chunking that changes nothing.
    """

    def test_header_announcing_64k(self):
        """
        The issue's tester: a header announcing 0xffff bytes followed by
        100 bytes holds 104 bytes; the decoder never holds more than one
        message between calls, however the rest comes.
        """
        decoder = StreamDecoder(ASAP)
        head = h("0500 ffff 0009 fff0")
        self.assertEqual(decoder.feed(head + b"x" * 96), [])
        self.assertEqual(decoder.buffered, 104)
        for _ in range(1000):
            self.assertEqual(decoder.feed(b"x" * 65), [])
        self.assertEqual(decoder.buffered, 65104)
        (error,) = decoder.feed(b"x" * 432 + h("0500 000c 0009 0005"))
        self.assertEqual(error.cause, ErrorCause.INVALID_VALUES)
        self.assertEqual(decoder.buffered, 8)
        self.assertEqual(decoder.feed(h("5000 0000")), [HandleResolution(b"P")])
        self.assertEqual(decoder.buffered, 0)

    def test_framing_lost_keeps_what_came_before(self):
        """
        Found by the fuzzer: the messages before a broken header in the
        same chunk were lost, so the output depended on the cutting.  They
        now ride on the raised error.
        """
        good = encode(HandleResolution(b"P"))
        decoder = StreamDecoder(ASAP)
        with self.assertRaises(ProtocolError) as caught:
            decoder.feed(good + good + h("0500 0002 ffff"))
        self.assertEqual(caught.exception.messages,
                         [HandleResolution(b"P"), HandleResolution(b"P")])
        self.assertEqual(caught.exception.info, h("0500 0002"))
        with self.assertRaises(ProtocolError) as again:
            decoder.feed(good)
        self.assertEqual(again.exception.messages, ())
        self.assertEqual(again.exception.reason, caught.exception.reason)


# --------------------------------------------------------------------------
# Regression tests: the registrar


class RegistrarTests(unittest.TestCase):
    """
    The registrar answers whatever it gets with messages that encode, and
    logs short lines.  (L{fuzz.FakeConnection} fails the test if an
    answer does not encode, L{fuzz.Harness} if a log line is too long or
    carries a traceback.)
    """

    def setUp(self):
        self.harness = fuzz.Harness()
        self.harness.run(["connect", ASAP, "127.0.0.1", 40000])
        self.conn = self.harness.conns[ASAP][0]

    def deliver(self, data, side=ASAP):
        del self.conn.sent[:]
        self.harness.run(["deliver", side, 0, data.hex()])
        return self.conn.sent

    def test_protocol_error_of_64k(self):
        (answer,) = self.deliver(h("0041 fff4 0009 fff0") + b"x" * 65516)
        self.assertEqual(encode(answer), h("0e00 040c 000c 0408 0002 0404 0041 fff4 0009 fff0")
                         + b"x" * 1016)
        self.assertIn("bad message from 127.0.0.1:40000: UNRECOGNIZED_MESSAGE",
                      self.harness.lines[-1])

    def test_unexpected_message_of_64k(self):
        """
        Found by the fuzzer: a 64 KiB Business Card (a message a registrar
        never receives) answered with Unrecognized Message and all of it.
        """
        card = encode(fuzz.BusinessCard(b"P", [fuzz.EXAMPLES[0][2].pool_element] * 1600))
        self.assertEqual(len(card), 64012)
        (answer,) = self.deliver(card)
        self.assertEqual(answer, ASAPError(OperationError.of(ErrorCause.UNRECOGNIZED_MESSAGE,
                                                             card[:1024])))

    def test_unrecognized_parameters_reported_bounded(self):
        """
        16,000 parameters of type 0xc077 (skip and report) in one Handle
        Resolution: the answer, then one ASAP Error with 16 causes.
        """
        data = message(5, tlv(9, b"P") + tlv(0xC077, b"") * 16000)
        response, error = self.deliver(data)
        self.assertEqual(response.error.causes[0].code, ErrorCause.UNKNOWN_POOL_HANDLE)
        self.assertEqual(error.error.causes, (Cause(1, h("c077 0004")),) * 16)

    def test_asap_error_with_16000_causes_logged_short(self):
        """
        The issue: one 64 KiB ASAP Error with 16,000 causes wrote 384 KB
        of log.
        """
        data = message(0xE, tlv(0xC, h("0001 0004") * 16000))
        self.assertEqual(self.deliver(data), [])
        self.assertEqual(self.harness.lines[-1],
                         "ASAP Error from 127.0.0.1:40000: UNRECOGNIZED_PARAMETER, "
                         "UNRECOGNIZED_PARAMETER, UNRECOGNIZED_PARAMETER and 15997 more")

    def test_registration_with_64k_handle(self):
        """
        Found by the fuzzer: a Registration with a pool handle of 65,483
        bytes was rejected with a response echoing the handle twice (as
        Pool Handle and as the Invalid Values information), which did not
        fit; and logged a 260 KB line.  The information is now what fits.
        """
        pe = PoolElement(7, 0, 1000, TCPTransport(7, ["127.0.0.1"]), ROUND_ROBIN)
        data = encode(Registration(b"h" * 65483, pe))
        self.assertEqual(len(data), 65532)
        (answer,) = self.deliver(data)
        self.assertEqual(answer, RegistrationResponse(
            b"h" * 65483, 7, True,
            OperationError.of(ErrorCause.INVALID_VALUES, h("0009 ffcf") + b"h" * 20)))
        self.assertEqual(len(encode(answer)), 65532)
        self.assertEqual(self.harness.lines[-1],
                         "rejected registration of 00000007 in %r... (65483 bytes) from "
                         "127.0.0.1:40000: INVALID_VALUES (pool handle of 65483 bytes)"
                         % (b"h" * 48,))

    def test_handle_resolution_with_64k_handle(self):
        """
        Found by the fuzzer: a Handle Resolution for a handle of 65,517 to
        65,524 bytes; the Handle Resolution Response echoing it with
        Unknown Pool Handle did not fit.  Up to 65,516 bytes it still does.
        """
        (answer,) = self.deliver(encode(HandleResolution(b"h" * 65524)))
        self.assertEqual(encode(answer), h("0e00 040c 000c 0408 0003 0404 0009 fff8")
                         + b"h" * 1020)
        (answer,) = self.deliver(encode(HandleResolution(b"h" * 65516)))
        self.assertEqual(answer, HandleResolutionResponse(
            b"h" * 65516, error=OperationError.of(ErrorCause.UNKNOWN_POOL_HANDLE)))
        self.assertEqual(len(encode(answer)), 65532)

    def test_registration_with_8180_copies_of_an_address(self):
        """
        An SCTP user transport listing the PE's address 8,180 times: the
        Registration fits in a message, but the ENRP Handle Update
        announcing the PE (12 bytes of server ids and an ASAP transport
        more) did not, and the registrar raised.  An address counts once.
        """
        self.harness.run(["connect", ENRP, "127.0.0.1", 9901, True])
        enrp = self.harness.conns[ENRP][0]
        self.harness.run(["deliver", ENRP, 0, encode(Presence(
            0x10, 0, 0, ServerInformation(0x10, TCPTransport(9901, ["127.0.0.1"])))).hex()])
        user = SCTPTransport(7, ["127.0.0.1"] * 8180, 0)
        data = encode(Registration(b"P", PoolElement(7, 0, 1000, user, ROUND_ROBIN)))
        self.assertEqual(len(data), 65484)
        (answer,) = self.deliver(data)
        self.assertEqual(answer, RegistrationResponse(b"P", 7))
        pe = self.harness.registrar.handlespace.get(b"P", 7)
        self.assertEqual(pe.user_transport.wire, SCTPTransport(7, ["127.0.0.1"], 0))
        update = [m for m in enrp.sent if type(m).__name__ == "HandleUpdate"]
        self.assertEqual(update[-1].pool_element.user_transport, pe.user_transport.wire)

    def test_rejected_transport_of_8000_addresses_logged_short(self):
        """
        Found by the fuzzer: the rejection of a user transport of 8,000
        foreign addresses named them all in an 84 KB log line.
        """
        user = SCTPTransport(7, ["10.0.%d.%d" % (i // 250, i % 250 + 1) for i in range(8000)])
        self.deliver(encode(Registration(b"P", PoolElement(7, 0, 1000, user, ROUND_ROBIN))))
        self.assertEqual(self.harness.lines[-1],
                         "rejected registration of 00000007 in b'P' from 127.0.0.1:40000: "
                         "REJECTION_DUE_TO_SECURITY_CONSIDERATIONS (user transport 10.0.0.1,"
                         "10.0.0.2,10.0.0.3,10.0.0.4 and 7996 more is not the peer's address)")


class ENRPTests(unittest.TestCase):
    """
    The ENRP side: the same promises.
    """

    def setUp(self):
        # Connections we opened: a registrar's Presence over one makes it
        # a peer.
        self.harness = fuzz.Harness()
        for port in (40000, 40001, 40002):
            self.harness.run(["connect", ENRP, "127.0.0.1", port, True])

    def peer(self, n, server_id):
        self.deliver(n, encode(Presence(server_id, 0, 0, ServerInformation(
            server_id, TCPTransport(9901, ["127.0.0.1"])))))
        self.assertIn(server_id, self.harness.server.peers)

    def deliver(self, n, data):
        conn = [c for c in self.harness.conns[ENRP] if c.open][n]
        del conn.sent[:]
        self.harness.run(["deliver", ENRP, n, data.hex()])
        return conn.sent

    def test_enrp_error_with_16000_causes_logged_short(self):
        """
        Found by the fuzzer: an ENRP Error with 16,000 causes logged a
        48 KB line of cause numbers.
        """
        self.peer(0, 0x20)
        data = message(0xA, h("00000020 00000000") + tlv(0xC, h("0002 0004") * 16000))
        self.assertEqual(self.deliver(0, data), [])
        self.assertEqual(self.harness.lines[-1],
                         "ENRP Error from 00000020: UNRECOGNIZED_MESSAGE, UNRECOGNIZED_MESSAGE, "
                         "UNRECOGNIZED_MESSAGE and 15997 more")

    def test_protocol_error_of_64k(self):
        """
        Found by the fuzzer (an ENRP Error of 65,544 bytes).
        """
        data = h("0041 fff4 0009 fff0") + b"x" * 65516
        (answer,) = self.deliver(0, data)
        self.assertEqual(encode(answer), h("0a00 0414 0a0a0a0a 00000000 000c 0408 0002 0404")
                         + data[:1024])

    def test_handle_update_with_bad_action_of_64k(self):
        """
        A Handle Update with action 2 and a pool handle of 65,000 bytes:
        the Invalid Values answer echoed the whole message.
        """
        self.peer(0, 0x10)
        pe = PoolElement(7, 0x10, 1000, TCPTransport(7, ["127.0.0.1"]), ROUND_ROBIN)
        update = fuzz.HandleUpdate(0x10, 0, 2, b"h" * 65000, pe)
        data = encode(update)
        (answer,) = self.deliver(0, data)
        self.assertEqual(answer, ENRPError(0x0A0A0A0A, 0x10, OperationError.of(
            ErrorCause.INVALID_VALUES, data[:1024])))

    def test_list_response_fits(self):
        """
        Two peers whose Presence names 8,000 addresses each: a List
        Response naming both would need 128 KB.  It names those that fit.
        """
        many = SCTPTransport(9901, [ipaddress.ip_address(i + 1) for i in range(8000)])
        for n, peer in enumerate((0x10, 0x20)):
            self.deliver(n, encode(Presence(peer, 0, 0, ServerInformation(peer, many))))
        (answer,) = self.deliver(2, encode(ListRequest(0x30, 0)))
        self.assertIsInstance(answer, ListResponse)
        self.assertEqual([s.server_id for s in answer.servers], [0x0A0A0A0A, 0x10])

    def test_wildcard_with_8000_addresses(self):
        """
        A Presence naming the wildcard address and 7,999 others: the
        wildcard is replaced by the connection's address, in linear time
        (it was quadratic: seconds per message).
        """
        addresses = [ipaddress.ip_address("0.0.0.0")] + [
            ipaddress.ip_address(i + 1) for i in range(7999)]
        many = SCTPTransport(9901, addresses + addresses[1:10])
        self.deliver(0, encode(Presence(0x10, 0, 0, ServerInformation(0x10, many))))
        info = self.harness.server.peers[0x10].information
        self.assertEqual(info.transport.addresses[:2],
                         (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(1)))
        self.assertEqual(len(info.transport.addresses), 8000)


    def test_multicast_presence_with_8000_addresses(self):
        """
        The same over multicast, where anyone may send: the wildcard is
        replaced by the datagram's source in linear time.
        """
        from rserpool.services import presence_from

        addresses = [ipaddress.ip_address("0.0.0.0")] + [
            ipaddress.ip_address(i + 1) for i in range(7999)]
        presence = Presence(0x10, 0, 0, ServerInformation(0x10, SCTPTransport(9901, addresses)))
        self.assertLess(len(encode(presence)), 65507)  # one UDP datagram
        heard = presence_from(presence, ipaddress.ip_address("10.0.0.7"))
        self.assertEqual(heard.server_information.transport.addresses[:2],
                         (ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address(1)))
        self.assertEqual(len(heard.server_information.transport.addresses), 8000)


# --------------------------------------------------------------------------
# Properties: the fuzzer's targets under hypothesis


class HypothesisChooser(fuzz.Chooser):
    """
    The fuzzer's choices drawn by hypothesis, which can then shrink them.
    """

    _integers = {}
    _binaries = {}

    def __init__(self, data):
        self.data = data

    def pick(self, n):
        if n <= 1:
            return 0
        strategy = self._integers.get(n)
        if strategy is None:
            strategy = self._integers[n] = st.integers(0, n - 1)
        return self.data.draw(strategy)

    def blob(self, n):
        strategy = self._binaries.get(n)
        if strategy is None:
            strategy = self._binaries[n] = st.binary(max_size=n)
        return self.data.draw(strategy)


def fuzz_settings(n):
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


class PropertyTests(unittest.TestCase):
    """
    A few hundred inputs per target, in a few seconds: the fuzzer's
    promises, checked on every run of the suite.
    """

    @fuzz_settings(300)
    @given(st.data())
    def test_decode_mutated(self, data):
        """
        Any mutation of a valid message of any type gives a message (that
        encodes and decodes to itself) or a typed error.
        """
        protocol, raw = fuzz.fuzz_input(HypothesisChooser(data))
        fuzz.check_decode(raw, protocol)

    @fuzz_settings(200)
    @given(st.sampled_from(fuzz.SMALL), st.data())
    def test_decode_every_type_mutated(self, valid, data):
        protocol, raw = valid
        fuzz.check_decode(fuzz.mutate(HypothesisChooser(data), raw), protocol)

    @fuzz_settings(200)
    @given(st.binary(max_size=200), st.sampled_from([ASAP, ENRP]))
    def test_decode_arbitrary(self, raw, protocol):
        fuzz.check_decode(raw, protocol)
        fuzz.check_decode(fuzz.fix_length(raw), protocol)

    @fuzz_settings(100)
    @given(st.data())
    def test_stream(self, data):
        """
        Arbitrary streams in arbitrary chunks: messages and typed errors
        only, at most one message buffered, the same whatever the cutting.
        """
        protocol, chunks = fuzz.stream_input(HypothesisChooser(data))
        fuzz.check_stream(protocol, chunks)

    @fuzz_settings(100)
    @given(st.lists(st.binary(max_size=300), max_size=6), st.sampled_from([ASAP, ENRP]))
    def test_stream_arbitrary(self, chunks, protocol):
        fuzz.check_stream(protocol, chunks)

    # The registrar's sequences take thousands of choices each, which
    # hypothesis would draw one by one: it draws a seed for the fuzzer's
    # own generator instead (and prints it when a sequence fails).

    @fuzz_settings(40)
    @given(st.integers(0, 2 ** 64), st.booleans())
    def test_registrar_asap(self, seed, limits):
        """
        Random sequences of connections, time and ASAP messages (good,
        unexpected and broken) over several connections: nothing raises,
        every answer encodes, every log line is short.
        """
        chooser = fuzz.RandomChooser(random.Random(seed))
        fuzz.check_machine(fuzz.operations(chooser, ASAP, 20), limits)

    @fuzz_settings(40)
    @given(st.integers(0, 2 ** 64))
    def test_registrar_enrp(self, seed):
        chooser = fuzz.RandomChooser(random.Random(seed))
        fuzz.check_machine(fuzz.operations(chooser, ENRP, 20))
