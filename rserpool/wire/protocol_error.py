"""
The one error the codec raises for bad network input.
"""
from rserpool.codes import ErrorCause


_MAX_REASON = 200


def brief(data, limit=48):
    """
    C{repr(data)} for a log line, cut after C{limit} bytes with the total
    length said: a peer's pool handle may be 64 KiB long, and its C{repr}
    four times that (issue #14: bad input must not write unbounded log
    lines).  Data of at most C{limit} bytes gives exactly C{repr(data)}.

    >>> brief(b"EchoPool")
    "b'EchoPool'"
    >>> brief(b"x" * 1000, 4)
    "b'xxxx'... (1000 bytes)"

    @param data: L{bytes}.
    @rtype: L{str}
    """
    if len(data) <= limit:
        return repr(data)
    return "%r... (%d bytes)" % (bytes(data[:limit]), len(data))


class ProtocolError(Exception):
    """
    Network input that is not a valid ASAP or ENRP message.

    Decoding never raises anything else: whatever the bytes, the caller gets
    a message or this error, which says what to answer (RFC 5352 section
    2.2.14 and RFC 5353 section 2.10: an Error message carrying an
    Operation Error with this cause).

    @ivar cause: the RFC 5354 error cause code (an L{ErrorCause}).
    @ivar reason: a one-line human readable description.
    @ivar info: the bytes to carry as the cause's information: the
        offending parameter (TLV) for parameter causes, the offending
        message for Unrecognized Message.
    @ivar report: C{False} when the RFC says to discard silently (an
        unrecognized parameter whose type's two high bits are 00).
    @ivar messages: for the error a L{rserpool.wire.StreamDecoder} raises
        when the framing is lost, what it decoded before in the same chunk
        (a list of messages and errors); empty otherwise.
    """

    messages = ()

    def __init__(self, cause, reason, info=b"", report=True):
        Exception.__init__(self, cause, reason)
        self.cause = ErrorCause(cause)
        # A reason goes into log lines about a peer's bad input: keep it
        # one short line whatever it quotes (issue #14).
        self.reason = reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."
        self.info = bytes(info)
        self.report = report

    def detached(self):
        """
        This error without its traceback and the exceptions it was raised
        while handling (C{__context__}, C{__cause__}), for keeping: a
        traceback holds the frames that decoded it, whose locals hold the
        error (a cycle only the garbage collector frees), and the input.
        A flood of bad messages kept thousands of them alive between
        collections, and made each collection tens of milliseconds.

        @return: C{self}.
        """
        self.__traceback__ = None
        self.__context__ = None
        self.__cause__ = None
        self.__suppress_context__ = True
        return self

    def __str__(self):
        return "{} ({}): {}".format(self.cause.name, int(self.cause), self.reason)

    def __repr__(self):
        return "ProtocolError({}, {!r}, info={!r}, report={!r})".format(
            self.cause.name, self.reason, self.info, self.report
        )
