"""
Typed errors of the handlespace.

Every error a registration, deregistration or handle resolution can fail
with carries the RFC 5354 error cause the registrar puts into the Operation
Error of its response (RFC 5352 section 3.3: Registration Response with the
R flag; section 3.4: Deregistration Response; section 3.8: Handle Resolution
Response).
"""
from rserpool.codes import ErrorCause


class HandlespaceError(Exception):
    """
    A request the handlespace refuses.

    @ivar cause: the RFC 5354 error cause (an L{ErrorCause}) to report.
    @ivar reason: a one-line human readable description.
    """

    #: The cause a subclass reports; set by each subclass.
    cause = None

    def __init__(self, reason, cause=None):
        if cause is not None:
            self.cause = ErrorCause(cause)
        Exception.__init__(self, self.cause, reason)
        self.reason = reason

    def __str__(self):
        return "{} ({}): {}".format(self.cause.name, int(self.cause), self.reason)

    def __repr__(self):
        return "{}({!r})".format(type(self).__name__, self.reason)


class InvalidValues(HandlespaceError, ValueError):
    """
    A value out of range: a PE identifier of 0, an empty or too long pool
    handle, an unknown policy type, a policy field outside 32 bits or set for
    a policy that does not use it (RFC 5354 section 3.12.3, cause 0x3).
    """

    cause = ErrorCause.INVALID_VALUES


class InconsistentPoolingPolicy(HandlespaceError):
    """
    The registration's policy type differs from the pool's (RFC 5352
    section 3.1 and RFC 5354 section 3.12.5, cause 0x5).
    """

    cause = ErrorCause.INCONSISTENT_POOLING_POLICY


class InconsistentTransportType(HandlespaceError):
    """
    The registration's user transport type (SCTP, TCP, UDP, ...) differs
    from the pool's (RFC 5352 section 3.1 and RFC 5354 section 3.12.7,
    cause 0x7).
    """

    cause = ErrorCause.INCONSISTENT_TRANSPORT_TYPE


class InconsistentDataControlConfiguration(HandlespaceError):
    """
    The registration's transport use ("data only" or "data plus control")
    differs from the pool's (RFC 5352 section 3.1 and RFC 5354 section
    3.12.8, cause 0x8).
    """

    cause = ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION


class UnknownPoolHandle(HandlespaceError):
    """
    No pool with this handle, or no such PE in it (RFC 5354 section 3.12.9,
    cause 0x9; RSPLIB answers a deregistration of an unknown PE with the
    same code).
    """

    cause = ErrorCause.UNKNOWN_POOL_HANDLE
