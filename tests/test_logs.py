"""
Logs a machine can read (issue #16): the events about pool elements carry
the fields pool, pe and cause, and twistd --logger rserpool.logs.json_stdout
writes them as JSON lines.
"""
import json
import sys

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from rserpool.codes import PolicyType
from rserpool.wire import Policy, RegistrationResponse
from tests.helpers import TWISTD, start
from tests.helpers import eventually
from tests.test_registrar_integration import RawClient
from tests.test_web import registration


class JSONLogTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_twistd_json(self):
        registrar = start(self, [
            sys.executable, "-c", TWISTD, "-n", "--pidfile=",
            "--logger", "rserpool.logs.json_stdout", "enrp",
            "--asap", "tcp:0:interface=127.0.0.1", "--enrp", "none"], name="twistd enrp")

        def events():
            out = []
            for line in registrar.out.decode("utf-8").splitlines():
                if line.strip():
                    out.append(json.loads(line))
            return out

        yield registrar.wait_for(b"ready")
        # The listener's event carries where it listens, as a field.
        [where] = [e["where"] for e in events() if e.get("what") == "ASAP" and "where" in e]
        host, port = where.rsplit(":", 1)
        self.assertEqual(host, "127.0.0.1")
        client = RawClient("asap", auto_ack=True)
        yield connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), client)
        answer = yield client.request(registration(b"web", 0x1234), RegistrationResponse)
        self.assertFalse(answer.reject)
        answer = yield client.request(
            registration(b"web", 0x1235, policy=Policy.make(PolicyType.LEAST_USED, load=0)),
            RegistrationResponse)
        self.assertTrue(answer.reject)
        yield client.close()
        yield eventually(lambda: any(e.get("cause") == "connection lost" for e in events()),
                         "the log line of the lost connection's PE")
        found = {(e.get("pool"), e.get("pe"), e.get("cause")) for e in events() if "pe" in e}
        self.assertIn(("web", "00001234", None), found)
        self.assertIn(("web", "00001235", "INCONSISTENT_POOLING_POLICY"), found)
        self.assertIn(("web", "00001234", "connection lost"), found)
        every = events()
        self.assertTrue(all("log_time" in e and "log_namespace" in e for e in every))
        removed = [e for e in every if e.get("cause") == "connection lost"][0]
        self.assertEqual(removed["log_namespace"], "rserpool.asap.registrar.ASAPRegistrar")
        self.assertEqual(removed["log_level"]["name"], "info")


class TakeoverTests(unittest.TestCase):
    """
    A takeover (RFC 5353 section 3.5) in the memory cluster: its log events
    name the registrar and the cause, and the survivors count it.
    """

    def test_takeover_fields_and_counts(self):
        from tests.test_enrp import cluster

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        net = cluster(n=3, pes=9, hunt=False)
        net.registrars[3].crash()
        net.run(25.0)
        done = [e for e in events if e.get("cause") == "takeover done"]
        self.assertEqual(len(done), 1)
        self.assertEqual(done[0]["registrar"], "00000003")
        outcomes = [dict(r.enrp.takeovers) for r in net.live()]
        self.assertEqual(sorted(o.get("done", 0) for o in outcomes), [0, 1])
        self.assertEqual(sorted(o.get("by peer", 0) for o in outcomes), [0, 1])
        self.assertTrue(any(e.get("cause") == "peer unreachable" for e in events))
