"""
A registrar's ENRP side (RFC 5353), over the wire: the suite poses as a
peer registrar (L{rserpool.conformance.peer}) and checks Presence and its
reply, the PE checksum, Handle Table Request and Response (the W and M
flags, a table of hundreds of PEs), Handle Update (add, delete), List
Request and Response, Init Takeover and Takeover Server, the audit by
checksum, and the Error message.

Target: C{RSERPOOL_TARGET_ENRP}, and C{RSERPOOL_TARGET_ASAP} of the same
registrar for the tests that register PEs or resolve handles.  The target
must admit the suite's address as a peer; C{RSERPOOL_TARGET_PEER_HEARTBEAT}
is its PEER-HEARTBEAT-CYCLE.
"""
import struct

from twisted.internet import defer

from rserpool.codes import ErrorCause, PolicyType
from rserpool.conformance.case import ConformanceCase, Prerequisite, cause_codes, cause_text
from rserpool.conformance.client import NoAnswer, describe
from rserpool.conformance.peer import ENRPPeer, checksum
from rserpool.conformance.test_asap import unknown_parameter, with_parameter
from rserpool.wire import (
    ADD_PE,
    DEL_PE,
    Deregistration,
    DeregistrationResponse,
    ENRPError,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    Policy,
    PoolElement,
    Presence,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    TakeoverServer,
    TCPTransport,
)

#: The most Handle Table Responses one table download may take.
MAX_PAGES = 200


class ENRPCase(ConformanceCase):
    needs = "enrp"

    def setUp(self):
        ConformanceCase.setUp(self)
        self._peer_ids = set()

    def need_asap(self):
        if self.target.asap is None:
            self.not_applicable("needs the registrar's ASAP endpoint too (RSERPOOL_TARGET_ASAP)")

    @defer.inlineCallbacks
    def peer(self, name="peer", server_id=None):
        """
        A peer registrar of the target, up (its Presence answered), and
        stopped after the test.

        @param server_id: its id [C{RSERPOOL_TARGET_PEER_ID} for the first
            peer of a test, else random].
        """
        if server_id is None and not self._peer_ids and self.target.peer_id:
            server_id = self.target.peer_id
        while server_id is None or server_id in self._peer_ids:
            server_id = self.rng.getrandbits(32) or None
        self._peer_ids.add(server_id)
        peer = ENRPPeer(self.reactor, self.target, server_id, name)
        self.addCleanup(peer.stop)
        try:
            yield peer.start()
        except NoAnswer as e:
            refused = [m for m in peer.inbox.received if isinstance(m, ENRPError)]
            if refused:
                raise Prerequisite(
                    "the target refused the suite as a peer (%s): admit its address as a "
                    "peer (doc/conformance.rst, 'Testing the ENRP side')" % describe(refused[0]))
            raise Prerequisite("the target did not answer the suite's Presence: %s" % (e,))
        except Exception as e:
            raise Prerequisite("cannot reach the target's ENRP endpoint %s: %s" % (
                self.target.enrp, e))
        return peer

    def pe(self, peer, identifier=None, home=None):
        """
        A Pool Element that C{peer} is home for, at its address.
        """
        address = peer.information.transport.addresses[0]
        port = self.rng.randrange(20000, 60000)
        kind = SCTPTransport if isinstance(peer.information.transport, SCTPTransport) \
            else TCPTransport
        return PoolElement(
            identifier if identifier is not None else self.pe_id(),
            home if home is not None else peer.server_id,
            60000,
            kind(port, (address,)),
            Policy.make(PolicyType.ROUND_ROBIN),
            kind(port + 1, (address,)),
        )

    def announce(self, peer, handle, element, action=ADD_PE):
        """
        C{peer} tells the target it added (or removed) a PE it is home for.
        """
        pes = peer.owned.setdefault(handle, {})
        if action == ADD_PE:
            pes[element.identifier] = element
        else:
            pes.pop(element.identifier, None)
        peer.send(HandleUpdate(peer.server_id, peer.target_id, action, handle, element))

    @defer.inlineCallbacks
    def table(self, peer, own=False):
        """
        The target's handle table, requested by C{peer}, following the M
        flag.

        @return: C{(responses, {handle: {identifier: Pool Element}})}.
        """
        responses = []
        pools = {}
        while len(responses) < MAX_PAGES:
            response = yield peer.request(
                HandleTableRequest(peer.server_id, peer.target_id, own),
                (HandleTableResponse, ENRPError), "Handle Table Response",
                self.target.response_timeout + self.target.slack)
            if isinstance(response, ENRPError):
                raise NoAnswer("Handle Table Request answered by %s" % describe(response))
            responses.append(response)
            for entry in response.entries:
                pes = pools.setdefault(entry.pool_handle, {})
                for pe in entry.pool_elements:
                    pes.setdefault(pe.identifier, []).append(pe)
            if not response.more_to_send:
                break
        flat = {h: {i: pes[0] for i, pes in ids.items()} for h, ids in pools.items()}
        twice = [(h, i) for h, ids in pools.items() for i, pes in ids.items() if len(pes) > 1]
        if twice:
            raise NoAnswer("the handle table lists %d PE(s) twice, e.g. %r" % (len(twice), twice[0]))
        return responses, flat

    @defer.inlineCallbacks
    def victim_pe(self, peer, victim):
        """
        C{victim} announces a PE of a new pool; the target must pass it on
        to C{peer} (a L{Prerequisite} of the takeover tests).

        @return: a L{Deferred} firing with C{(handle, element)}.
        """
        handle = self.handle()
        element = self.pe(victim)
        self.announce(victim, handle, element)
        _, every = yield self.table(peer)
        if element.identifier not in every.get(handle, {}):
            raise Prerequisite("the target did not take the victim's Handle Update")
        return handle, element

    def wait_home(self, peer, handle, element, home, what):
        """
        Poll the target's handle table (over C{peer}) until it names C{home}
        as the home of C{element} of C{handle}.
        """
        @defer.inlineCallbacks
        def moved():
            _, now = yield self.table(peer)
            pe = now.get(handle, {}).get(element.identifier)
            return pe is not None and pe.home_registrar == home

        return self.poll(moved, self.target.response_timeout, what=what)

    def failure_bound(self):
        """
        How long the target may take to find a silent peer failed and start
        its takeover: MAX-TIME-LAST-HEARD, then MAX-TIME-NO-RESPONSE, within
        a heartbeat cycle (RFC 5353 sections 3.4.3 and 3.5.1).
        """
        target = self.target
        return (target.peer_max_time_last_heard + target.peer_max_time_no_response
                + target.peer_heartbeat * 1.125 + 2 * target.slack)

    @defer.inlineCallbacks
    def register_many(self, handle, count):
        """
        Register C{count} PEs at the target's ASAP endpoint over one
        connection, the requests sent at once.
        """
        self.need_asap()
        pe = yield self.connect("pe")
        elements = [self.element(pe) for _ in range(count)]
        for element in elements:
            pe.ack(handle, element.identifier)
        waits = [pe.expect(lambda m, i=e.identifier: isinstance(m, RegistrationResponse)
                           and m.identifier == i,
                           self.target.response_timeout + count / 100.0, "Registration Response")
                 for e in elements]
        for element in elements:
            pe.send(Registration(handle, element))
        try:
            responses = yield defer.gatherResults(waits, consumeErrors=True)
        except defer.FirstError as e:
            raise Prerequisite("registering %d PEs: %s" % (count, e.subFailure.value))
        refused = [r for r in responses if r.reject]
        if refused:
            raise Prerequisite("%d of %d registrations refused: %s" % (
                len(refused), count, describe(refused[0])))
        return pe, elements

    @defer.inlineCallbacks
    def resolved(self, handle, identifier, present=True, timeout=None):
        """
        Poll the target's ASAP side until C{identifier} is (or is not) in
        C{handle}; a L{Deferred} fires with the Pool Element (or C{None}).
        """
        self.need_asap()
        pu = yield self.connect("pu")
        found = {}

        def check():
            def look(response):
                found["pe"] = next((p for p in response.pool_elements
                                    if p.identifier == identifier), None)
                return (found["pe"] is not None) == present

            return self.resolve(pu, handle).addCallback(look)

        yield self.poll(check, timeout or self.target.response_timeout,
                        what="the PE %s the pool" % ("in" if present else "out of"))
        return found["pe"]


class PresenceTests(ENRPCase):
    """
    Presence: RFC 5353 sections 2.1, 3.4 and 3.6.
    """

    @defer.inlineCallbacks
    def test_reply(self):
        """
        RFC 5353 §2.1 MUST: a registrar answers a Presence with the R flag
        by a Presence of its own: its non-zero id as sender, the asking
        peer (or 0) as receiver, and a Server Information with its id.
        """
        peer = yield self.peer()
        presence = [m for m in peer.inbox.received if isinstance(m, Presence)][0]
        self.assertNotEqual(presence.sender_id, 0)
        self.assertIn(presence.receiver_id, (0, peer.server_id))
        self.assertEqual(presence.server_information.server_id, presence.sender_id)

    @defer.inlineCallbacks
    def test_heartbeat(self):
        """
        RFC 5353 §3.4.2 SHOULD: a registrar sends each peer a Presence
        every PEER-HEARTBEAT-CYCLE (within 12.5 % of it).
        """
        peer = yield self.peer()
        peer.inbox.unread(Presence)
        cycle = self.target.peer_heartbeat * 1.125
        for _ in range(2):
            yield peer.expect(lambda m: isinstance(m, Presence) and not m.reply_required,
                              cycle + self.target.slack, "heartbeat Presence")

    @defer.inlineCallbacks
    def test_checksum(self):
        """
        RFC 5353 §3.6.1 MUST: the PE checksum of a registrar's Presence is
        the checksum of the PEs it is home for, as they register and
        leave.
        """
        self.need_asap()
        peer = yield self.peer()
        handle = self.handle()
        pe, elements = yield self.register_many(handle, 3)
        for expected_in, step in ((True, None), (False, elements[0])):
            if step is not None:
                yield pe.request(Deregistration(handle, step.identifier), DeregistrationResponse,
                                 self.target.response_timeout, "Deregistration Response")
            _, own = yield self.table(peer, own=True)
            mine = {i for i in own.get(handle, {})}
            wanted = {e.identifier for e in elements} - ({step.identifier} if step else set())
            if mine != wanted:
                raise Prerequisite("the W-flagged handle table lists %d of our %d PEs" % (
                    len(mine & wanted), len(wanted)))
            # Any Presence from now on must carry the new checksum.
            peer.inbox.unread(Presence)
            presence = yield peer.request(
                peer.presence(reply=True),
                lambda m: isinstance(m, Presence) and m.sender_id == peer.target_id,
                "Presence")
            expected = checksum((h, i) for h, pes in own.items() for i in pes)
            self.assertEqual(presence.checksum, expected,
                             "checksum %04x, the PEs it is home for give %04x"
                             % (presence.checksum, expected))


class HandleTableTests(ENRPCase):
    """
    Handle Table Request and Response: RFC 5353 sections 2.2, 2.3, 3.2.3.
    """

    @defer.inlineCallbacks
    def test_table(self):
        """
        RFC 5353 §3.2.3 MUST: a registrar answers a peer's Handle Table
        Request with Handle Table Responses listing every PE it has: pool
        handle, identifier, user transport, policy and home registrar.
        """
        peer = yield self.peer()
        handle = self.handle()
        _, elements = yield self.register_many(handle, 3)
        _, pools = yield self.table(peer)
        listed = pools.get(handle, {})
        for element in elements:
            self.assertIn(element.identifier, listed, "a PE is missing")
            pe = listed[element.identifier]
            self.assertEqual(pe.user_transport.port, element.user_transport.port)
            self.assertEqual(pe.policy.policy_type, element.policy.policy_type)
            self.assertEqual(pe.home_registrar, peer.target_id,
                             "home %08x, not the registrar %08x" % (pe.home_registrar,
                                                                    peer.target_id))

    @defer.inlineCallbacks
    def test_ownChildrenOnly(self):
        """
        RFC 5353 §2.2 MUST: a Handle Table Request with the W flag is
        answered with the PEs the registrar is home for, and no others.
        """
        peer = yield self.peer()
        handle = self.handle()
        _, (mine,) = yield self.register_many(handle, 1)
        theirs = self.pe(peer)
        self.announce(peer, handle, theirs)
        _, every = yield self.table(peer)
        if theirs.identifier not in every.get(handle, {}):
            raise Prerequisite("the target did not take the peer's Handle Update")
        _, own = yield self.table(peer, own=True)
        self.assertIn(mine.identifier, own.get(handle, {}), "its own PE is missing")
        self.assertNotIn(theirs.identifier, own.get(handle, {}),
                         "the W flag was ignored: a peer's PE is listed")

    @defer.inlineCallbacks
    def test_moreToSend(self):
        """
        RFC 5353 §2.3 MUST: a handle table too large for one message comes
        in several Handle Table Responses, the M flag on each but the last,
        together listing every PE once (200 PEs, more than the 128 a
        response holds by RSPLIB's and our default).
        """
        peer = yield self.peer()
        handle = self.handle()
        _, elements = yield self.register_many(handle, 200)
        responses, pools = yield self.table(peer)
        self.assertTrue(len(responses) > 1, "200 PEs in one message")
        flags = [r.more_to_send for r in responses]
        self.assertEqual(flags, [True] * (len(flags) - 1) + [False], "M flags %s" % flags)
        listed = set(pools.get(handle, {}))
        missing = {e.identifier for e in elements} - listed
        self.assertEqual(missing, set(), "%d of 200 PEs missing" % len(missing))


class HandleUpdateTests(ENRPCase):
    """
    Handle Update: RFC 5353 sections 2.4 and 3.3.
    """

    @defer.inlineCallbacks
    def test_add(self):
        """
        RFC 5353 §3.3.1 MUST: a registrar takes a peer's Handle Update
        ADD_PE into its handlespace: pool users get the PE, with the peer
        as its home.
        """
        peer = yield self.peer()
        handle = self.handle()
        element = self.pe(peer)
        self.announce(peer, handle, element)
        found = yield self.resolved(handle, element.identifier)
        self.assertEqual(found.home_registrar, peer.server_id)
        self.assertEqual(found.user_transport.port, element.user_transport.port)

    @defer.inlineCallbacks
    def test_delete(self):
        """
        RFC 5353 §3.3.2 MUST: a Handle Update DEL_PE from a PE's home
        registrar removes the PE: pool users no longer get it.
        """
        peer = yield self.peer()
        handle = self.handle()
        element, stays = self.pe(peer), self.pe(peer)
        self.announce(peer, handle, element)
        self.announce(peer, handle, stays)
        yield self.resolved(handle, element.identifier)
        self.announce(peer, handle, element, DEL_PE)
        yield self.resolved(handle, element.identifier, present=False)
        yield self.resolved(handle, stays.identifier)


class UpdateSentTests(ENRPCase):
    """
    Handle Updates a registrar sends: RFC 5353 section 3.3.
    """

    @defer.inlineCallbacks
    def test_announced(self):
        """
        RFC 5353 §3.3.1 MUST: a registrar tells its peers of every PE that
        registers with it (a Handle Update ADD_PE naming it as home) and of
        every PE that leaves it (DEL_PE).
        """
        peer = yield self.peer()
        handle = self.handle()
        pe, (element,) = yield self.register_many(handle, 1)

        def update(action):
            return lambda m: (isinstance(m, HandleUpdate) and m.pool_handle == handle
                              and m.pool_element.identifier == element.identifier
                              and m.action == action)

        added = yield peer.expect(update(ADD_PE), self.target.response_timeout,
                                  "Handle Update ADD_PE")
        self.assertEqual(added.sender_id, peer.target_id)
        self.assertEqual(added.pool_element.home_registrar, peer.target_id)
        yield pe.request(Deregistration(handle, element.identifier), DeregistrationResponse,
                         self.target.response_timeout, "Deregistration Response")
        yield peer.expect(update(DEL_PE), self.target.response_timeout, "Handle Update DEL_PE")


class ListTests(ENRPCase):
    """
    List Request and Response: RFC 5353 sections 2.5, 2.6 and 3.2.2.
    """

    @defer.inlineCallbacks
    def test_list(self):
        """
        RFC 5353 §3.2.2 MUST: a registrar answers a peer's List Request with
        a List Response, not rejected, naming its peers by their Server
        Information.
        """
        peer = yield self.peer()
        response = yield peer.request(ListRequest(peer.server_id, peer.target_id),
                                      (ListResponse, ENRPError), "List Response")
        self.assertIsInstance(response, ListResponse, describe(response))
        self.assertFalse(response.reject, "rejected")
        self.assertEqual(response.sender_id, peer.target_id)
        for server in response.servers:
            self.assertNotEqual(server.server_id, 0)


class TakeoverTests(ENRPCase):
    """
    Takeover of a failed peer: RFC 5353 sections 2.7 to 2.9 and 3.5.
    """

    @defer.inlineCallbacks
    def test_initTakeoverAck(self):
        """
        RFC 5353 §3.5.1 MUST: a registrar answers a peer's Init Takeover of
        another peer with an Init Takeover Ack naming that target.
        """
        peer = yield self.peer("taker")
        victim = yield self.peer("victim")
        ack = yield peer.request(
            InitTakeover(peer.server_id, peer.target_id, victim.server_id),
            InitTakeoverAck, "Init Takeover Ack")
        self.assertEqual(ack.target_id, victim.server_id)
        self.assertEqual(ack.sender_id, peer.target_id)
        self.assertIn(ack.receiver_id, (0, peer.server_id))

    @defer.inlineCallbacks
    def test_takeoverServer(self):
        """
        RFC 5353 §3.5.2 MUST: once a peer announces it took another over
        (Takeover Server), the registrar makes it the home of the taken
        peer's PEs.
        """
        peer = yield self.peer("taker")
        victim = yield self.peer("victim")
        handle, element = yield self.victim_pe(peer, victim)
        yield peer.request(InitTakeover(peer.server_id, peer.target_id, victim.server_id),
                           InitTakeoverAck, "Init Takeover Ack")
        peer.send(TakeoverServer(peer.server_id, peer.target_id, victim.server_id))
        peer.owned.setdefault(handle, {})[element.identifier] = element
        victim.owned.clear()
        yield self.wait_home(peer, handle, element, peer.server_id, "the new home")

    @defer.inlineCallbacks
    def test_targetAlive(self):
        """
        RFC 5353 §3.5.1 SHOULD: a registrar named as the target of an Init
        Takeover shows it is alive with a Presence, and does not
        acknowledge its own takeover.
        """
        peer = yield self.peer()
        peer.inbox.unread(Presence)
        peer.send(InitTakeover(peer.server_id, peer.target_id, peer.target_id))
        yield peer.expect(Presence, self.target.response_timeout, "Presence")
        yield peer.inbox.quiet(InitTakeoverAck, 0.2)


class DeadPeerTests(ENRPCase):
    """
    A silent or failed peer: RFC 5353 sections 3.4.3 and 3.5.
    """

    @defer.inlineCallbacks
    def test_probe(self):
        """
        RFC 5353 §3.4.3 SHOULD: a registrar that has not heard from a peer
        for MAX-TIME-LAST-HEARD sends it a Presence with the R flag.
        """
        peer = yield self.peer()
        peer.silence()
        target = self.target
        yield peer.expect(lambda m: isinstance(m, Presence) and m.reply_required,
                          target.peer_max_time_last_heard + target.peer_heartbeat * 1.125
                          + target.slack, "Presence with the R flag")

    @defer.inlineCallbacks
    def test_takeover(self):
        """
        RFC 5353 §3.5.1 SHOULD: a registrar whose peer fails takes its PEs
        over: an Init Takeover to the other peers, once they acknowledge a
        Takeover Server, and it is the PEs' home.
        """
        peer = yield self.peer("witness")
        victim = yield self.peer("victim")
        handle, element = yield self.victim_pe(peer, victim)
        yield victim.stop()
        target = self.target
        init = yield peer.expect(
            lambda m: isinstance(m, InitTakeover) and m.target_id == victim.server_id,
            self.failure_bound(), "Init Takeover of the failed peer")
        peer.send(InitTakeoverAck(peer.server_id, init.sender_id, victim.server_id))
        yield peer.expect(
            lambda m: isinstance(m, TakeoverServer) and m.target_id == victim.server_id,
            target.takeover_expiry + target.slack, "Takeover Server")
        yield self.wait_home(peer, handle, element, peer.target_id, "the PE's new home")


class RacingTakeoverTests(ENRPCase):
    """
    Two registrars take the same failed peer over at once: RFC 5353
    section 3.5.1, the lower server id wins (as the suite reads the RFC,
    and as RSPLIB implements it).
    """

    @defer.inlineCallbacks
    def race(self, lower):
        """
        A victim peer that fails, and a racer peer whose id is below (or
        above) the target's; once the target sends its Init Takeover of
        the victim, the racer sends its own.

        @return: a L{Deferred} firing with C{(racer, victim, the target's
            Init Takeover)}.
        """
        victim = yield self.peer("victim")
        own = victim.target_id
        if lower and own <= 1:
            self.not_applicable("the target's server id %08x has no lower id" % own)
        if not lower and own >= 0xFFFFFFFF:
            self.not_applicable("the target's server id %08x has no higher id" % own)
        server_id = victim.server_id
        while server_id in self._peer_ids:
            server_id = (self.rng.randrange(1, own) if lower
                         else self.rng.randrange(own + 1, 0x100000000))
        racer = yield self.peer("racer", server_id)
        handle = self.handle()
        element = self.pe(victim)
        self.announce(victim, handle, element)

        @defer.inlineCallbacks
        def taken():
            # Over the racer's connection: the victim's update may come later.
            _, every = yield self.table(racer)
            return element.identifier in every.get(handle, {})

        try:
            yield self.poll(taken, self.target.response_timeout, what="the victim's PE")
        except NoAnswer:
            raise Prerequisite("the target did not take the victim's Handle Update")
        yield victim.stop()
        try:
            init = yield racer.expect(
                lambda m: isinstance(m, InitTakeover) and m.target_id == victim.server_id,
                self.failure_bound(), "Init Takeover of the failed peer")
        except NoAnswer as e:
            raise Prerequisite("the target did not start a takeover of the failed "
                               "peer: %s" % (e,))
        racer.inbox.unread(InitTakeoverAck)
        racer.send(InitTakeover(racer.server_id, racer.target_id, victim.server_id))
        return racer, victim, init

    @defer.inlineCallbacks
    def test_lowerIdWins(self):
        """
        RFC 5353 §3.5.1 MUST: a registrar taking a failed peer over that
        receives an Init Takeover of the same peer from a peer with a lower
        server id gives up its own takeover: it acknowledges the other's
        and sends no Takeover Server.
        """
        racer, victim, _ = yield self.race(lower=True)
        ack = yield racer.expect(
            lambda m: isinstance(m, InitTakeoverAck) and m.target_id == victim.server_id,
            self.target.response_timeout, "Init Takeover Ack (the target yields)")
        self.assertEqual(ack.sender_id, racer.target_id)
        # The racer, the only live peer besides the target, never
        # acknowledges the target's takeover: a target that went on would
        # end it at its expiry; one that yielded stays quiet.
        yield racer.inbox.quiet(
            lambda m: isinstance(m, TakeoverServer) and m.target_id == victim.server_id,
            self.target.takeover_expiry + self.target.slack)

    @defer.inlineCallbacks
    def test_higherIdLoses(self):
        """
        RFC 5353 §3.5.1 MUST: a registrar taking a failed peer over that
        receives an Init Takeover of the same peer from a peer with a
        higher server id keeps its own takeover: it does not acknowledge
        the other's.
        """
        racer, victim, init = yield self.race(lower=False)
        # The racer has the higher id: it gives up and acknowledges, so a
        # target that keeps its takeover may end it (Takeover Server);
        # whether it does is test_takeover's business.
        racer.send(InitTakeoverAck(racer.server_id, init.sender_id, victim.server_id))
        target = self.target
        try:
            done = yield racer.expect(
                lambda m: (isinstance(m, (InitTakeoverAck, TakeoverServer))
                           and m.target_id == victim.server_id),
                target.takeover_expiry + target.slack, "Takeover Server")
        except NoAnswer:
            done = None
        if isinstance(done, InitTakeoverAck):
            self.fail("the target acknowledged the takeover of a higher id")
        yield racer.inbox.quiet(
            lambda m: isinstance(m, InitTakeoverAck) and m.target_id == victim.server_id,
            0.5)


class AuditTests(ENRPCase):
    """
    Auditing by PE checksum and resynchronisation: RFC 5353 section 3.6.
    """

    @defer.inlineCallbacks
    def test_resynchronise(self):
        """
        RFC 5353 §3.6.2 MUST: a registrar that finds a peer's PE checksum
        (in its Presence) different from what it holds for that peer asks
        for the peer's PEs again: a Handle Table Request with the W flag.
        """
        peer = yield self.peer()
        handle = self.handle()
        element = self.pe(peer)
        self.announce(peer, handle, element)
        _, every = yield self.table(peer)
        if element.identifier not in every.get(handle, {}):
            raise Prerequisite("the target did not take the peer's Handle Update")
        # The right checksum first, and time for any request of the
        # target's own (a new peer's table) to arrive and be set aside.
        yield peer.request(peer.presence(reply=True),
                           lambda m: isinstance(m, Presence) and m.sender_id == peer.target_id,
                           "Presence")
        yield self.sleep(0.5)
        peer.inbox.unread(HandleTableRequest)
        right = peer.presence().checksum
        peer.send(peer.presence(check=right ^ 0x5A5A))
        request = yield peer.expect(HandleTableRequest, self.target.response_timeout,
                                    "Handle Table Request after a wrong checksum")
        self.assertTrue(request.own_children_only, "the resynchronisation lacks the W flag")


class ErrorTests(ENRPCase):
    """
    Unknown messages and parameters: RFC 5353 sections 2.10 and 3.7,
    RFC 5354 section 3.
    """

    @defer.inlineCallbacks
    def test_unknownMessage(self):
        """
        RFC 5353 §3.7 SHOULD: a registrar answers an ENRP message of a type
        it does not know with an ENRP Error carrying the Unrecognized
        Message cause.
        """
        peer = yield self.peer()
        peer.send_raw(struct.pack("!BBHII", 0x7F, 0, 12, peer.server_id, peer.target_id))
        error = yield peer.expect(ENRPError, self.target.response_timeout, "ENRP Error")
        self.assertIn(ErrorCause.UNRECOGNIZED_MESSAGE, cause_codes(error),
                      "causes: %s" % cause_text(cause_codes(error)))

    @defer.inlineCallbacks
    def parameter(self, action):
        peer = yield self.peer()
        peer.inbox.unread()
        request = ListRequest(peer.server_id, peer.target_id)
        peer.send_raw(with_parameter(request, unknown_parameter(action)))
        # A Handle Table Request: its answer comes after the List
        # Request's, if there is one.
        yield peer.request(HandleTableRequest(peer.server_id, peer.target_id),
                           HandleTableResponse, "Handle Table Response")
        messages = peer.inbox.unread()
        answers = [m for m in messages if isinstance(m, ListResponse)]
        reported = [c for m in messages if isinstance(m, ENRPError) for c in cause_codes(m)]
        seen = "; got: %s" % (", ".join(describe(m) for m in messages) or "nothing")
        return answers, reported, seen

    @defer.inlineCallbacks
    def test_unknownParameterStopReport(self):
        """
        RFC 5354 §3 MUST: an unknown parameter whose type starts with the
        bits 01 makes a registrar discard the ENRP message and report the
        parameter (an ENRP Error, Unrecognized Parameter).
        """
        answers, reported, seen = yield self.parameter(1)
        self.assertEqual(answers, [], "the message was processed" + seen)
        self.assertIn(ErrorCause.UNRECOGNIZED_PARAMETER, reported, "not reported" + seen)

    @defer.inlineCallbacks
    def test_unknownParameterSkip(self):
        """
        RFC 5354 §3 MUST: an unknown parameter whose type starts with the
        bits 10 is skipped: the ENRP message is processed, nothing reported.
        """
        answers, reported, seen = yield self.parameter(2)
        self.assertEqual(len(answers), 1, "the message was not processed" + seen)
        self.assertEqual(reported, [], "reported" + seen)
