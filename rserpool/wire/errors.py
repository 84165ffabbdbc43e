"""
The one error the codec raises for bad network input.
"""
from rserpool.codes import ErrorCause


class ProtocolError(Exception):
    """
    Network input that is not a valid ASAP or ENRP message.

    Decoding never raises anything else: whatever the bytes, the caller gets
    a message or this error, which says what to answer (RFC 5352 section
    2.2.14 and RFC 5353 section 2.2.10: an Error message carrying an
    Operation Error with this cause).

    @ivar cause: the RFC 5354 error cause code (an L{ErrorCause}).
    @ivar reason: a one-line human readable description.
    @ivar info: the bytes to carry as the cause's information: the
        offending parameter (TLV) for parameter causes, the offending
        message for Unrecognized Message.
    @ivar report: C{False} when the RFC says to discard silently (an
        unrecognized parameter whose type's two high bits are 00).
    """

    def __init__(self, cause, reason, info=b"", report=True):
        Exception.__init__(self, cause, reason)
        self.cause = ErrorCause(cause)
        self.reason = reason
        self.info = bytes(info)
        self.report = report

    def __str__(self):
        return "{} ({}): {}".format(self.cause.name, int(self.cause), self.reason)

    def __repr__(self):
        return "ProtocolError({}, {!r}, info={!r}, report={!r})".format(
            self.cause.name, self.reason, self.info, self.report
        )
