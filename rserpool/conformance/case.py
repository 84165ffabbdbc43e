"""
The base class of the suite's tests: the target, connections cleaned up
after each test, the requirement each test names, and what happens when a
requirement is not met.

A test of a MUST (or MUST NOT) requirement fails when the implementation
does not meet it.  A test of a SHOULD, SHOULD NOT or MAY requirement is
reported as *not met* instead: trial shows it as skipped, with a reason
that starts with L{NOT_MET} (``not met (SHOULD): ...``), and the report
(L{rserpool.conformance.report}) lists it as such.  A test whose target is
not configured is skipped with a reason that starts with
L{NOT_CONFIGURED}.  Two things fail a test whatever its level: a message
from the target that does not decode (RFC 5354 wire format), and a step a
test relies on that did not work (L{Prerequisite}, an error).
"""
import functools
import os
import random

from twisted.internet import defer, reactor
from twisted.trial import unittest

from rserpool.conformance.client import NoAnswer, connect, describe, sleep
from rserpool.conformance.requirements import parse
from rserpool.conformance.target import Target, TargetError
from rserpool.wire import (
    ASAP,
    DATA_ONLY,
    ITEMS_MAX,
    HandleResolution,
    HandleResolutionResponse,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    TCPTransport,
)
from rserpool.codes import PolicyType, cause_name

__all__ = [
    "ConformanceCase",
    "Prerequisite",
    "WireViolation",
    "NOT_MET",
    "NOT_CONFIGURED",
    "NOT_APPLICABLE",
]

#: How a skip reason starts when a SHOULD/MAY requirement is not met.
NOT_MET = "not met"
#: How a skip reason starts when the target of a test is not given.
NOT_CONFIGURED = "not configured"
#: How a skip reason starts when a requirement cannot apply to this target.
NOT_APPLICABLE = "not applicable"


class Prerequisite(Exception):
    """
    A step a test relies on, not the requirement it checks, did not work
    (a registration refused in a test of handle resolution): an error, not
    a verdict on the requirement.
    """


class WireViolation(unittest.FailTest):
    """
    The target sent something that is no valid ASAP or ENRP message.
    """


def _wrap(method, requirement):
    @functools.wraps(method)
    def run(self):
        d = defer.maybeDeferred(method, self)
        d.addCallback(lambda result: self._check_wire())
        if not requirement.mandatory:
            d.addErrback(self._not_met, requirement)
        return d

    run.requirement = requirement
    return run


class ConformanceCase(unittest.TestCase):
    """
    A conformance test: the target comes from the environment
    (L{rserpool.conformance.target}); C{needs} names the endpoint the class
    tests (C{"asap"}, C{"enrp"} or C{"pe"}) and the test is skipped when it
    is not given.

    Each C{test_*} method's docstring names its requirement
    (L{rserpool.conformance.requirements}); defining a test without one
    raises at import.
    """

    needs = "asap"
    timeout = 120

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name.startswith("test") and callable(value):
                requirement = parse(value.__doc__, "%s.%s" % (cls.__name__, name))
                setattr(cls, name, _wrap(value, requirement))

    def setUp(self):
        self.reactor = reactor
        try:
            self.target = Target.from_environ(os.environ)
        except TargetError as e:
            raise unittest.SkipTest("%s: %s" % (NOT_CONFIGURED, e))
        if getattr(self.target, self.needs) is None:
            name = {"asap": "RSERPOOL_TARGET_ASAP", "enrp": "RSERPOOL_TARGET_ENRP",
                    "pe": "RSERPOOL_TARGET_PE", "pu": "RSERPOOL_TARGET_PU"}[self.needs]
            raise unittest.SkipTest("%s: set %s" % (NOT_CONFIGURED, name))
        self.rng = random.Random()
        self.connections = []
        self._ids = set()

    # -- outcome ------------------------------------------------------------

    def _check_wire(self):
        for conn in self.connections:
            if conn.bad:
                raise WireViolation("%s: the target sent %d message(s) that do not decode: %s" % (
                    conn.name, len(conn.bad), conn.bad[0]))

    def _not_met(self, failure, requirement):
        if failure.check(WireViolation) or not failure.check(AssertionError):
            return failure
        raise unittest.SkipTest("%s (%s): %s" % (
            NOT_MET, requirement.level, failure.getErrorMessage()))

    def not_applicable(self, why):
        """
        End the test: the requirement cannot apply to this target.
        """
        raise unittest.SkipTest("%s: %s" % (NOT_APPLICABLE, why))

    # -- time -----------------------------------------------------------------

    def sleep(self, seconds):
        """
        Wait C{seconds} (a reactor timer; never C{time.sleep}).
        """
        return sleep(self.reactor, seconds)

    def now(self):
        return self.reactor.seconds()

    @defer.inlineCallbacks
    def poll(self, check, timeout, interval=0.1, what="the condition"):
        """
        Call C{check()} (which may return a L{Deferred}) every C{interval}
        seconds until it returns something true, at most C{timeout}
        seconds.

        @return: a L{Deferred} firing with C{(value, seconds waited)}, or
            failing with L{NoAnswer}.
        """
        start = self.now()
        deadline = start + timeout
        while True:
            value = yield check()
            if value:
                return (value, self.now() - start)
            if self.now() >= deadline:
                raise NoAnswer("%s did not happen within %.1f s" % (what, timeout))
            yield self.sleep(min(interval, max(0.0, deadline - self.now())))

    # -- connections --------------------------------------------------------

    @defer.inlineCallbacks
    def connect(self, name="client", protocol=ASAP, bind=None, endpoint=None):
        """
        A new connection to the target's ASAP (or ENRP) endpoint, closed
        after the test.

        @param bind: the local address to send from (default the target's
            C{RSERPOOL_TARGET_BIND}).
        """
        if endpoint is None:
            endpoint = self.target.asap if protocol == ASAP else self.target.enrp
            endpoint = self.target.client(endpoint, peer=protocol != ASAP)
        if bind is None:
            bind = self.target.bind
        try:
            conn = yield connect(self.reactor, endpoint, protocol, bind=bind,
                                 timeout=self.target.response_timeout + 2, name=name)
        except Exception as e:
            raise Prerequisite("cannot connect to %s%s: %s" % (
                endpoint, " from %s" % bind if bind else "", e))
        self.connections.append(conn)
        self.addCleanup(conn.close)
        return conn

    # -- ASAP building blocks ---------------------------------------------

    def handle(self, label=""):
        """
        A pool handle of this test alone, of at most 28 bytes (RSPLIB and
        ours refuse handles longer than 32 bytes).
        """
        name = self._testMethodName.replace("test_", "")[:12]
        return ("cf-%s%s-%08x" % (name, label[:3], self.rng.getrandbits(32))).encode()

    def pe_id(self):
        """
        A fresh PE identifier (random, non-zero, not used before in this
        test).
        """
        while True:
            identifier = self.rng.getrandbits(32)
            if identifier and identifier not in self._ids:
                self._ids.add(identifier)
                return identifier

    def transport(self, conn, port=None, use=DATA_ONLY, kind=None, addresses=None):
        """
        A user transport of the PE behind C{conn}: its own address(es), of
        the connection's mapping unless C{kind} (C{"tcp"}, C{"sctp"}) says.
        """
        kind = kind or conn.mapping
        if port is None:
            port = self.rng.randrange(20000, 60000)
        if addresses is None:
            addresses = conn.local_addresses if kind == "sctp" else (conn.local_address,)
        if kind == "sctp":
            return SCTPTransport(port, tuple(addresses), use)
        return TCPTransport(port, tuple(addresses)[:1], use)

    def element(self, conn, identifier=None, policy=None, transport=None, life=60000):
        """
        A Pool Element parameter for a PE registering over C{conn}.
        """
        return PoolElement(
            identifier if identifier is not None else self.pe_id(),
            0,
            life,
            transport if transport is not None else self.transport(conn),
            policy if policy is not None else Policy.make(PolicyType.ROUND_ROBIN),
        )

    def registration(self, conn, handle, element):
        """
        Send a Registration over C{conn}; a L{Deferred} fires with the
        Registration Response for it (or fails with L{NoAnswer}).  The PE
        answers Endpoint Keep Alives from then on.
        """
        conn.ack(handle, element.identifier)
        return conn.request(
            Registration(handle, element),
            lambda m: isinstance(m, RegistrationResponse) and m.identifier == element.identifier,
            self.target.response_timeout, "Registration Response")

    @defer.inlineCallbacks
    def register(self, conn, handle, element=None, **kwargs):
        """
        Register a PE, as a step of a test: a refusal is a L{Prerequisite}
        error.

        @return: a L{Deferred} firing with the Pool Element registered.
        """
        if element is None:
            element = self.element(conn, **kwargs)
        try:
            response = yield self.registration(conn, handle, element)
        except NoAnswer as e:
            raise Prerequisite("registration of a valid PE: %s" % (e,))
        if response.reject:
            raise Prerequisite("the target refused a valid registration: %s" % describe(response))
        return element

    def resolve(self, pu, handle, items=ITEMS_MAX):
        """
        Send a Handle Resolution; a L{Deferred} fires with the response.

        @param items: the Handle Resolution Option's count, or C{None} to
            send none.
        """
        return pu.request(
            HandleResolution(handle, items),
            lambda m: isinstance(m, HandleResolutionResponse) and m.pool_handle == handle,
            self.target.response_timeout, "Handle Resolution Response")

    @defer.inlineCallbacks
    def members(self, pu, handle):
        """
        The PE identifiers a Handle Resolution (for as many PEs as
        possible) returns; empty for an unknown pool.
        """
        response = yield self.resolve(pu, handle)
        return {pe.identifier for pe in response.pool_elements}

    def gone(self, pu, handle, identifier, timeout, what="the PE's removal"):
        """
        Poll until C{identifier} no longer resolves in C{handle}.

        @return: a L{Deferred} firing with the seconds it took.
        """
        def check():
            return self.members(pu, handle).addCallback(lambda ids: identifier not in ids)

        return self.poll(check, timeout, what=what).addCallback(lambda r: r[1])


def cause_codes(message):
    """
    The cause codes of a message's Operation Error (empty without one).
    """
    error = getattr(message, "error", None)
    return [c.code for c in error.causes] if error is not None else []


def cause_text(codes):
    """
    Cause codes as names, for failure texts.
    """
    return ", ".join(cause_name(code) for code in codes) or "none"
