"""
The ``rserpool`` command: operator tools for RSerPool.

``rserpool decode``   pretty-prints ASAP/ENRP messages from hex or a capture.
``rserpool examples`` prints one example of every message type, in hex.
``rserpool resolve``  lists the pool elements of a pool.
``rserpool pe``       runs an example service as a pool element.
``rserpool terminal`` talks to a pool from stdin, failing over as needed.
``rserpool pingpong`` RSPLIB's PingPong pool user (Enhanced Mode, cookies).
``rserpool dump``     prints a registrar's handlespace, fetched over ENRP.
``rserpool conformance`` tests a registrar or a PE over the wire
(:mod:`rserpool.conformance`).
"""
import argparse
import random
import sys

from rserpool import __version__
from rserpool.codes import DEFAULT_REGISTRAR, DEFAULT_REGISTRAR_ENRP


def _hex_lines(stream):
    """
    Yield (line number, protocol override or None, bytes or error text) for
    each message line of C{stream}.  A comment line ``# asap ...`` or
    ``# enrp ...`` (what ``rserpool examples`` prints) sets the protocol of
    the lines that follow.
    """
    protocol = None
    for number, line in enumerate(stream, 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            words = text[1:].split()
            if words and words[0].lower() in ("asap", "enrp"):
                protocol = words[0].lower()
            continue
        cleaned = "".join(text.split()).replace(":", "")
        if cleaned.lower().startswith("0x"):
            cleaned = cleaned[2:]
        try:
            yield number, protocol, bytes.fromhex(cleaned)
        except ValueError:
            yield number, protocol, "line %d is not hex" % number


class _Decoder:
    """
    Decodes, prints and optionally verifies messages; counts problems.
    """

    def __init__(self, out, verbose, verify):
        self.out = out
        self.verbose = verbose
        self.verify = verify
        self.messages = 0
        self.failed = 0
        self.differ = 0

    def handle(self, label, protocol, data):
        from rserpool.tools import legacy
        from rserpool.tools.pretty import summary, tree
        from rserpool.wire import ProtocolError, decode, encode

        self.messages += 1
        try:
            message = decode(data, protocol)
        except ProtocolError as e:
            self.failed += 1
            reason = legacy.explain(data, protocol) or str(e)
            self.out.write("%s %s: undecodable (%d bytes): %s\n" % (label, protocol.upper(), len(data), reason))
            if self.verbose:
                self.out.write("  bytes: %s\n" % data.hex())
            return
        self.out.write("%s %s\n" % (label, summary(message)))
        if self.verbose:
            for line in tree(message).splitlines()[1:]:
                self.out.write("  %s\n" % line)
        if self.verify:
            again = encode(message)
            if again != bytes(data):
                self.differ += 1
                self.out.write(
                    "%s re-encoding differs:\n  in:  %s\n  out: %s\n" % (label, bytes(data).hex(), again.hex())
                )

    def close(self, err):
        text = "%d messages, %d undecodable" % (self.messages, self.failed)
        if self.verify:
            text += ", %d re-encode differently" % self.differ
        err.write(text + "\n")
        return 1 if (self.failed or self.differ) else 0


def _decode(args, out, err):
    decoder = _Decoder(out, args.verbose, args.verify)
    if args.pcap:
        from rserpool.tools.capture import CaptureError, iter_messages

        if args.input not in (None,):
            err.write("rserpool decode: give either --pcap FILE or hex input, not both\n")
            return 2
        try:
            for rec in iter_messages(args.pcap):
                if args.proto and rec.protocol != args.proto:
                    continue
                label = "%d %s:%d > %s:%d %s" % (
                    rec.frame,
                    rec.src[0],
                    rec.src[1],
                    rec.dst[0],
                    rec.dst[1],
                    rec.transport,
                )
                decoder.handle(label, rec.protocol, rec.payload)
        except (CaptureError, OSError) as e:
            err.write("rserpool decode: %s: %s\n" % (args.pcap, e))
            return 2
        return decoder.close(err)
    if args.input is None or args.input == "-":
        lines = _hex_lines(sys.stdin)
    else:
        lines = _hex_lines([args.input])
    for number, protocol, data in lines:
        if isinstance(data, str):
            decoder.messages += 1
            decoder.failed += 1
            out.write("%d: %s\n" % (number, data))
            continue
        decoder.handle("%d" % number, args.proto or protocol or "asap", data)
    return decoder.close(err)


def _examples(args, out, err):
    from rserpool.tools.message_examples import lines

    for line in lines():
        out.write(line + "\n")
    return 0


def transport_text(transport, wildcard=None):
    """
    A transport parameter for people: C{"tcp 192.0.2.1:9901"}, C{"sctp
    192.0.2.1,198.51.100.1:9901"}, C{"tcp [2001:db8::1]:9901"}.

    @param wildcard: an address to show in place of unspecified ones, or
        C{None}.
    """
    texts = []
    for a in transport.addresses:
        if a.is_unspecified and wildcard is not None:
            a = wildcard
        text = "[%s]" % a if a.version == 6 else str(a)
        if text not in texts:
            texts.append(text)
    return "%s %s:%d" % (transport.protocol, ",".join(texts), transport.port)


def _run(fn):
    """
    Run C{fn(reactor)} (which returns a Deferred exit status) in the global
    reactor, then return that status.
    """
    from twisted.internet import defer, reactor

    outcome = {"status": 1}

    def go():
        d = defer.maybeDeferred(fn, reactor)

        def done(result):
            outcome["status"] = result
            if reactor.running:
                reactor.stop()

        d.addBoth(done)

    reactor.callWhenRunning(go)
    reactor.run()
    status = outcome["status"]
    if not isinstance(status, int):
        raise status.value if hasattr(status, "value") else SystemExit(1)
    return status


def _registrars(args):
    return args.registrar or [DEFAULT_REGISTRAR]


# -- resolve --------------------------------------------------------------


def _resolve(args, out, err):
    from rserpool.pu import PoolUser, ResolutionError

    def main(reactor):
        pu = PoolUser(reactor, registrars=_registrars(args), response_timeout=args.timeout,
                      connect_timeout=args.timeout)
        d = pu.resolve(args.handle, args.items)

        def ok(infos):
            pu.close()
            if not infos:
                err.write("rserpool resolve: pool %r has no pool elements\n" % args.handle)
                return 1
            for info in infos:
                out.write("%s\n" % info)
            return 0

        def failed(f):
            pu.close()
            f.trap(ResolutionError)
            err.write("rserpool resolve: %s\n" % f.getErrorMessage())
            return 1

        return d.addCallbacks(ok, failed)

    return _run(main)


# -- pe -------------------------------------------------------------------


def _pe(args, out, err):
    from twisted.internet import defer

    from rserpool.examples import server_factory
    from rserpool.pe import PoolElementService, parse_policy

    try:
        policy = parse_policy(args.policy)
    except ValueError as e:
        err.write("rserpool pe: %s\n" % e)
        return 2
    options = {}
    if args.service == "transfer":
        options.update(root=args.root, chunk_size=args.chunk_size, chunk_delay=args.chunk_delay,
                       pool_handle=args.handle)
        if args.key:
            options["key"] = args.key.encode("utf-8")
        if args.cookie_keys:
            from rserpool.session.sealing import KeyFileError, load_keyring

            try:
                load_keyring(args.cookie_keys)
            except KeyFileError as e:
                err.write("rserpool pe: %s\n" % e)
                return 2
            options["cookie_keys"] = args.cookie_keys
    endpoint = args.endpoint or (
        "tcp:%d:interface=%s" % (args.port, args.bind) if args.bind else "tcp:%d" % args.port)
    if args.verbose:
        _log_to(err, True)
    else:
        _tell_problems(err, "rserpool pe", "rserpool.pe.PoolElementService")

    def main(reactor):
        factory = server_factory(args.service, clock=reactor, **options)
        identifier = int(args.identifier, 16) if args.identifier else None
        pe = PoolElementService(
            args.handle, factory, endpoint=endpoint, registrars=_registrars(args),
            policy=policy, reactor=reactor, identifier=identifier,
            reregistration_interval=args.reregistration_interval,
            enhanced=args.mode == "enhanced",
            session_options={"heartbeat_interval": args.heartbeat,
                             "max_missed": args.max_missed},
            http=args.http,
            csp=args.csp,
            csp_interval=args.csp_interval,
        )
        result = defer.Deferred()
        state = {"registered": False}

        def registered(_):
            state["registered"] = True
            # what the PE registered: the mapping (tcp, sctp, udp) and the
            # addresses its registrar connection stands for, not the
            # wildcard it listens on
            transport = pe.machine.registration().pool_element.user_transport
            out.write("registered %08x in %s: %s %s:%d %s\n" % (
                pe.identifier, args.handle, transport.protocol,
                ",".join(str(a) for a in transport.addresses), transport.port, args.mode))
            out.flush()

        def rejected(f):
            err.write("rserpool pe: %s\n" % f.getErrorMessage())
            if not result.called:
                result.callback(1)

        def shutdown():
            # SIGTERM/SIGINT stop the reactor; deregister first (the
            # reactor waits for this Deferred).
            if pe.running and state["registered"]:
                d = pe.stopService()
                d.addCallback(lambda confirmed: out.write(
                    "deregistered %08x%s\n" % (pe.identifier, "" if confirmed else " (unconfirmed)")))
                d.addBoth(lambda _: out.flush())
                return d

        reactor.addSystemEventTrigger("before", "shutdown", shutdown)
        pe.startService()
        pe.registered.addCallbacks(registered, rejected)
        return result

    return _run(main)


def _tell_problems(err, command, namespace):
    """
    Without C{-v}: print the warnings a service logs in C{namespace} (one
    line each, "COMMAND: text"), and nothing else, so that a registrar that
    cannot be reached or refuses is never silent.  The service tells each
    problem once.
    """
    from twisted.logger import LogLevel, formatEvent, globalLogBeginner

    def observer(event):
        if event.get("log_namespace") != namespace or event.get("log_level") != LogLevel.warn:
            return
        err.write("%s: %s\n" % (command, formatEvent(event)))
        err.flush()

    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def _log_to(err, verbose):
    if not verbose:
        return
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(err)], redirectStandardIO=False)


# -- terminal -------------------------------------------------------------


def _terminal(args, out, err):
    from twisted.internet import defer, error
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.stdio import StandardIO
    from twisted.protocols.basic import LineReceiver

    from rserpool.pu import PoolClientEndpoint, PoolUser

    _log_to(err, args.verbose)
    enhanced = {"auto": None, "basic": False, "enhanced": True}[args.mode]
    secure = None
    if args.keys is not None:
        from rserpool.transport.psk import pe_securer

        try:
            secure = pe_securer(args.keys, args.identity)
        except ValueError as e:
            err.write("rserpool terminal: %s\n" % e)
            return 2
    elif args.identity is not None:
        err.write("rserpool terminal: --identity needs --keys\n")
        return 2

    def main(reactor):
        pu = PoolUser(reactor, registrars=_registrars(args))
        finished = defer.Deferred()
        state = {"protocol": None, "eof": False, "quiet": None, "lines": []}
        http = None
        csp = None
        if args.csp is not None:
            from rserpool.transport.csp_reporter import CSPReporter, pool_user_id, pool_user_report

            number = random.SystemRandom().getrandbits(56) or 1
            csp = CSPReporter(reactor, args.csp, lambda: pool_user_id(number),
                              lambda: pool_user_report(args.handle, lambda: (
                                  state["pe"], None if state["since"] is None
                                  else reactor.seconds() - state["since"], state["failovers"])),
                              args.csp_interval)
            csp.start()
        state.update(pe=None, since=None, failovers=0)
        if args.http:
            from rserpool.web.nodes import NodeHTTP, PoolUserCollector

            http = NodeHTTP(reactor, [PoolUserCollector(pu)])
            http.listen(args.http).addErrback(lambda f: (
                err.write("rserpool terminal: cannot serve HTTP on %s: %s\n" % (
                    args.http, f.getErrorMessage())),
                finished.callback(2) if not finished.called else None))

        class Remote(Protocol):
            def connectionMade(self):
                state["protocol"] = self
                pe = getattr(self, "pool_element", None)
                state.update(pe=pe, since=reactor.seconds())
                if pe is not None:
                    err.write("rserpool terminal: connected to %s\n" % (pe,))
                    err.flush()
                for line in state["lines"]:
                    self.transport.write(line)
                state["lines"] = []

            def sessionFailover(self, pe):
                state.update(pe=pe, since=reactor.seconds(), failovers=state["failovers"] + 1)
                err.write("rserpool terminal: failed over to %s\n" % pe)
                err.flush()

            def dataReceived(self, data):
                out.write(data.decode("utf-8", "replace"))
                out.flush()
                if state["eof"]:
                    _arm_quiet()

            def connectionLost(self, reason):
                state.update(protocol=None, pe=None, since=None)
                if not finished.called:
                    if not reason.check(error.ConnectionDone):
                        err.write("rserpool terminal: %s\n" % reason.getErrorMessage())
                        finished.callback(1)
                    else:
                        finished.callback(0)

        def _arm_quiet():
            call = state["quiet"]
            if call is not None and call.active():
                call.cancel()
            state["quiet"] = reactor.callLater(args.wait, _quit)

        def _quit():
            p = state["protocol"]
            if p is not None:
                p.transport.loseConnection()
            if not finished.called:
                finished.callback(0)

        class Keyboard(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line):
                data = line + b"\n"
                p = state["protocol"]
                if p is None:
                    state["lines"].append(data)
                else:
                    p.transport.write(data)

            def connectionLost(self, reason):
                state["eof"] = True
                _arm_quiet()

        endpoint = PoolClientEndpoint(reactor, pu, args.handle, enhanced=enhanced,
                                      attempts=args.attempts, secure=secure)

        def connect_failed(f):
            err.write("rserpool terminal: %s\n" % f.getErrorMessage())
            if not finished.called:
                finished.callback(1)

        endpoint.connect(Factory.forProtocol(Remote)).addErrback(connect_failed)
        StandardIO(Keyboard(), reactor=reactor)

        def done(status):
            pu.close()
            if csp is not None:
                csp.stop()
            if http is not None:
                return http.stop().addCallback(lambda _: status)
            return status

        return finished.addCallback(done)

    return _run(main)


# -- pingpong -------------------------------------------------------------


def _pingpong(args, out, err):
    from rserpool.examples.pingpong import run_client
    from rserpool.pu import PoolUser

    _log_to(err, args.verbose)

    def main(reactor):
        pu = PoolUser(reactor, registrars=_registrars(args))
        d = run_client(reactor, pu, args.handle, out, err, interval=args.interval,
                       count=args.count, attempts=args.attempts)

        def done(status):
            pu.close()
            return status

        return d.addCallback(done)

    return _run(main)


# -- dump -----------------------------------------------------------------


def _dump(args, out, err):
    from twisted.internet import defer
    from twisted.internet.endpoints import clientFromString
    from zope.interface import implementer

    from rserpool.asap.pool_user import PoolElementInfo
    from rserpool.asap.pu_dump import DumpError, HandleTableDump
    from rserpool.interfaces import IMessageReceiver
    from rserpool.transport.tcp import MessageStreamFactory

    endpoint_text = args.registrar or DEFAULT_REGISTRAR_ENRP

    def main(reactor):
        own = random.SystemRandom().getrandbits(32) or 1
        dump = HandleTableDump(own)
        finished = defer.Deferred()

        def finish(status, message=None):
            # The first outcome counts: closing the connection after a
            # complete dump reports connection_lost at once (synchronously,
            # from the connection's close), which is no failure.
            if finished.called:
                return
            if message:
                err.write("rserpool dump: %s\n" % message)
            finished.callback(status)

        @implementer(IMessageReceiver)
        class Receiver:
            def connection_made(self, connection):
                for m in dump.start():
                    connection.send(m)

            def message_received(self, connection, message):
                try:
                    for m in dump.received(message):
                        connection.send(m)
                except DumpError as e:
                    finish(1, str(e))
                    connection.close()
                    return
                if dump.done:
                    _print(dump, connection.peer[0])
                    finish(0)
                    connection.close()

            def protocol_error(self, connection, error):
                err.write("rserpool dump: undecodable message: %s\n" % error.reason)

            def connection_lost(self, connection):
                finish(1, "%s closed the connection before the handle table was complete"
                       % endpoint_text)

        def _print(dump, asked):
            out.write("registrar %08x: %d pool(s), %d PE(s)\n" % (
                dump.registrar_id, len(dump.pools), sum(len(v) for v in dump.pools.values())))
            for server in dump.servers:
                # A registrar listening on the wildcard names 0.0.0.0 for
                # itself: it is the address we asked.
                stand_in = asked if server.server_id == dump.registrar_id else None
                out.write("peer %08x %s\n" % (server.server_id,
                                               transport_text(server.transport, stand_in)))
            for handle in sorted(dump.pools):
                pes = dump.pools[handle]
                out.write("pool %s: %d PE(s)\n" % (handle.decode("utf-8", "replace"), len(pes)))
                for pe in pes:
                    info = PoolElementInfo.from_wire(handle, pe)
                    out.write("  %s home=%08x life=%dms\n" % (info, pe.home_registrar,
                                                             pe.registration_life))

        try:
            endpoint = clientFromString(reactor, endpoint_text)
        except Exception as e:
            err.write("rserpool dump: bad endpoint %r: %s\n" % (endpoint_text, e))
            return 2
        connected = []
        d = endpoint.connect(MessageStreamFactory(Receiver(), "enrp"))
        d.addCallbacks(connected.append, lambda f: finish(
            1, "cannot reach %s: %s" % (endpoint_text, f.getErrorMessage())))
        timeout = reactor.callLater(args.timeout, lambda: (
            connected[0].close() if connected and connected[0].connected else None,
            finish(1, "%s did not answer within %g s" % (endpoint_text, args.timeout))))
        finished.addBoth(lambda s: (timeout.cancel() if timeout.active() else None, s)[1])
        return finished

    return _run(main)


def _csp_address(text):
    from rserpool.transport.csp_reporter import parse_csp_address

    try:
        return parse_csp_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def csp_options(p):
    """
    C{--csp HOST[:PORT]} and C{--csp-interval SECONDS}: report to RSPLIB's
    C{cspmonitor} (Component Status Protocol).
    """
    p.add_argument("--csp", metavar="HOST[:PORT]", type=_csp_address,
                   help="report status to RSPLIB's cspmonitor (Component Status Protocol, "
                        "UDP; port 2960 unless given)")
    p.add_argument("--csp-interval", type=float, default=0.25, metavar="SECONDS",
                   help="seconds between status reports (default 0.25, RSPLIB's)")


def add_pool_parsers(sub):
    """
    Add C{resolve}, C{pe}, C{terminal} and C{dump} to the subparsers
    C{sub}.
    """
    from rserpool.examples import SERVICES

    def registrar_option(p, what="ASAP"):
        p.add_argument(
            "--registrar", action="append", metavar="ENDPOINT",
            help="a Twisted client endpoint of a registrar's %s side; repeat for a list "
                 "(default %s)" % (what, DEFAULT_REGISTRAR if what == "ASAP" else DEFAULT_REGISTRAR_ENRP))

    r = sub.add_parser("resolve", help="list the pool elements of a pool",
                       description="Resolve HANDLE at a registrar; print one line per PE: "
                                   "<pe-id> <protocol> <address>:<port> <policy>.")
    r.add_argument("handle")
    registrar_option(r)
    r.add_argument("--items", type=int, default=None, metavar="N",
                   help="how many PEs to ask for (default: the registrar's)")
    r.add_argument("--timeout", type=float, default=3.0, help="seconds to wait per registrar")
    r.set_defaults(func=_resolve)

    p = sub.add_parser("pe", help="run an example service as a pool element",
                       description="Run SERVICE registered in pool HANDLE until killed; "
                                   "deregisters on SIGTERM/SIGINT.")
    p.add_argument("service", choices=sorted(SERVICES), metavar="SERVICE",
                   help="one of: %s" % ", ".join(sorted(SERVICES)))
    p.add_argument("--handle", required=True)
    registrar_option(p)
    p.add_argument("--policy", default="RoundRobin", metavar="NAME[:VALUE...]",
                   help="member selection policy, e.g. RoundRobin, WeightedRandom:5, "
                        "LeastUsed:0.3 (default RoundRobin)")
    p.add_argument("--port", type=int, default=0, help="the service's TCP port (default: any)")
    p.add_argument("--bind", default=None, metavar="ADDRESS",
                   help="the one address to serve on and register (default: every address; "
                        "the PE registers the one it reaches its registrar from)")
    p.add_argument("--endpoint", help="a server endpoint description instead of --port/--bind")
    p.add_argument("--mode", choices=("enhanced", "basic"), default="enhanced",
                   help="enhanced: session layer with failover (default); basic: plain TCP")
    p.add_argument("--identifier", metavar="HEX", help="a fixed PE identifier")
    p.add_argument("--reregistration-interval", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--heartbeat", type=float, default=30.0, metavar="SECONDS",
                   help="session heartbeat interval (Enhanced Mode)")
    p.add_argument("--max-missed", type=int, default=3)
    p.add_argument("--root", help="transfer: the directory served")
    p.add_argument("--key", help="transfer: a passphrase the pool's cookie key is derived from "
                                 "(for demonstrations; see --cookie-keys)")
    p.add_argument("--cookie-keys", metavar="FILE",
                   help="transfer: the pool's cookie key file (KEYID HEXKEY lines, the key that "
                        "seals first; read again when it changes)")
    p.add_argument("--chunk-size", type=int, default=4096, help="transfer: bytes per chunk")
    p.add_argument("--chunk-delay", type=float, default=0.0,
                   help="transfer: seconds between bursts of chunks")
    p.add_argument("--http", metavar="ENDPOINT",
                   help="serve this PE's metrics (/metrics, /healthz) on a server endpoint, "
                        "e.g. tcp:9100:interface=127.0.0.1")
    csp_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    p.set_defaults(func=_pe)

    t = sub.add_parser("terminal", help="talk to a pool: stdin to a PE, replies to stdout",
                       description="Send stdin, line by line, to a PE of pool HANDLE and print "
                                   "the replies, failing over as needed (Enhanced Mode).")
    t.add_argument("handle")
    registrar_option(t)
    t.add_argument("--mode", choices=("auto", "enhanced", "basic"), default="auto")
    t.add_argument("--wait", type=float, default=1.0,
                   help="seconds of silence after end of input before quitting")
    t.add_argument("--attempts", type=int, default=5, help="PEs to try before giving up")
    t.add_argument("--keys", metavar="FILE",
                   help="TLS-PSK key file: reach the PEs (served on psk: endpoints) over TLS-PSK")
    t.add_argument("--identity", metavar="ID",
                   help="with --keys, the identity to present [the file's only one]")
    t.add_argument("--http", metavar="ENDPOINT",
                   help="serve this pool user's metrics (/metrics) on a server endpoint")
    csp_options(t)
    t.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    t.set_defaults(func=_terminal)

    pp = sub.add_parser("pingpong", help="RSPLIB's PingPong pool user (Enhanced Mode)",
                        description="Send a PingPong Ping (RSPLIB's format, PPID 33) to a PE "
                                    "of pool HANDLE every interval and print each Pong; fail "
                                    "over with the PE's cookie, as pingpongclient does.")
    pp.add_argument("handle")
    registrar_option(pp)
    pp.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                    help="seconds between Pings (default 1)")
    pp.add_argument("--count", type=int, default=None, metavar="N",
                    help="stop after N Pongs (default: run until killed)")
    pp.add_argument("--attempts", type=int, default=5, help="PEs to try before giving up")
    pp.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    pp.set_defaults(func=_pingpong)

    dp = sub.add_parser("dump", help="print a registrar's handlespace (over ENRP)",
                        description="Fetch the handlespace of a registrar over ENRP, posing as "
                                    "a peer (List Request, Handle Table Request with paging).")
    dp.add_argument("--registrar", metavar="ENDPOINT",
                    help="a client endpoint of the registrar's ENRP side (default %s)"
                         % DEFAULT_REGISTRAR_ENRP)
    dp.add_argument("--timeout", type=float, default=5.0)
    dp.set_defaults(func=_dump)


def build_parser():
    """
    The command line parser of ``rserpool``.
    """
    parser = argparse.ArgumentParser(prog="rserpool", description="Reliable Server Pooling tools.")
    parser.add_argument("--version", action="version", version="rserpool " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "decode",
        help="pretty-print ASAP/ENRP messages given as hex or in a capture",
        description=(
            "Decode ASAP/ENRP messages. HEX is one message in hex; '-' (the default) reads "
            "stdin, one message per line, where a comment line '# asap ...' or '# enrp ...' "
            "sets the protocol of the lines after it. --pcap reads a pcap or pcapng file."
        ),
    )
    d.add_argument("input", nargs="?", metavar="HEX|-", help="a message in hex, or - for stdin")
    d.add_argument("--proto", choices=("asap", "enrp"), help="the protocol (default: asap, or as the capture says)")
    d.add_argument("--pcap", metavar="FILE", help="decode every ASAP/ENRP message of a capture")
    d.add_argument("--verify", action="store_true", help="re-encode each message and report differences (exit 1)")
    d.add_argument("-v", "--verbose", action="store_true", help="print every field")
    d.set_defaults(func=_decode)

    e = sub.add_parser("examples", help="print an example of every message type, in hex")
    e.set_defaults(func=_examples)
    add_pool_parsers(sub)
    from rserpool.conformance.runner import add_parser as add_conformance_parser

    add_conformance_parser(sub)
    return parser


def main(argv=None, out=None, err=None):
    """
    Run the ``rserpool`` command.

    @return: the exit status.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(err)
        return 2
    try:
        return args.func(args, out, err)
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
