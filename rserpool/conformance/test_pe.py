"""
A pool element over the wire (RFC 5352 sections 3.1, 3.2, 3.4 and 3.6):
the suite is its registrars (L{rserpool.conformance.harness}) and checks
that the PE registers, re-registers before its registration life runs
out, answers Endpoint Keep Alives (the H flag too), deregisters when
stopped, and fails over to another registrar when its own fails.

Target: C{RSERPOOL_TARGET_PE}, the command that starts the PE, e.g.::

    RSERPOOL_TARGET_PE='rserpool pe --handle {handle} --registrar {registrar}
        --registrar {registrar2} --reregistration-interval 1 echo'

C{{registrar}} and C{{registrar2}} are client endpoint strings
(C{tcp:host=127.0.0.1:port=P}), C{{registrar_hostport}} and
C{{registrar2_hostport}} the same as C{ADDRESS:PORT}; C{{handle}} is the
pool handle.  Each test starts the PE anew and stops it with SIGTERM.
"""
from twisted.internet import defer

from rserpool.conformance.case import ConformanceCase, Prerequisite
from rserpool.conformance.client import NoAnswer
from rserpool.conformance.harness import HarnessRegistrar, PEProcess, fill
from rserpool.wire import (
    Deregistration,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    Registration,
    SCTPTransport,
)


class PECase(ConformanceCase):
    needs = "pe"

    @defer.inlineCallbacks
    def start_pe(self, registrars=2):
        """
        Harness registrars and the PE under test, told of them.

        @return: a L{Deferred} firing with C{(process, [registrars],
            handle)}.
        """
        handle = self.handle()
        started = []
        for i in range(registrars):
            r = HarnessRegistrar(self.reactor, self.rng.getrandbits(32) or 1,
                                 self.target.pe_mapping, self.target.bind or "127.0.0.1",
                                 "registrar %d" % (i + 1))
            try:
                yield r.start()
            except Exception as e:
                raise Prerequisite("the harness cannot listen: %s" % (e,))
            self.addCleanup(r.stop)
            started.append(r)
        try:
            argv = fill(self.target.pe, handle, started)
        except (KeyError, IndexError, ValueError) as e:
            raise Prerequisite("RSERPOOL_TARGET_PE: %s" % (e,))
        process = PEProcess(self.reactor, argv).start()
        self.addCleanup(process.stop)
        self.process = process
        return process, started, handle

    @defer.inlineCallbacks
    def registration(self, registrars, timeout=None, after=0.0):
        """
        The next Registration at any of C{registrars} (received after the
        time C{after}).

        @return: a L{Deferred} firing with C{(registrar, time, connection,
            Registration)}.
        """
        deadline = self.now() + (timeout if timeout is not None else self.target.pe_wait)

        def found():
            for r in registrars:
                for when, conn, message in r.registrations:
                    if when > after:
                        return (r, when, conn, message)
            return None

        while True:
            hit = found()
            if hit is not None:
                return hit
            if self.process.done:
                raise NoAnswer("the PE ended without registering%s" % self.process.describe())
            if self.now() >= deadline:
                raise NoAnswer("no Registration within %.1f s%s" % (
                    timeout if timeout is not None else self.target.pe_wait,
                    self.process.describe()))
            yield self.sleep(0.05)

    @defer.inlineCallbacks
    def registered(self, registrars=2):
        """
        The PE under test, registered: a step of a test.
        """
        process, started, handle = yield self.start_pe(registrars)
        try:
            hit = yield self.registration(started)
        except NoAnswer as e:
            raise Prerequisite("the PE did not register: %s" % (e,))
        return process, started, handle, hit


class RegistrationTests(PECase):
    """
    RFC 5352 sections 3.1 and 3.2.
    """

    @defer.inlineCallbacks
    def test_registers(self):
        """
        RFC 5352 §3.1 MUST: a PE registers with a registrar: a Registration
        of its pool handle and a Pool Element with a non-zero identifier, a
        user transport of at least one address, and a policy.
        """
        process, registrars, handle = yield self.start_pe()
        _, _, _, message = yield self.registration(registrars)
        self.assertIsInstance(message, Registration)
        self.assertEqual(message.pool_handle, handle)
        pe = message.pool_element
        self.assertNotEqual(pe.identifier, 0, "PE identifier 0")
        self.assertTrue(pe.user_transport.addresses, "a user transport without an address")
        self.assertNotEqual(pe.registration_life, 0, "registration life 0")

    @defer.inlineCallbacks
    def test_reregisters(self):
        """
        RFC 5352 §3.1 MUST: a PE registers again, with the same identifier,
        before the registration life it asked for runs out.
        """
        _, registrars, _, (registrar, when, _, first) = yield self.registered()
        life = first.pool_element.registration_life
        if life < 0:
            self.not_applicable("the PE registers for ever (registration life %d)" % life)
        if life / 1000.0 > self.target.pe_wait:
            self.not_applicable("a registration life of %.1f s is longer than "
                                "RSERPOOL_TARGET_PE_WAIT" % (life / 1000.0))
        _, again, _, second = yield self.registration(registrars, life / 1000.0, after=when)
        self.assertEqual(second.pool_element.identifier, first.pool_element.identifier,
                         "a new identifier")

    @defer.inlineCallbacks
    def test_deregisters(self):
        """
        RFC 5352 §3.2 SHOULD: a PE that is stopped (SIGTERM) deregisters
        first: a Deregistration of its pool handle and identifier.
        """
        process, registrars, handle, (registrar, _, conn, message) = yield self.registered()
        # The PE has read its Registration Response once it answers a Keep
        # Alive sent after it (a PE stopped before that may have nothing
        # to deregister yet).
        try:
            yield conn.request(
                EndpointKeepAlive(registrar.server_id, handle, message.pool_element.identifier),
                EndpointKeepAliveAck, self.target.response_timeout, "Endpoint Keep Alive Ack")
        except NoAnswer:
            pass
        process.signal("TERM")
        got = yield registrar.inbox.expect(Deregistration, self.target.response_timeout + 2,
                                           "Deregistration")
        self.assertEqual(got.pool_handle, handle)
        self.assertEqual(got.identifier, message.pool_element.identifier)


class KeepAliveTests(PECase):
    """
    RFC 5352 section 3.4: Endpoint Keep Alive.
    """

    @defer.inlineCallbacks
    def test_ack(self):
        """
        RFC 5352 §3.4 MUST: a PE answers its home registrar's Endpoint Keep
        Alive with an Endpoint Keep Alive Ack naming its pool handle and
        identifier.
        """
        _, _, handle, (registrar, _, conn, message) = yield self.registered()
        identifier = message.pool_element.identifier
        ack = yield conn.request(EndpointKeepAlive(registrar.server_id, handle, identifier),
                                 EndpointKeepAliveAck, self.target.response_timeout,
                                 "Endpoint Keep Alive Ack")
        self.assertEqual(ack.pool_handle, handle)
        self.assertEqual(ack.identifier, identifier)

    @defer.inlineCallbacks
    def test_homeFlag(self):
        """
        RFC 5352 §3.4 MUST: a PE answers an Endpoint Keep Alive with the H
        flag (a registrar that took it over says it is its new home).
        """
        _, _, handle, (registrar, _, conn, message) = yield self.registered()
        identifier = message.pool_element.identifier
        new_home = registrar.server_id ^ 0x5A5A5A5A or 1
        ack = yield conn.request(
            EndpointKeepAlive(new_home, handle, identifier, home=True),
            EndpointKeepAliveAck, self.target.response_timeout, "Endpoint Keep Alive Ack")
        self.assertEqual(ack.identifier, identifier)

    @defer.inlineCallbacks
    def test_newHome(self):
        """
        RFC 5352 §3.4 SHOULD: after an Endpoint Keep Alive with the H flag,
        the PE takes its sender for its home registrar: its next
        Registration names it.
        """
        _, registrars, handle, (registrar, when, conn, message) = yield self.registered()
        identifier = message.pool_element.identifier
        new_home = registrar.server_id ^ 0x5A5A5A5A or 1
        yield conn.request(EndpointKeepAlive(new_home, handle, identifier, home=True),
                           EndpointKeepAliveAck, self.target.response_timeout,
                           "Endpoint Keep Alive Ack")
        asked = self.now()
        life = message.pool_element.registration_life
        wait = life / 1000.0 if 0 < life / 1000.0 <= self.target.pe_wait else self.target.pe_wait
        _, _, _, again = yield self.registration(registrars, wait, after=asked)
        self.assertEqual(again.pool_element.home_registrar, new_home,
                         "the next registration names %08x, not the new home %08x"
                         % (again.pool_element.home_registrar, new_home))


class TakeoverTests(PECase):
    """
    A registrar that took the PE over (RFC 5353 section 3.5.2) reaches it
    at its ASAP transport and sends an Endpoint Keep Alive with the H flag
    (RFC 5352 section 3.4): only over SCTP, where a PE's ASAP socket
    accepts associations.
    """

    @defer.inlineCallbacks
    def adopted(self):
        """
        The PE registered at one harness registrar; the other reaches its
        ASAP transport and sends a Keep Alive with the H flag there.

        @return: a L{Deferred} firing with C{(registrars, the new home,
            the time the Keep Alive went, the PE's first Registration, the
            answer or C{None})}.
        """
        _, registrars, handle, (registrar, _, conn, message) = yield self.registered()
        pe = message.pool_element
        # A PE may name its ASAP transport in its registration; else a
        # registrar knows it, as RSPLIB's and ours do, as the far end of the
        # association the PE registered over (its one-to-many ASAP socket).
        asap = pe.asap_transport or getattr(conn.stream, "peer_transport", None)
        if not isinstance(asap, SCTPTransport) or not asap.addresses or not asap.port:
            self.not_applicable(
                "the PE names no SCTP ASAP transport that a registrar taking it over "
                "could reach (over TCP the H flag is tested on the PE's own connection)")
        other = [r for r in registrars if r is not registrar][0]
        description = "sctp:host=%s:port=%d:ppid=11" % (
            ",".join(str(a) for a in asap.addresses), asap.port)
        try:
            wire = yield other.reach(description, self.target.response_timeout + 2)
        except Exception as e:
            self.fail("no association to the PE's ASAP transport %s: %s" % (description, e))
        sent = self.now()
        try:
            answer = yield wire.request(
                EndpointKeepAlive(other.server_id, handle, pe.identifier, home=True),
                EndpointKeepAliveAck, self.target.response_timeout, "Endpoint Keep Alive Ack")
        except NoAnswer:
            answer = None
        return registrars, other, sent, message, answer

    @defer.inlineCallbacks
    def test_ackToNewHome(self):
        """
        RFC 5352 §3.4 MUST: a PE that gets an Endpoint Keep Alive with the H
        flag over an association a registrar opened to its ASAP transport
        (a registrar that took it over) answers there, with an Endpoint
        Keep Alive Ack naming its pool handle and identifier.
        """
        _, other, _, message, ack = yield self.adopted()
        if ack is None:
            self.fail("no Endpoint Keep Alive Ack over the new registrar's association%s"
                      % self.process.describe())
        self.assertEqual(ack.pool_handle, message.pool_handle)
        self.assertEqual(ack.identifier, message.pool_element.identifier)

    @defer.inlineCallbacks
    def test_registersWithNewHome(self):
        """
        RFC 5352 §3.4 SHOULD: a PE adopted by a registrar that took it over
        (Endpoint Keep Alive with the H flag over that registrar's
        association) makes it its home: its next Registration goes to it.
        """
        registrars, other, sent, message, ack = yield self.adopted()
        if ack is None:
            raise Prerequisite("the PE did not acknowledge the new registrar's Keep Alive")
        life = message.pool_element.registration_life
        wait = life / 1000.0 if 0 < life / 1000.0 <= self.target.pe_wait else self.target.pe_wait
        _, _, _, again = yield self.registration([other], wait, after=sent)
        self.assertEqual(again.pool_element.identifier, message.pool_element.identifier)


class FailoverTests(PECase):
    """
    RFC 5352 section 3.6: the PE hunts for another registrar.
    """

    @defer.inlineCallbacks
    def test_failover(self):
        """
        RFC 5352 §3.6 MUST: a PE whose registrar fails finds another one
        and registers there.
        """
        _, registrars, handle, (registrar, when, _, message) = yield self.registered()
        other = [r for r in registrars if r is not registrar][0]
        yield registrar.stop()
        failed = self.now()
        _, _, _, again = yield self.registration([other], after=failed)
        self.assertEqual(again.pool_handle, handle)
