"""
The handlespace: pools, pool elements, selection policies (RFC 5356 and
RSPLIB's extensions), the indexes a registrar needs and the ENRP PE
checksum.  Pure Python: no reactor, no clock, no codec.

The registrar uses:

 - L{Handlespace}: C{register}, C{deregister}, C{remove}, C{select},
   C{takeover}, C{set_owner}, C{remove_connection}, C{set_timer},
   C{clear_timer}, C{due}, C{expire}, C{next_timer_time},
   C{owner_checksum}, C{owned_by}, C{report_unreachable}.
 - L{PolicySettings}: the policy and its values.
 - L{HandlespaceError} and its subclasses, each carrying the RFC 5354
   error cause to report.
"""
from rserpool.handlespace.checksum import (
    compute_checksum,
    finish_checksum,
    pe_contribution,
)
from rserpool.handlespace.errors import (
    HandlespaceError,
    InconsistentDataControlConfiguration,
    InconsistentPoolingPolicy,
    InconsistentTransportType,
    InvalidValues,
    UnknownPoolHandle,
)
from rserpool.handlespace.store import (
    MAX_POOL_HANDLE_SIZE,
    REMOVING_TIMERS,
    Handlespace,
    Pool,
    RegisteredPE,
    RegistrationOutcome,
    TimerCode,
)
from rserpool.handlespace.policy import MAX_VALUE, PolicySettings

__all__ = [
    "Handlespace",
    "Pool",
    "RegisteredPE",
    "RegistrationOutcome",
    "TimerCode",
    "REMOVING_TIMERS",
    "MAX_POOL_HANDLE_SIZE",
    "PolicySettings",
    "MAX_VALUE",
    "HandlespaceError",
    "InvalidValues",
    "InconsistentPoolingPolicy",
    "InconsistentTransportType",
    "InconsistentDataControlConfiguration",
    "UnknownPoolHandle",
    "compute_checksum",
    "finish_checksum",
    "pe_contribution",
]
