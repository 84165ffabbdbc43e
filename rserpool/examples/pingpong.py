"""
PingPong, RSPLIB's Enhanced Mode demonstration service, in its own packet
format, so that our PE serves RSPLIB's C{pingpongclient} and our PU talks
to C{rspserver -pingpong}.

The format (the facts of RSPLIB's C{src/pingpongpackets.h}), in network
byte order, carried with PPID 33 (L{PPID_PINGPONG})::

    Ping:  type=1:8 | flags:8 | length:16 | message number:64 | data
    Pong:  type=2:8 | flags:8 | length:16 | message number:64 | reply number:64 | data
    Cookie (SET_COOKIE):  "<PP-TD1>" (8 bytes) | next reply number:64

C{length} counts the whole message.  The PE answers every Ping with a Pong
that copies the Ping's message number and data and carries the PE's own
reply number, counting from 1; after each Pong it sets a cookie with the
next reply number.  A PU that fails over hands the cookie to the new PE
(Cookie Echo), which goes on counting where the old one stopped: the reply
numbers the PU sees have no gap although the PE changed.

 - Pool element: C{rserpool pe --handle PingPongPool pingpong} (like
   C{rspserver -pingpong}); L{server_factory}.
 - Pool user: C{rserpool pingpong PingPongPool} (like C{pingpongclient});
   L{PingPongClient} and L{run_client}.

As RSPLIB's server does, a PE ends the session (ABORT) on a malformed
message or a bad cookie.
"""
import struct

import attrs
from twisted.internet import defer, error, task
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

__all__ = [
    "PPID_PINGPONG",
    "COOKIE_ID",
    "Ping",
    "Pong",
    "PingPongError",
    "encode",
    "decode",
    "encode_cookie",
    "decode_cookie",
    "PingPongServer",
    "server_factory",
    "PingPongClient",
    "run_client",
]

#: The PPID of PingPong messages (RSPLIB's C{PPID_PPP}).
PPID_PINGPONG = 33
#: Message types.
PING = 0x01
PONG = 0x02
#: The first 8 bytes of a PingPong cookie.
COOKIE_ID = b"<PP-TD1>"

_HEADER = struct.Struct("!BBH")
_PING = struct.Struct("!BBHQ")
_PONG = struct.Struct("!BBHQQ")
_COOKIE = struct.Struct("!8sQ")


class PingPongError(ValueError):
    """
    Bytes that are not a PingPong message or cookie.
    """


@attrs.frozen
class Ping:
    message_no: int
    data: bytes = b""


@attrs.frozen
class Pong:
    message_no: int
    reply_no: int
    data: bytes = b""


def encode(message):
    """
    The bytes of a L{Ping} or L{Pong}.
    """
    if isinstance(message, Ping):
        return _PING.pack(PING, 0, _PING.size + len(message.data), message.message_no) + message.data
    return _PONG.pack(PONG, 0, _PONG.size + len(message.data), message.message_no,
                      message.reply_no) + message.data


def message_length(data):
    """
    The length a message starting with C{data} (at least 4 bytes) claims.

    @raise PingPongError: below the header's 4 bytes.
    """
    _, _, length = _HEADER.unpack_from(data)
    if length < _HEADER.size:
        raise PingPongError("PingPong length %d is below the header's 4 bytes" % length)
    return length


def decode(data):
    """
    One message: exactly C{length} bytes.

    @return: a L{Ping} or L{Pong}.
    @raise PingPongError: an unknown type, or a length that does not fit.
    """
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise PingPongError("%d bytes are no PingPong message" % len(data))
    kind, _, length = _HEADER.unpack_from(data)
    if length != len(data):
        raise PingPongError("PingPong length %d for %d bytes" % (length, len(data)))
    if kind == PING and length >= _PING.size:
        _, _, _, number = _PING.unpack_from(data)
        return Ping(number, data[_PING.size:])
    if kind == PONG and length >= _PONG.size:
        _, _, _, number, reply = _PONG.unpack_from(data)
        return Pong(number, reply, data[_PONG.size:])
    raise PingPongError("not a Ping or Pong: type %d, length %d" % (kind, length))


def encode_cookie(reply_no):
    """
    The cookie that lets another PE continue with C{reply_no}.
    """
    return _COOKIE.pack(COOKIE_ID, reply_no)


def decode_cookie(cookie):
    """
    @return: the reply number in a PingPong cookie.
    @raise PingPongError: not one (RSPLIB wants exactly 16 bytes with the
        identifier).
    """
    if len(cookie) != _COOKIE.size or not cookie.startswith(COOKIE_ID):
        raise PingPongError("not a PingPong cookie: %r" % (bytes(cookie[:16]),))
    return _COOKIE.unpack(cookie)[1]


class _Framer:
    """
    Splits a byte stream into messages by their length field: a message
    transport (Enhanced Mode, SCTP) hands over one whole message per call,
    a plain TCP connection (Basic Mode) any piece.
    """

    def __init__(self):
        self._buffer = b""

    def feed(self, data):
        self._buffer += data
        out = []
        while len(self._buffer) >= _HEADER.size:
            length = message_length(self._buffer)
            if len(self._buffer) < length:
                break
            out.append(decode(self._buffer[:length]))
            self._buffer = self._buffer[length:]
        return out


def _send(transport, data):
    # PPID 33 where the transport has PPIDs (Enhanced Mode, SCTP).
    write_message = getattr(transport, "writeMessage", None)
    if write_message is not None:
        write_message(data, PPID_PINGPONG)
    else:
        transport.write(data)


class PingPongServer(Protocol):
    """
    The PE side: a Pong for every Ping, a cookie after every Pong.

    @ivar reply_no: the number of the next Pong.
    @ivar replies: Pongs sent in this session.
    """

    log = Logger()

    def __init__(self):
        self.reply_no = 1
        self.replies = 0
        self._framer = _Framer()

    def cookieReceived(self, cookie):
        """
        COOKIE_INDICATION: a failed-over PU continues with us.
        """
        try:
            self.reply_no = decode_cookie(cookie)
        except PingPongError as e:
            self.log.warn("pingpong: bad cookie echo ({why}); aborting", why=str(e))
            self.transport.abortConnection()

    def dataReceived(self, data):
        try:
            messages = self._framer.feed(data)
        except PingPongError as e:
            self.log.warn("pingpong: {why}; aborting", why=str(e))
            self.transport.abortConnection()
            return
        for message in messages:
            if not isinstance(message, Ping):
                self.log.warn("pingpong: a Pong from the pool user; aborting")
                self.transport.abortConnection()
                return
            _send(self.transport, encode(Pong(message.message_no, self.reply_no, message.data)))
            self.reply_no += 1
            self.replies += 1
            set_cookie = getattr(self.transport, "set_cookie", None)
            if set_cookie is not None:
                set_cookie(encode_cookie(self.reply_no))


def server_factory(**options):
    """
    The PingPong service's factory (C{rserpool pe pingpong}).
    """
    return Factory.forProtocol(PingPongServer)


class PingPongClient(Protocol):
    """
    The PU side: a Ping every C{interval} seconds; prints each Pong as
    RSPLIB's C{pingpongclient} does (C{Ack #N from PE $ID (reply #R)}),
    gaps in the reply numbers, and failovers.

    @ivar acks: C{(message number, PE id, reply number)} of every Pong.
    @ivar done: a L{Deferred} firing with 0 after C{count} Pongs, or with
        1 when the session fails.
    """

    def __init__(self, clock, out, interval=1.0, count=None, data=b"ping"):
        self.clock = clock
        self.out = out
        self.interval = interval
        self.count = count
        self.data = data
        self.message_no = 1
        self.last_reply = 0
        self.acks = []
        self.done = defer.Deferred()
        self._loop = None
        self._framer = _Framer()

    def _print(self, text):
        self.out.write(text + "\n")
        self.out.flush()

    def _pe_id(self):
        pe = getattr(self.transport, "pool_element", None) or getattr(self, "pool_element", None)
        return pe.identifier if pe is not None else 0

    def connectionMade(self):
        self._loop = task.LoopingCall(self.ping)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def ping(self):
        # Until `count` Pongs came: a Ping handed to a PE that died may be
        # lost (failover is best effort, services draft section 4.4).
        number = self.message_no
        self.message_no += 1
        _send(self.transport, encode(Ping(number, b"%s %d" % (self.data, number))))
        self._print("Message #%d sent" % number)

    def sessionFailover(self, pe):
        self._print("Failover to PE $%08x (cookie %s)" % (
            pe.identifier, "echoed" if self.transport.cookie is not None else "none"))

    def dataReceived(self, data):
        try:
            messages = self._framer.feed(data)
        except PingPongError as e:
            self._print("Bad message from PE $%08x: %s" % (self._pe_id(), e))
            return
        for pong in messages:
            if not isinstance(pong, Pong):
                continue
            self.acks.append((pong.message_no, self._pe_id(), pong.reply_no))
            self._print("Ack #%d from PE $%08x (reply #%d)" % (
                pong.message_no, self._pe_id(), pong.reply_no))
            if pong.reply_no - self.last_reply != 1:
                self._print("*** Detected gap of %d! ***" % (pong.reply_no - self.last_reply))
            self.last_reply = pong.reply_no
            if self.count is not None and len(self.acks) >= self.count:
                self._finish(0)
                self.transport.loseConnection()

    def _finish(self, status):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if not self.done.called:
            self.done.callback(status)

    def connectionLost(self, reason):
        if not reason.check(error.ConnectionDone):
            self._print("Session failed: %s" % reason.getErrorMessage())
            self._finish(1)
        else:
            self._finish(0)


def run_client(reactor, pool_user, handle, out, err, interval=1.0, count=None, attempts=5):
    """
    Run a PingPong session with pool C{handle} in Enhanced Mode (PPID 33),
    failing over with the PE's cookie.

    @param out: where the acks are printed; C{err}: where errors are.
    @return: a L{Deferred} exit status (0 after C{count} Pongs).
    """
    from rserpool.pu import PoolClientEndpoint

    client = PingPongClient(reactor, out, interval, count)
    endpoint = PoolClientEndpoint(reactor, pool_user, handle, attempts=attempts, enhanced=True,
                                  session_options={"data_ppid": PPID_PINGPONG})
    d = endpoint.connect(Factory.forProtocol(lambda: client))

    def failed(f):
        err.write("rserpool pingpong: %s\n" % f.getErrorMessage())
        err.flush()
        return 1

    d.addCallbacks(lambda _: client.done, failed)
    return d
