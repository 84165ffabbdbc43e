"""
The conformance suite can fail (issue #17): deliberately broken versions
of our registrar and PE, each breaking one requirement, fail the test of
that requirement (a mutation check).  ``doc/conformance.rst`` lists them.

Each mutant is our program with one monkeypatch, run as another process:

    python -m tests.test_conformance_mutants MUTANT twistd -n enrp ...
    python -m tests.test_conformance_mutants MUTANT rserpool pe ...
    python -m tests.test_conformance_mutants MUTANT rserpool terminal ...

and the suite runs only the test that must catch it (C{--only}); against
the unbroken programs the same tests pass (tests/test_conformance_registrar.py,
tests/test_conformance_pe.py).
"""
import sys

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from rserpool.conformance.report import parse_outcomes


def _ignore_w_flag():
    # ENRP: a Handle Table Request with the W flag answered as one without.
    from rserpool.enrp import machine as server

    original = server.ENRPServer._handle_table_request

    def mutant(self, conn, message, now):
        return original(self, conn, attrs.evolve(message, own_children_only=False), now)

    server.ENRPServer._handle_table_request = mutant


def _other_pool():
    # ASAP: a Handle Resolution answered with the PEs of another pool.
    from rserpool.handlespace import store as handlespace

    original = handlespace.Handlespace.select

    def mutant(self, handle, k, max_increment=None):
        others = [p.handle for p in self.pools() if p.handle != handle]
        if self.pool(handle) is not None and others:
            handle = others[-1]
        return original(self, handle, k, max_increment)

    handlespace.Handlespace.select = mutant


def _keep_deaf_pes():
    # ASAP: a PE that does not acknowledge its keep-alive stays registered.
    from rserpool.asap import registrar
    from rserpool.handlespace import TimerCode

    def mutant(self, pe):
        self.handlespace.set_timer(pe, TimerCode.KEEP_ALIVE_TRANSMISSION,
                                   self._now + self.config.keep_alive_interval)

    registrar.ASAPRegistrar._keep_alive_timeout = mutant


def _first_report_removes():
    # ASAP: the first Endpoint Unreachable removes the PE (no counting).
    from rserpool.asap import registrar

    def mutant(self, conn, message, now):
        pe = self.handlespace.get(message.pool_handle, message.identifier)
        if pe is not None:
            self.handlespace.remove(pe)
            self._removed(pe, "unreachable")

    registrar.ASAPRegistrar._endpoint_unreachable = mutant


def _higher_id_wins():
    # ENRP: between competing takeovers the higher server id wins (the
    # comparison of _init_takeover turned round, in a recompiled copy).
    import inspect
    import textwrap

    from rserpool.enrp import machine as server

    source = textwrap.dedent(inspect.getsource(server.ENRPServer._init_takeover))
    rule = "if sender < self.server_id:"
    if rule not in source:
        raise SystemExit("higher-id-wins: ENRPServer._init_takeover no longer has %r" % rule)
    scope = dict(vars(server))
    exec(source.replace(rule, "if sender > self.server_id:"), scope)
    server.ENRPServer._init_takeover = scope["_init_takeover"]


def _deaf_pe():
    # A pool element that never answers Endpoint Keep Alive.
    from rserpool.asap import pool_element

    pool_element.PoolElementMachine._keep_alive = lambda self, connection, message, now: None


def _wrong_handle():
    # A pool user that resolves another pool handle than its own.
    from rserpool.asap import pool_user
    from rserpool.wire import HandleResolution

    pool_user.HandleResolution = lambda handle, *a, **k: HandleResolution(
        bytes(handle) + b"-x", *a, **k)


def _silent_pu():
    # A pool user that never sends Endpoint Unreachable.
    from rserpool.asap import pool_user

    pool_user.PoolUserMachine.report_unreachable = lambda self, handle, pe_id, now: False


def _gives_up():
    # A pool user that reports an unreachable PE and then gives up instead
    # of resolving again.
    from twisted.internet import defer

    from rserpool import pu

    def mutant(self, pool_handle, failed):
        pe_id = failed.identifier if isinstance(failed, pu.PoolElementInfo) else failed
        self.report_unreachable(pool_handle, pe_id)
        return defer.fail(pu.NoPoolElement(pool_handle, "the mutant gives up"))

    pu.PoolUser.get_next_server = mutant


#: name: (the monkeypatch, the program it breaks, the test that must fail).
MUTANTS = {
    "ignore-w-flag": (_ignore_w_flag, "twistd",
                      "test_enrp.HandleTableTests.test_ownChildrenOnly"),
    "other-pool": (_other_pool, "twistd", "test_asap.HandleResolutionTests.test_otherPool"),
    "keep-deaf-pes": (_keep_deaf_pes, "twistd", "test_asap.KeepAliveTests.test_unanswered"),
    "first-report-removes": (_first_report_removes, "twistd",
                             "test_asap.UnreachableTests.test_belowThreshold"),
    "higher-id-wins": (_higher_id_wins, "twistd",
                       ("test_enrp.RacingTakeoverTests.test_lowerIdWins",
                        "test_enrp.RacingTakeoverTests.test_higherIdLoses")),
    "deaf-pe": (_deaf_pe, "rserpool", "test_pe.KeepAliveTests.test_ack"),
    "wrong-handle": (_wrong_handle, "terminal", "test_pu.ResolutionTests.test_resolves"),
    "silent-pu": (_silent_pu, "terminal", "test_pu.UnreachableTests.test_reports"),
    "gives-up": (_gives_up, "terminal", "test_pu.UnreachableTests.test_resolvesAgain"),
}

#: What each mutant's test must end in: a MUST test fails, a SHOULD test
#: is not met.
CAUGHT = {"silent-pu": "not-met", "gives-up": "not-met"}


def main(argv):
    """
    C{MUTANT PROGRAM ARGS...}: apply the mutant, then run C{twistd} or
    C{rserpool} with C{ARGS}.
    """
    name, program, args = argv[0], argv[1], argv[2:]
    MUTANTS[name][0]()
    if program == "twistd":
        from twisted.scripts.twistd import run

        sys.argv = ["twistd"] + args
        run()
        return 0
    from rserpool.cli import main as rserpool

    return rserpool(args)


class MutantTests(unittest.TestCase):
    """
    Each mutant fails the test of the requirement it breaks.
    """

    timeout = 120

    @defer.inlineCallbacks
    def caught(self, name):
        from tests.test_conformance_registrar import ENRP_TIMERS, run_suite, start_registrar

        _, program, tests = MUTANTS[name]
        tests = (tests,) if isinstance(tests, str) else tests
        launcher = ["-m", "tests.test_conformance_mutants", name]
        if program == "twistd":
            registrar, asap, enrp = yield start_registrar(
                self, "--enrp-peer-networks", "127.0.0.0/8",
                launcher=launcher + ["twistd"])
            args = ["--asap", "tcp:host=127.0.0.1:port=%d" % asap,
                    "--enrp", "tcp:host=127.0.0.1:port=%d" % enrp,
                    "--keep-alive", "2", "--keep-alive-timeout", "1"] + ENRP_TIMERS
        elif program == "terminal":
            pu = [sys.executable] + launcher + [
                "rserpool", "terminal", "--registrar", "{registrar}", "--mode", "basic",
                "{handle}"]
            args = ["--pu", " ".join(pu), "--set", "PE_WAIT=10"]
        else:
            pe = [sys.executable] + launcher + [
                "rserpool", "pe", "--handle", "{handle}", "--registrar", "{registrar}",
                "--registrar", "{registrar2}", "--reregistration-interval", "1", "echo"]
            args = ["--pe", " ".join(pe)]
        only = [a for test in tests for a in ("--only", test)]
        code, junit, outcomes, report, suite = yield run_suite(self, *(args + only))
        got = parse_outcomes(outcomes)
        self.assertEqual(got, {test: CAUGHT.get(name, "fail") for test in tests},
                         "the mutant %s was not caught:\n%s\n%s" % (
            name, report, suite.describe()))
        self.assertEqual(code, 1 if CAUGHT.get(name, "fail") == "fail" else 0)

    def test_ignoreWFlag(self):
        """
        A registrar that ignores the W flag fails the W flag's test.
        """
        return self.caught("ignore-w-flag")

    def test_otherPool(self):
        """
        A registrar that answers a Handle Resolution from another pool fails.
        """
        return self.caught("other-pool")

    def test_keepDeafPEs(self):
        """
        A registrar that keeps PEs that do not answer keep-alives fails.
        """
        return self.caught("keep-deaf-pes")

    def test_firstReportRemoves(self):
        """
        A registrar that removes a PE at the first Endpoint Unreachable fails.
        """
        return self.caught("first-report-removes")

    def test_higherIdWins(self):
        """
        A registrar that lets the higher id win competing takeovers fails
        both racing takeover tests.
        """
        return self.caught("higher-id-wins")

    def test_wrongHandle(self):
        """
        A PU that resolves another handle than its own fails.
        """
        return self.caught("wrong-handle")

    def test_silentPU(self):
        """
        A PU that does not report an unreachable PE does not meet the
        requirement.
        """
        return self.caught("silent-pu")

    def test_givesUp(self):
        """
        A PU that does not resolve again after its only PE failed does not
        meet the requirement.
        """
        return self.caught("gives-up")

    def test_deafPE(self):
        """
        A PE that does not answer Endpoint Keep Alive fails.
        """
        return self.caught("deaf-pe")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
