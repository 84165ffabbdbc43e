"""
A registrar's ASAP side (RFC 5352 sections 2 and 3, RFC 5354, RFC 5356),
over the wire: registration, deregistration, handle resolution and the
pools' selection policies, Endpoint Keep Alive, Endpoint Unreachable,
Server Announce, unknown messages and parameters, malformed input and the
loss of a PE's connection.

Target: C{RSERPOOL_TARGET_ASAP} (and its timers: C{RSERPOOL_TARGET_KEEPALIVE},
C{RSERPOOL_TARGET_KEEPALIVE_TIMEOUT}, C{RSERPOOL_TARGET_MAX_BAD_PE_REPORT};
see L{rserpool.conformance.target}).  Each test works in pools of its own.
"""
import ipaddress
import struct

from twisted.internet import defer

from rserpool.codes import ErrorCause, PolicyType
from rserpool.conformance.case import (
    ConformanceCase,
    Prerequisite,
    cause_codes,
    cause_text,
)
from rserpool.conformance.client import AnnounceHearer, describe
from rserpool.conformance.stats import fits
from rserpool.conformance.target import endpoint_host
from rserpool.wire import (
    DATA_PLUS_CONTROL,
    ASAPError,
    BusinessCard,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    IPv4Address,
    Policy,
    PoolElement,
    PoolHandle,
    Registration,
    RegistrationResponse,
    encode,
    encode_parameter,
)

FULL = 0xFFFFFFFF


def load(fraction):
    """
    A load (or degradation) value: a fraction of 0xffffffff (RFC 5356).
    """
    return int(round(fraction * FULL))


def with_parameter(message, tlv, after=None):
    """
    The encoding of C{message} with the parameter bytes C{tlv} inserted
    after its first C{after} parameters, or at its end (its length field
    fixed): how an implementation that knows more parameters than the
    target would send.
    """
    data = bytearray(encode(message))
    if after is None:
        pos = len(data)
    else:
        pos = 4
        for _ in range(after):
            (length,) = struct.unpack_from("!H", data, pos + 2)
            pos += (length + 3) & ~3
    data[pos:pos] = tlv
    struct.pack_into("!H", data, 2, len(data))
    return bytes(data)


def unknown_parameter(action, value=b"conformance"):
    """
    An unknown parameter whose type's two high bits are C{action} (RFC
    5354 section 3): 0 stop and discard, 1 stop, discard and report,
    2 skip, 3 skip and report.  Type 0x3e7 (with those bits) is assigned
    to nothing.
    """
    ptype = (action << 14) | 0x03E7
    length = 4 + len(value)
    return struct.pack("!HH", ptype, length) + value + b"\0" * (-length % 4)


def error_causes(messages):
    """
    Every cause code of the ASAP Errors among C{messages}.
    """
    return [c for m in messages if isinstance(m, ASAPError) for c in cause_codes(m)]


class ASAPCase(ConformanceCase):
    needs = "asap"

    @defer.inlineCallbacks
    def pool(self, count=1, policies=None, handle=None, conn=None):
        """
        A pool of C{count} PEs registered over one connection (the PE
        host), answering keep-alives.

        @param policies: one L{Policy} per PE (Round Robin for all by
            default).
        @return: a L{Deferred} firing with C{(handle, connection, [Pool
            Element, ...])}.
        """
        if handle is None:
            handle = self.handle()
        if conn is None:
            conn = yield self.connect("pe")
        elements = []
        for i in range(count):
            policy = policies[i] if policies is not None else None
            element = yield self.register(conn, handle, policy=policy)
            elements.append(element)
        return (handle, conn, elements)

    @defer.inlineCallbacks
    def marker(self, conn):
        """
        A Handle Resolution of a pool nobody registered, and its answer:
        the target answers in order, so everything it sent for earlier
        requests has arrived once this comes back.
        """
        handle = self.handle("-m")
        yield self.resolve(conn, handle, None)


class RegistrationTests(ASAPCase):
    """
    RFC 5352 section 3.1: Registration and the Registration Response.
    """

    @defer.inlineCallbacks
    def test_accepted(self):
        """
        RFC 5352 §3.1 MUST: a registrar accepts a valid Registration of a
        new PE with a Registration Response without the R flag that names
        the pool handle and the PE identifier.
        """
        pe = yield self.connect("pe")
        handle = self.handle()
        element = self.element(pe)
        response = yield self.registration(pe, handle, element)
        self.assertFalse(response.reject, "rejected: %s" % describe(response))
        self.assertEqual(response.pool_handle, handle)
        self.assertEqual(response.identifier, element.identifier)
        self.assertEqual(cause_codes(response), [], "an acceptance carries an error")

    @defer.inlineCallbacks
    def test_resolvable(self):
        """
        RFC 5352 §3.3 MUST: a registered PE is returned by a Handle
        Resolution of its pool, with the user transport and policy it
        registered.
        """
        handle, _, (element,) = yield self.pool(1)
        pu = yield self.connect("pu")
        response = yield self.resolve(pu, handle)
        found = [pe for pe in response.pool_elements if pe.identifier == element.identifier]
        self.assertEqual(len(found), 1, "the PE is not returned: %s" % describe(response))
        (pe,) = found
        mine = element.user_transport
        self.assertEqual(type(pe.user_transport), type(mine))
        self.assertEqual(pe.user_transport.port, mine.port)
        self.assertTrue(pe.user_transport.addresses, "no address")
        self.assertTrue(set(pe.user_transport.addresses) <= set(mine.addresses),
                        "addresses %s were not registered (%s)"
                        % (pe.user_transport.addresses, mine.addresses))
        self.assertEqual(pe.policy.policy_type, PolicyType.ROUND_ROBIN)
        self.assertIsNotNone(response.policy, "no pool policy")
        self.assertEqual(response.policy.policy_type, PolicyType.ROUND_ROBIN)

    @defer.inlineCallbacks
    def test_homeRegistrar(self):
        """
        RFC 5352 §3.1 MUST: the registrar that accepts a registration
        becomes the PE's home registrar: Handle Resolution Responses name
        it (the server id of its Endpoint Keep Alives) as the PE's home.
        """
        handle, pe, (element,) = yield self.pool(1)
        target = self.target
        keep_alive = yield pe.expect(EndpointKeepAlive, target.keep_alive_interval + target.slack,
                                     "Endpoint Keep Alive")
        pu = yield self.connect("pu")
        response = yield self.resolve(pu, handle)
        (found,) = [p for p in response.pool_elements if p.identifier == element.identifier]
        self.assertEqual(found.home_registrar, keep_alive.server_id,
                         "home %08x, but the keep-alives come from %08x"
                         % (found.home_registrar, keep_alive.server_id))

    @defer.inlineCallbacks
    def test_reregistration(self):
        """
        RFC 5352 §3.1 MUST: a Registration for a PE identifier already
        registered in the pool, from that PE, is accepted and updates the
        PE: one PE, with the new values.
        """
        handle, pe, (element,) = yield self.pool(1)
        moved = PoolElement(element.identifier, 0, element.registration_life,
                            self.transport(pe, port=element.user_transport.port % 40000 + 20001),
                            element.policy)
        response = yield self.registration(pe, handle, moved)
        self.assertFalse(response.reject, "re-registration rejected: %s" % describe(response))
        pu = yield self.connect("pu")
        response = yield self.resolve(pu, handle)
        found = [p for p in response.pool_elements if p.identifier == element.identifier]
        self.assertEqual(len(found), 1, "%d PEs with the identifier" % len(found))
        self.assertEqual(found[0].user_transport.port, moved.user_transport.port,
                         "the update did not take")

    @defer.inlineCallbacks
    def test_policyMismatch(self):
        """
        RFC 5352 §3.1 MUST: a registration whose policy type is not the
        pool's is rejected (R flag) with the Inconsistent Pooling Policy
        cause, and the PE does not join the pool.
        """
        handle, pe, _ = yield self.pool(1)
        other = self.element(pe, policy=Policy.make(PolicyType.RANDOM))
        response = yield self.registration(pe, handle, other)
        self.assertTrue(response.reject, "a Random PE joined a Round Robin pool")
        self.assertIn(ErrorCause.INCONSISTENT_POOLING_POLICY, cause_codes(response),
                      "causes: %s" % cause_text(cause_codes(response)))
        pu = yield self.connect("pu")
        self.assertNotIn(other.identifier, (yield self.members(pu, handle)))

    @defer.inlineCallbacks
    def test_transportTypeMismatch(self):
        """
        RFC 5354 §3.12.7 SHOULD: a registration whose user transport
        protocol is not the pool's (TCP in an SCTP pool, or the reverse)
        is rejected with the Inconsistent Transport Type cause.
        """
        handle, pe, _ = yield self.pool(1)
        kind = "tcp" if pe.mapping == "sctp" else "sctp"
        other = self.element(pe, transport=self.transport(pe, kind=kind))
        response = yield self.registration(pe, handle, other)
        self.assertTrue(response.reject, "a %s PE joined a %s pool" % (kind, pe.mapping))
        self.assertIn(ErrorCause.INCONSISTENT_TRANSPORT_TYPE, cause_codes(response),
                      "causes: %s" % cause_text(cause_codes(response)))

    @defer.inlineCallbacks
    def test_transportUseMismatch(self):
        """
        RFC 5354 §3.12.8 SHOULD: a registration whose transport use (data
        only, or data plus control) is not the pool's is rejected with the
        Inconsistent Data/Control Configuration cause.
        """
        handle, pe, _ = yield self.pool(1)
        other = self.element(pe, transport=self.transport(pe, use=DATA_PLUS_CONTROL))
        response = yield self.registration(pe, handle, other)
        self.assertTrue(response.reject, "a data+control PE joined a data-only pool")
        self.assertIn(ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION, cause_codes(response),
                      "causes: %s" % cause_text(cause_codes(response)))

    @defer.inlineCallbacks
    def test_emptyHandle(self):
        """
        RFC 5354 §3.9 SHOULD: a Registration with an empty pool handle,
        which names no pool, is refused (a rejecting Registration Response
        or an ASAP Error).
        """
        pe = yield self.connect("pe")
        element = self.element(pe)
        pe.ack(b"", element.identifier)
        pe.send(Registration(b"", element))
        answer = yield pe.expect((RegistrationResponse, ASAPError), self.target.response_timeout,
                                 "Registration Response or Error")
        if isinstance(answer, RegistrationResponse):
            self.assertTrue(answer.reject, "a PE registered under the empty pool handle")

    @defer.inlineCallbacks
    def test_identifierInUse(self):
        """
        RFC 5355 §2.3.3 SHOULD: a PE registers only for itself: a
        registration from another host for a PE identifier that a live PE
        holds does not take it over (rejected, Non-unique PE Identifier
        expected).
        """
        (other,) = self.sources(1)
        handle, pe, (element,) = yield self.pool(1)
        intruder = yield self.connect("intruder", bind=other)
        stolen = PoolElement(element.identifier, 0, element.registration_life,
                             self.transport(intruder), element.policy)
        response = yield self.registration(intruder, handle, stolen)
        pu = yield self.connect("pu")
        resolved = yield self.resolve(pu, handle)
        (found,) = [p for p in resolved.pool_elements if p.identifier == element.identifier]
        self.assertNotIn(ipaddress.ip_address(other), found.user_transport.addresses,
                         "another host took the PE over")
        self.assertTrue(response.reject, "accepted (and ignored) instead of refused")
        self.assertIn(ErrorCause.NON_UNIQUE_PE_IDENTIFIER, cause_codes(response),
                      "causes: %s" % cause_text(cause_codes(response)))

    @defer.inlineCallbacks
    def test_foreignAddress(self):
        """
        RFC 5355 §2.3.3 SHOULD: a PE registers only for itself: a user
        transport that names only an address that is not the PE's
        (192.0.2.1) is refused, and that address is never handed to pool
        users.
        """
        pe = yield self.connect("pe")
        handle = self.handle()
        foreign = self.transport(pe, addresses=(IPv4Address("192.0.2.1"),))
        element = self.element(pe, transport=foreign)
        response = yield self.registration(pe, handle, element)
        pu = yield self.connect("pu")
        resolved = yield self.resolve(pu, handle)
        for p in resolved.pool_elements:
            self.assertNotIn(IPv4Address("192.0.2.1"), p.user_transport.addresses,
                             "a foreign address is handed to pool users")
        self.assertTrue(response.reject, "accepted without a usable address")

    @defer.inlineCallbacks
    def test_scope(self):
        """
        RFC 5355 §2.3.3 MAY: a registrar serving a network does not hand
        its pool users a PE's loopback address (which leads each of them to
        itself): registered beside the PE's own address (over SCTP) or
        alone (over TCP), it is left out or refused.
        """
        host = endpoint_host(self.target.asap)
        if host is None or host.is_loopback:
            self.not_applicable("the target serves loopback; no narrower scope to refuse")
        loopback = IPv4Address("127.0.0.1")
        pe = yield self.connect("pe")
        handle = self.handle()
        own = tuple(pe.local_addresses) if pe.mapping == "sctp" else ()
        element = self.element(pe, transport=self.transport(pe, addresses=own + (loopback,)))
        response = yield self.registration(pe, handle, element)
        if response.reject:
            return
        pu = yield self.connect("pu")
        resolved = yield self.resolve(pu, handle)
        for p in resolved.pool_elements:
            self.assertNotIn(loopback, p.user_transport.addresses,
                             "a loopback address is handed to pool users of a network")

    def sources(self, count):
        addresses = self.target.source_addresses(count)
        if addresses is None:
            self.not_applicable("needs %d more local address(es) to send from as other hosts "
                                "(RSERPOOL_TARGET_SOURCES)" % count)
        return addresses


class DeregistrationTests(ASAPCase):
    """
    RFC 5352 section 3.2: Deregistration and the Deregistration Response.
    """

    @defer.inlineCallbacks
    def test_own(self):
        """
        RFC 5352 §3.2 MUST: a registrar answers a PE's Deregistration with
        a Deregistration Response naming the pool handle and PE identifier,
        and the PE leaves the pool.
        """
        handle, pe, (element, stays) = yield self.pool(2)
        response = yield pe.request(
            Deregistration(handle, element.identifier), DeregistrationResponse,
            self.target.response_timeout, "Deregistration Response")
        self.assertEqual(response.pool_handle, handle)
        self.assertEqual(response.identifier, element.identifier)
        self.assertEqual(cause_codes(response), [], "the deregistration failed")
        pu = yield self.connect("pu")
        ids = yield self.members(pu, handle)
        self.assertNotIn(element.identifier, ids, "the PE is still in the pool")
        self.assertIn(stays.identifier, ids, "the other PE left too")

    @defer.inlineCallbacks
    def test_unknown(self):
        """
        RFC 5352 §3.2 MUST: a Deregistration of a PE the registrar does not
        have is answered with a Deregistration Response naming the handle
        and identifier, and changes nothing.
        """
        handle, pe, (element,) = yield self.pool(1)
        ghost = self.pe_id()
        response = yield pe.request(
            Deregistration(handle, ghost), DeregistrationResponse,
            self.target.response_timeout, "Deregistration Response")
        self.assertEqual(response.pool_handle, handle)
        self.assertEqual(response.identifier, ghost)
        pu = yield self.connect("pu")
        self.assertIn(element.identifier, (yield self.members(pu, handle)))

    @defer.inlineCallbacks
    def test_foreign(self):
        """
        RFC 5355 §2.3.3 SHOULD: only a PE deregisters itself: a
        Deregistration of a live PE sent from another host leaves the PE
        in the pool.
        """
        addresses = self.target.source_addresses(1)
        if addresses is None:
            self.not_applicable("needs another local address to send from "
                                "(RSERPOOL_TARGET_SOURCES)")
        handle, pe, (element,) = yield self.pool(1)
        other = yield self.connect("other", bind=addresses[0])
        yield other.request(
            Deregistration(handle, element.identifier), DeregistrationResponse,
            self.target.response_timeout, "Deregistration Response")
        pu = yield self.connect("pu")
        self.assertIn(element.identifier, (yield self.members(pu, handle)),
                      "another host deregistered the PE")


class HandleResolutionTests(ASAPCase):
    """
    RFC 5352 section 3.3: Handle Resolution.
    """

    @defer.inlineCallbacks
    def test_unknownHandle(self):
        """
        RFC 5352 §3.3 MUST: a Handle Resolution of a pool that does not
        exist is answered with a Handle Resolution Response that carries
        the Unknown Pool Handle cause and no PE.
        """
        pu = yield self.connect("pu")
        handle = self.handle()
        response = yield self.resolve(pu, handle, None)
        self.assertEqual(response.pool_handle, handle)
        self.assertEqual(response.pool_elements, ())
        self.assertIn(ErrorCause.UNKNOWN_POOL_HANDLE, cause_codes(response),
                      "causes: %s" % cause_text(cause_codes(response)))

    @defer.inlineCallbacks
    def test_lists(self):
        """
        RFC 5352 §3.3 MUST: a Handle Resolution of a pool with PEs returns
        at least one of them, each at most once, only PEs of that pool, and
        the pool's policy.
        """
        handle, _, elements = yield self.pool(4)
        # A pool whose handle starts like this one's, to catch a registrar
        # that matches handles loosely.
        near, _, (stranger,) = yield self.pool(1, handle=handle + b"x")
        pu = yield self.connect("pu")
        response = yield self.resolve(pu, handle, None)
        ids = [pe.identifier for pe in response.pool_elements]
        self.assertTrue(ids, "no PE returned: %s" % describe(response))
        self.assertEqual(len(ids), len(set(ids)), "a PE returned twice")
        self.assertNotIn(stranger.identifier, ids, "a PE of another pool returned")
        self.assertTrue(set(ids) <= {e.identifier for e in elements}, "unknown PEs returned")
        self.assertIsNotNone(response.policy)
        self.assertEqual(response.policy.policy_type, PolicyType.ROUND_ROBIN)

    @defer.inlineCallbacks
    def test_otherPool(self):
        """
        RFC 5352 §3.3 MUST: a Handle Resolution returns PEs of the pool it
        names and of no other, however many PEs are asked for.
        """
        handle, _, elements = yield self.pool(2)
        _, _, others = yield self.pool(3)
        pu = yield self.connect("pu")
        for items in (None, 1, FULL):
            response = yield self.resolve(pu, handle, items)
            ids = {pe.identifier for pe in response.pool_elements}
            self.assertTrue(ids <= {e.identifier for e in elements},
                            "PEs of another pool returned (items %s)" % items)

    @defer.inlineCallbacks
    def test_itemCount(self):
        """
        RFC 5352 §3.3 MAY: a registrar returns as many PEs as a Handle
        Resolution Option asks for (draft-dreibholz-rserpool-asap-hropt):
        2 of 4 when asked for 2, all 4 when asked for as many as possible.
        """
        handle, _, elements = yield self.pool(4)
        pu = yield self.connect("pu")
        two = yield self.resolve(pu, handle, 2)
        self.assertEqual(len(two.pool_elements), 2, "asked for 2, got %d" % len(two.pool_elements))
        every = yield self.resolve(pu, handle, FULL)
        self.assertEqual({pe.identifier for pe in every.pool_elements},
                         {e.identifier for e in elements}, "asked for all")


class PolicyTests(ASAPCase):
    """
    RFC 5356: the order or distribution of the PEs a registrar selects,
    one PE per Handle Resolution (Handle Resolution Option 1).
    """

    @defer.inlineCallbacks
    def choices(self, handle, count):
        """
        The first PE of each of C{count} Handle Resolutions asking for one.
        """
        pu = yield self.connect("pu")
        out = []
        for _ in range(count):
            response = yield self.resolve(pu, handle, 1)
            if not response.pool_elements:
                raise Prerequisite("a resolution returned no PE: %s" % describe(response))
            out.append(response.pool_elements[0].identifier)
        return out

    @defer.inlineCallbacks
    def sample(self, policies, count):
        handle, _, elements = yield self.pool(len(policies), policies)
        picks = yield self.choices(handle, count)
        counts = [picks.count(e.identifier) for e in elements]
        return elements, picks, counts

    @defer.inlineCallbacks
    def test_roundRobin(self):
        """
        RFC 5356 §4.1 MUST: Round Robin selects the pool's PEs in turn, in
        a fixed cyclic order.
        """
        policy = Policy.make(PolicyType.ROUND_ROBIN)
        elements, picks, _ = yield self.sample([policy] * 3, 12)
        cycle = picks[:3]
        self.assertEqual(sorted(cycle), sorted(e.identifier for e in elements),
                         "the first three selections are not the three PEs: %s" % picks)
        self.assertEqual(picks, cycle * 4, "not a fixed cycle")

    @defer.inlineCallbacks
    def test_weightedRoundRobin(self):
        """
        RFC 5356 §4.2 MUST: Weighted Round Robin selects each PE as many
        times per round as its weight.
        """
        weights = (1, 2, 3)
        policies = [Policy.make(PolicyType.WEIGHTED_ROUND_ROBIN, weight=w) for w in weights]
        rounds = 4
        _, picks, counts = yield self.sample(policies, rounds * sum(weights))
        for weight, count in zip(weights, counts):
            self.assertTrue(abs(count - rounds * weight) <= 1,
                            "weights %s, selections %s in %d rounds" % (weights, counts, rounds))

    @defer.inlineCallbacks
    def test_random(self):
        """
        RFC 5356 §4.3 MUST: Random selects each PE with equal probability
        (chi-square test of 300 selections from 3 PEs, p = 0.0001).
        """
        policy = Policy.make(PolicyType.RANDOM)
        _, _, counts = yield self.sample([policy] * 3, 300)
        ok, statistic, critical = fits(counts, [1, 1, 1])
        self.assertTrue(ok, "selections %s are not uniform (chi2 %.1f > %.1f)"
                        % (counts, statistic, critical))

    @defer.inlineCallbacks
    def test_weightedRandom(self):
        """
        RFC 5356 §4.4 MUST: Weighted Random selects a PE with probability
        proportional to its weight (400 selections, weights 1 and 3,
        p = 0.0001).
        """
        weights = (1, 3)
        policies = [Policy.make(PolicyType.WEIGHTED_RANDOM, weight=w) for w in weights]
        _, _, counts = yield self.sample(policies, 400)
        ok, statistic, critical = fits(counts, weights)
        self.assertTrue(ok, "selections %s do not follow weights %s (chi2 %.1f > %.1f)"
                        % (counts, weights, statistic, critical))

    @defer.inlineCallbacks
    def test_priority(self):
        """
        RFC 5356 §4.5 MUST: Priority selects the PE of the highest
        priority.
        """
        priorities = (1, 5, 3)
        policies = [Policy.make(PolicyType.PRIORITY, priority=p) for p in priorities]
        elements, picks, _ = yield self.sample(policies, 6)
        best = elements[1].identifier
        self.assertEqual(picks, [best] * 6, "priorities %s" % (priorities,))

    @defer.inlineCallbacks
    def test_leastUsed(self):
        """
        RFC 5356 §5.1 MUST: Least Used selects the PE of the lowest load.
        """
        loads = (0.5, 0.1, 0.9)
        policies = [Policy.make(PolicyType.LEAST_USED, load=load(x)) for x in loads]
        elements, picks, _ = yield self.sample(policies, 6)
        self.assertEqual(picks, [elements[1].identifier] * 6, "loads %s" % (loads,))

    @defer.inlineCallbacks
    def test_leastUsedDegradation(self):
        """
        RFC 5356 §5.2 MUST: Least Used with Degradation selects the PE of
        the lowest load, and each selection raises the selected PE's load
        by its degradation until it registers again.
        """
        policies = [
            Policy.make(PolicyType.LEAST_USED_DEGRADATION, load=0, load_degradation=load(0.5)),
            Policy.make(PolicyType.LEAST_USED_DEGRADATION, load=load(0.3), load_degradation=0),
        ]
        elements, picks, _ = yield self.sample(policies, 4)
        first, second = (e.identifier for e in elements)
        self.assertEqual(picks[0], first, "the least loaded PE was not selected first")
        self.assertEqual(picks[1:], [second] * 3,
                         "the degradation of the first selection was not counted")

    @defer.inlineCallbacks
    def test_priorityLeastUsed(self):
        """
        RFC 5356 §5.3 MUST: Priority Least Used selects the PE with the
        lowest sum of load and load increment.
        """
        policies = [
            Policy.make(PolicyType.PRIORITY_LEAST_USED, load=load(0.2), load_degradation=load(0.3)),
            Policy.make(PolicyType.PRIORITY_LEAST_USED, load=load(0.4), load_degradation=0),
        ]
        elements, picks, _ = yield self.sample(policies, 1)
        self.assertEqual(picks[0], elements[1].identifier,
                         "0.4 + 0 is lower than 0.2 + 0.3")

    @defer.inlineCallbacks
    def test_randomizedLeastUsed(self):
        """
        RFC 5356 §5.4 MUST: Randomized Least Used selects a PE with
        probability proportional to its unused capacity (300 selections,
        loads 0 and 0.5: two to one, p = 0.0001).
        """
        policies = [Policy.make(PolicyType.RANDOMIZED_LEAST_USED, load=load(x))
                    for x in (0.0, 0.5)]
        _, _, counts = yield self.sample(policies, 300)
        ok, statistic, critical = fits(counts, (2, 1))
        self.assertTrue(ok, "selections %s are not two to one (chi2 %.1f > %.1f)"
                        % (counts, statistic, critical))


class KeepAliveTests(ASAPCase):
    """
    RFC 5352 section 3.4: Endpoint Keep Alive from the home registrar.
    """

    @defer.inlineCallbacks
    def test_sent(self):
        """
        RFC 5352 §3.4 MUST: the home registrar sends each of its PEs
        Endpoint Keep Alives (its server id, the PE's pool handle) at its
        keep-alive interval.
        """
        handle, pe, (element,) = yield self.pool(1)
        target = self.target
        keep_alive = yield pe.expect(EndpointKeepAlive, target.keep_alive_interval + target.slack,
                                     "Endpoint Keep Alive")
        self.assertEqual(keep_alive.pool_handle, handle)
        self.assertNotEqual(keep_alive.server_id, 0, "server id 0")
        self.assertIn(keep_alive.identifier, (None, element.identifier))
        self.assertFalse(keep_alive.home, "the H flag, though nothing was taken over")

    @defer.inlineCallbacks
    def test_answered(self):
        """
        RFC 5352 §3.4 MUST: a PE that answers its Endpoint Keep Alives
        stays registered.
        """
        handle, pe, (element,) = yield self.pool(1)
        target = self.target
        for _ in range(2):
            yield pe.expect(EndpointKeepAlive, target.keep_alive_interval + target.slack,
                            "Endpoint Keep Alive")
        yield self.sleep(target.keep_alive_timeout + target.slack)
        pu = yield self.connect("pu")
        self.assertIn(element.identifier, (yield self.members(pu, handle)),
                      "removed though it answered")

    @defer.inlineCallbacks
    def test_unanswered(self):
        """
        RFC 5352 §3.4 MUST: a PE that does not answer an Endpoint Keep
        Alive within the keep-alive timeout is removed from the pool.
        """
        handle, pe, (element,) = yield self.pool(1)
        pe.ack(handle, element.identifier, on=False)
        target = self.target
        yield pe.expect(EndpointKeepAlive, target.keep_alive_interval + target.slack,
                        "Endpoint Keep Alive")
        pu = yield self.connect("pu")
        yield self.gone(pu, handle, element.identifier,
                        target.keep_alive_timeout + target.slack,
                        "removal of a PE that does not answer")

    @defer.inlineCallbacks
    def test_frequency(self):
        """
        RFC 5355 §2.14.3 MUST: a registrar limits the Endpoint Keep Alives
        it sends one PE: at most one per keep-alive interval to a PE that
        answers.
        """
        handle, pe, _ = yield self.pool(1)
        target = self.target
        window = 3 * target.keep_alive_interval
        yield self.sleep(window)
        count = len(pe.keep_alives)
        self.assertTrue(count <= 4, "%d Endpoint Keep Alives in %.1f s (interval %.1f s)"
                        % (count, window, target.keep_alive_interval))


class UnreachableTests(ASAPCase):
    """
    RFC 5352 section 3.5: Endpoint Unreachable reports from pool users,
    each from an address of its own (RSERPOOL_TARGET_SOURCES).
    """

    @defer.inlineCallbacks
    def report(self, handle, identifier, count):
        addresses = self.target.source_addresses(count)
        if addresses is None:
            self.not_applicable("needs %d local addresses to send from as distinct pool users "
                                "(RSERPOOL_TARGET_SOURCES)" % count)
        for address in addresses:
            pu = yield self.connect("pu-%s" % address, bind=address)
            pu.send(EndpointUnreachable(handle, identifier))
            # Its answer (there is none for the report) is behind the
            # report: the report has been handled.
            yield self.marker(pu)

    @defer.inlineCallbacks
    def test_belowThreshold(self):
        """
        RFC 5352 §3.5 MUST: a registrar counts Endpoint Unreachable
        reports: fewer than MAX-BAD-PE-REPORT leave a PE that answers its
        keep-alives in the pool.
        """
        target = self.target
        if target.max_bad_pe_report < 2:
            self.not_applicable("MAX-BAD-PE-REPORT is 1")
        handle, pe, (element,) = yield self.pool(1)
        yield self.report(handle, element.identifier, target.max_bad_pe_report - 1)
        yield self.sleep(target.keep_alive_timeout + target.slack)
        pu = yield self.connect("pu")
        self.assertIn(element.identifier, (yield self.members(pu, handle)),
                      "removed after %d report(s)" % (target.max_bad_pe_report - 1))

    @defer.inlineCallbacks
    def test_threshold(self):
        """
        RFC 5352 §3.5 MUST: MAX-BAD-PE-REPORT Endpoint Unreachable reports
        about a PE make the registrar remove it (sooner than its
        keep-alives alone would: within the keep-alive timeout plus half
        an interval after the last report, for a PE that has stopped
        answering).
        """
        target = self.target
        handle, pe, (element,) = yield self.pool(1)
        # A dead PE: its association is up, nothing answers.
        pe.ack(handle, element.identifier, on=False)
        yield self.report(handle, element.identifier, target.max_bad_pe_report)
        pu = yield self.connect("pu")
        yield self.gone(pu, handle, element.identifier,
                        target.keep_alive_timeout + target.keep_alive_interval / 2,
                        "removal after %d reports" % target.max_bad_pe_report)


class ServerAnnounceTests(ASAPCase):
    """
    RFC 5352 section 3.6: a registrar announcing itself.
    """

    @defer.inlineCallbacks
    def test_announce(self):
        """
        RFC 5352 §3.6 MAY: a registrar announces itself by Server Announce
        on a multicast group: a non-zero server id and, when it lists
        transports, its ASAP endpoint's port among them.
        """
        target = self.target
        if target.announce is None:
            self.not_applicable("the target does not announce (RSERPOOL_TARGET_ANNOUNCE)")
        group, port, interface = target.announce
        hearer = AnnounceHearer(self.reactor, group, interface)
        try:
            listening = self.reactor.listenMulticast(port, hearer, listenMultiple=True)
        except Exception as e:
            raise Prerequisite("cannot listen on %s:%d: %s" % (group, port, e))
        self.addCleanup(listening.stopListening)
        _, source, message = yield hearer.next(2 * target.announce_interval + target.slack)
        self.assertNotEqual(message.server_id, 0)
        if message.transports:
            from twisted.internet.endpoints import _parse

            _, kwargs = _parse(target.asap)
            asap_port = int(kwargs.get("port", 0))
            if asap_port:
                self.assertIn(asap_port, [t.port for t in message.transports],
                              "the announced transports do not name the ASAP port")


class ErrorTests(ASAPCase):
    """
    Unknown messages and parameters (RFC 5354 section 3, RFC 5352 section
    2.2.14) and malformed input.
    """

    @defer.inlineCallbacks
    def test_unknownMessage(self):
        """
        RFC 5352 §2.2.14 SHOULD: a registrar answers an ASAP message of a
        type it does not know with an ASAP Error carrying the Unrecognized
        Message cause, and goes on serving the connection.
        """
        pu = yield self.connect("pu")
        pu.send_raw(struct.pack("!BBH", 0x7F, 0, 8) + b"\x12\x34\x56\x78")
        error = yield pu.expect(ASAPError, self.target.response_timeout, "ASAP Error")
        self.assertIn(ErrorCause.UNRECOGNIZED_MESSAGE, cause_codes(error),
                      "causes: %s" % cause_text(cause_codes(error)))
        yield self.marker(pu)

    @defer.inlineCallbacks
    def parameter(self, action):
        """
        A Handle Resolution of a pool with a PE, with an unknown parameter
        of the given action bits after its Pool Handle.

        @return: C{(the responses for that pool, the cause codes reported,
            a description of everything that came back)}.
        """
        handle, _, (element,) = yield self.pool(1)
        pu = yield self.connect("pu")
        pu.send_raw(with_parameter(HandleResolution(handle), unknown_parameter(action)))
        yield self.marker(pu)
        messages = pu.unread()
        answers = [m for m in messages if isinstance(m, HandleResolutionResponse)
                   and m.pool_handle == handle]
        reported = error_causes(messages) + [c for m in answers for c in cause_codes(m)]
        seen = "; got: %s" % (", ".join(describe(m) for m in messages) or "nothing")
        return answers, reported, seen

    @defer.inlineCallbacks
    def test_unknownParameterStop(self):
        """
        RFC 5354 §3 MUST: an unknown parameter whose type starts with the
        bits 00 makes the receiver discard the whole message and report
        nothing.
        """
        answers, reported, seen = yield self.parameter(0)
        self.assertEqual(answers, [], "the message was processed" + seen)
        self.assertEqual(reported, [], "reported" + seen)

    @defer.inlineCallbacks
    def test_unknownParameterStopReport(self):
        """
        RFC 5354 §3 MUST: an unknown parameter whose type starts with the
        bits 01 makes the receiver discard the message and report the
        parameter (Unrecognized Parameter).
        """
        answers, reported, seen = yield self.parameter(1)
        self.assertEqual(answers, [], "the message was processed" + seen)
        self.assertIn(ErrorCause.UNRECOGNIZED_PARAMETER, reported, "not reported" + seen)

    @defer.inlineCallbacks
    def test_unknownParameterSkip(self):
        """
        RFC 5354 §3 MUST: an unknown parameter whose type starts with the
        bits 10 is skipped: the message is processed and nothing reported.
        """
        answers, reported, seen = yield self.parameter(2)
        self.assertEqual(len(answers), 1, "the message was not processed" + seen)
        self.assertTrue(answers[0].pool_elements, "processed without its PE" + seen)
        self.assertEqual(reported, [], "reported" + seen)

    @defer.inlineCallbacks
    def test_unknownParameterSkipReport(self):
        """
        RFC 5354 §3 MUST: an unknown parameter whose type starts with the
        bits 11 is skipped and reported: the message is processed, and an
        Unrecognized Parameter cause comes back.
        """
        answers, reported, seen = yield self.parameter(3)
        self.assertEqual(len(answers), 1, "the message was not processed" + seen)
        self.assertTrue(answers[0].pool_elements, "processed without its PE" + seen)
        self.assertIn(ErrorCause.UNRECOGNIZED_PARAMETER, reported, "not reported" + seen)

    @defer.inlineCallbacks
    def refused(self, pe, data, handle):
        """
        Send a bad Registration over C{pe}; it must be answered by an ASAP
        Error or a rejecting Registration Response, register nothing, and
        leave the connection serving.
        """
        pe.send_raw(data)
        answer = yield pe.expect((ASAPError, RegistrationResponse),
                                 self.target.response_timeout,
                                 "ASAP Error or rejecting Registration Response")
        if isinstance(answer, RegistrationResponse):
            self.assertTrue(answer.reject, "a malformed registration was accepted")
        yield self.marker(pe)
        pu = yield self.connect("pu")
        self.assertEqual((yield self.members(pu, handle)), set(), "something registered")
        return answer

    @defer.inlineCallbacks
    def test_overrunningParameter(self):
        """
        RFC 5354 §3.12.3 SHOULD: a Registration whose Pool Element
        parameter claims more bytes than the message holds is refused (an
        ASAP Error, Invalid Values expected), and the registrar goes on
        serving the connection.
        """
        pe = yield self.connect("pe")
        handle = self.handle()
        data = bytearray(encode(Registration(handle, self.element(pe))))
        # The Pool Element is the second parameter: make it 64 bytes longer.
        (ph_length,) = struct.unpack_from("!H", data, 6)
        offset = 4 + ((ph_length + 3) & ~3)
        (pe_length,) = struct.unpack_from("!H", data, offset + 2)
        struct.pack_into("!H", data, offset + 2, pe_length + 64)
        answer = yield self.refused(pe, bytes(data), handle)
        self.assertIn(ErrorCause.INVALID_VALUES, cause_codes(answer),
                      "causes: %s" % cause_text(cause_codes(answer)))

    @defer.inlineCallbacks
    def test_missingParameter(self):
        """
        RFC 5354 §3.12.3 SHOULD: a Registration without its Pool Element
        parameter is refused (an ASAP Error, Invalid Values expected), and
        the registrar goes on serving the connection.
        """
        pe = yield self.connect("pe")
        handle = self.handle()
        ph = encode_parameter(PoolHandle(handle))
        data = struct.pack("!BBH", 0x01, 0, 4 + len(ph)) + ph
        answer = yield self.refused(pe, data, handle)
        self.assertIn(ErrorCause.INVALID_VALUES, cause_codes(answer),
                      "causes: %s" % cause_text(cause_codes(answer)))

    @defer.inlineCallbacks
    def test_unknownPolicy(self):
        """
        RFC 5354 §3.8 SHOULD: a registration with a policy type the
        registrar does not know is refused (a rejecting Registration
        Response or an ASAP Error), not registered with some other policy.
        """
        pe = yield self.connect("pe")
        handle = self.handle()
        element = self.element(pe, policy=Policy(0x00003E7E, (), b"\0\0\0\0"))
        data = encode(Registration(handle, element))
        yield self.refused(pe, data, handle)

    @defer.inlineCallbacks
    def test_businessCard(self):
        """
        RFC 5352 §2.2.13 SHOULD NOT: a Business Card (a message between
        pool users and PEs) sent to a registrar registers none of the PEs
        it lists.
        """
        pe = yield self.connect("pe")
        handle = self.handle()
        element = self.element(pe)
        pe.send(BusinessCard(handle, (element,), Policy.make(PolicyType.ROUND_ROBIN)))
        yield self.marker(pe)
        pu = yield self.connect("pu")
        self.assertEqual((yield self.members(pu, handle)), set(),
                         "a Business Card registered its PEs")


class ConnectionTests(ASAPCase):
    """
    A PE's ASAP connection (association) ending.
    """

    @defer.inlineCallbacks
    def test_lost(self):
        """
        RFC 5352 §3.4 MAY: a registrar may take the end of a PE's ASAP
        association for the PE's failure and remove it at once, before a
        keep-alive would go unanswered (within half a keep-alive
        interval).
        """
        handle, pe, (element,) = yield self.pool(1)
        pu = yield self.connect("pu")
        yield pe.close()
        target = self.target
        yield self.gone(pu, handle, element.identifier, target.keep_alive_interval / 2,
                        "removal of a PE whose connection ended")
