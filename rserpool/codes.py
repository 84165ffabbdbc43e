"""
Protocol numbers shared by every layer: message types, parameter types,
error causes and policy types of RFC 5352, 5353, 5354 and 5356.

This module is a leaf: it imports nothing from the rest of the package, so
the codec (:mod:`rserpool.wire`) and the handlespace
(:mod:`rserpool.handlespace`) can both use it without depending on each
other.
"""
import enum

#: IANA port for ASAP over SCTP, TCP and UDP.
ASAP_PORT = 3863
#: IANA port for ENRP.
ENRP_PORT = 9901
#: SCTP payload protocol identifier of ASAP.
ASAP_PPID = 11
#: SCTP payload protocol identifier of ENRP.
ENRP_PPID = 12

#: Where pool elements, pool users and tools reach a registrar's ASAP side
#: unless told otherwise: C{twistd enrp}'s default ASAP endpoint.
DEFAULT_REGISTRAR = "tcp:127.0.0.1:%d" % ASAP_PORT
#: Where tools (C{rserpool dump}) reach a registrar's ENRP side unless told
#: otherwise: C{twistd enrp}'s default ENRP endpoint.
DEFAULT_REGISTRAR_ENRP = "tcp:127.0.0.1:%d" % ENRP_PORT

#: RSPLIB's default multicast group for ASAP Server Announce.
ASAP_ANNOUNCE_GROUP = ("239.0.0.50", 3863)
#: RSPLIB's default multicast group for ENRP Presence.
ENRP_ANNOUNCE_GROUP = ("239.0.0.51", 9901)


class ASAPType(enum.IntEnum):
    """ASAP message types (RFC 5352, section 2.2)."""

    REGISTRATION = 0x01
    DEREGISTRATION = 0x02
    REGISTRATION_RESPONSE = 0x03
    DEREGISTRATION_RESPONSE = 0x04
    HANDLE_RESOLUTION = 0x05
    HANDLE_RESOLUTION_RESPONSE = 0x06
    ENDPOINT_KEEP_ALIVE = 0x07
    ENDPOINT_KEEP_ALIVE_ACK = 0x08
    ENDPOINT_UNREACHABLE = 0x09
    SERVER_ANNOUNCE = 0x0A
    COOKIE = 0x0B
    COOKIE_ECHO = 0x0C
    BUSINESS_CARD = 0x0D
    ERROR = 0x0E


class ENRPType(enum.IntEnum):
    """ENRP message types (RFC 5353, section 2)."""

    PRESENCE = 0x01
    HANDLE_TABLE_REQUEST = 0x02
    HANDLE_TABLE_RESPONSE = 0x03
    HANDLE_UPDATE = 0x04
    LIST_REQUEST = 0x05
    LIST_RESPONSE = 0x06
    INIT_TAKEOVER = 0x07
    INIT_TAKEOVER_ACK = 0x08
    TAKEOVER_SERVER = 0x09
    ERROR = 0x0A


class ParamType(enum.IntEnum):
    """Parameter types (RFC 5354, section 3), without the action bits."""

    IPV4_ADDRESS = 0x0001
    IPV6_ADDRESS = 0x0002
    DCCP_TRANSPORT = 0x0003
    SCTP_TRANSPORT = 0x0004
    TCP_TRANSPORT = 0x0005
    UDP_TRANSPORT = 0x0006
    UDP_LITE_TRANSPORT = 0x0007
    POOL_MEMBER_SELECTION_POLICY = 0x0008
    POOL_HANDLE = 0x0009
    POOL_ELEMENT = 0x000A
    SERVER_INFORMATION = 0x000B
    OPERATION_ERROR = 0x000C
    COOKIE = 0x000D
    PE_IDENTIFIER = 0x000E
    PE_CHECKSUM = 0x000F
    #: draft-dreibholz-rserpool-asap-hropt; RSPLIB sends it as 0x803f.
    HANDLE_RESOLUTION_OPTION = 0x003F


class ErrorCause(enum.IntEnum):
    """Operation Error cause codes (RFC 5354, section 3.12)."""

    UNRECOGNIZED_PARAMETER = 0x1
    UNRECOGNIZED_MESSAGE = 0x2
    INVALID_VALUES = 0x3
    NON_UNIQUE_PE_IDENTIFIER = 0x4
    INCONSISTENT_POOLING_POLICY = 0x5
    LACK_OF_RESOURCES = 0x6
    INCONSISTENT_TRANSPORT_TYPE = 0x7
    INCONSISTENT_DATA_CONTROL_CONFIGURATION = 0x8
    UNKNOWN_POOL_HANDLE = 0x9
    REJECTION_DUE_TO_SECURITY_CONSIDERATIONS = 0xA



#: Cause codes RSPLIB 3.x puts into Operation Errors besides RFC 5354's
#: (facts from its ``rserpoolerror.h``): its own codes for malformed input
#: (0x0010, 0x0011) and the outcomes of its handlespace operations, which
#: its registrar copies into Registration Responses.  RSPLIB numbers 0x3,
#: 0x8 and 0x9 differently (invalid TLV, wrong control channel handling,
#: not found) but means what RFC 5354 means by them.
RSPLIB_CAUSES = {
    0x0010: "INVALID_MESSAGE",
    0x0011: "INVALID_VALUE",
    0x1000: "NOT_INITIALIZED",
    0x1001: "BUFFERSIZE_EXCEEDED",
    0x1003: "READ_ERROR",
    0x1004: "WRITE_ERROR",
    0x1005: "CONNECTION_FAILURE_SOCKET",
    0x1006: "CONNECTION_FAILURE_CONNECT",
    0x1007: "NO_REGISTRAR",
    0x1008: "TIMEOUT",
    0x1009: "UNRECOGNIZED_PARAMETER_SILENT",
    0x100A: "WRONG_PROTOCOL",
    0x100B: "UNSUPPORTED_POOL_POLICY",
    0xF000: "INVALID_ID",
    0xF001: "OWN_ID",
    0xF002: "DUPLICATE_ID",
    0xF003: "INVALID_POOL_POLICY",
    0xF004: "INVALID_POOL_HANDLE",
    0xF005: "INVALID_ADDRESSES",
    0xF006: "INVALID_REGISTRATOR",
    0xF007: "NO_USABLE_ASAP_ADDRESSES",
    0xF008: "NO_USABLE_USER_ADDRESSES",
}


def cause_name(code):
    """
    The name of an Operation Error cause code: RFC 5354's
    (C{"UNKNOWN_POOL_HANDLE"}), else RSPLIB's own with C{"RSPLIB_"} before
    it (C{"RSPLIB_INVALID_VALUE"} for 0x0011), else C{"UNKNOWN_CAUSE_0x1234"}.

    @param code: a 16-bit cause code.
    @rtype: C{str}
    """
    try:
        return ErrorCause(code).name
    except ValueError:
        pass
    name = RSPLIB_CAUSES.get(code)
    if name is not None:
        return "RSPLIB_" + name
    return "UNKNOWN_CAUSE_0x%04x" % code

class PolicyType(enum.IntEnum):
    """Pool member selection policy types (RFC 5356, RSPLIB extensions)."""

    ROUND_ROBIN = 0x00000001
    WEIGHTED_ROUND_ROBIN = 0x00000002
    RANDOM = 0x00000003
    WEIGHTED_RANDOM = 0x00000004
    PRIORITY = 0x00000005
    LEAST_USED = 0x40000001
    LEAST_USED_DEGRADATION = 0x40000002
    PRIORITY_LEAST_USED = 0x40000003
    RANDOMIZED_LEAST_USED = 0x40000004
    # RSPLIB 3.x, non-standard
    RANDOMIZED_PRIORITY_LEAST_USED = 0xB0001001
    RANDOMIZED_LEAST_USED_DEGRADATION = 0xB0001002
    PRIORITY_LEAST_USED_DEGRADATION = 0xB0001003
    RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION = 0xB0001004
    WEIGHTED_RANDOM_DPF = 0xB0002001
    LEAST_USED_DPF = 0xB0002002
    LEAST_USED_DEGRADATION_DPF = 0xB0002003
    PRIORITY_LEAST_USED_DPF = 0xB0002004
    PRIORITY_LEAST_USED_DEGRADATION_DPF = 0xB0002005


#: The 32-bit fields that follow the policy type on the wire, in order
#: (RFC 5356 section 3; RSPLIB's ``rserpoolmessage.h`` for the 0xb000xxxx
#: types).  Load, degradation and DPF values are fractions of 0xffffffff.
POLICY_FIELDS = {
    PolicyType.ROUND_ROBIN: (),
    PolicyType.WEIGHTED_ROUND_ROBIN: ("weight",),
    PolicyType.RANDOM: (),
    PolicyType.WEIGHTED_RANDOM: ("weight",),
    PolicyType.PRIORITY: ("priority",),
    PolicyType.LEAST_USED: ("load",),
    PolicyType.LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.PRIORITY_LEAST_USED: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_LEAST_USED: ("load",),
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: (
        "load",
        "load_degradation",
    ),
    PolicyType.WEIGHTED_RANDOM_DPF: ("weight", "weight_dpf", "distance"),
    PolicyType.LEAST_USED_DPF: ("load", "load_dpf", "distance"),
    PolicyType.LEAST_USED_DEGRADATION_DPF: (
        "load",
        "load_degradation",
        "load_dpf",
        "distance",
    ),
    PolicyType.PRIORITY_LEAST_USED_DPF: (
        "load",
        "load_degradation",
        "load_dpf",
        "distance",
    ),
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION_DPF: (
        "load",
        "load_degradation",
        "load_dpf",
        "distance",
    ),
}

#: Short policy names as RSPLIB's tools spell them (``-policy=NAME``).
POLICY_NAMES = {
    PolicyType.ROUND_ROBIN: "RoundRobin",
    PolicyType.WEIGHTED_ROUND_ROBIN: "WeightedRoundRobin",
    PolicyType.RANDOM: "Random",
    PolicyType.WEIGHTED_RANDOM: "WeightedRandom",
    PolicyType.PRIORITY: "Priority",
    PolicyType.LEAST_USED: "LeastUsed",
    PolicyType.LEAST_USED_DEGRADATION: "LeastUsedDegradation",
    PolicyType.PRIORITY_LEAST_USED: "PriorityLeastUsed",
    PolicyType.RANDOMIZED_LEAST_USED: "RandomizedLeastUsed",
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED: "RandomizedPriorityLeastUsed",
    PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION: "RandomizedLeastUsedDegradation",
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION: "PriorityLeastUsedDegradation",
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: (
        "RandomizedPriorityLeastUsedDegradation"
    ),
    PolicyType.WEIGHTED_RANDOM_DPF: "WeightedRandomDPF",
    PolicyType.LEAST_USED_DPF: "LeastUsedDPF",
    PolicyType.LEAST_USED_DEGRADATION_DPF: "LeastUsedDegradationDPF",
    PolicyType.PRIORITY_LEAST_USED_DPF: "PriorityLeastUsedDPF",
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION_DPF: "PriorityLeastUsedDegradationDPF",
}


def is_adaptive(policy_type):
    """
    Whether a policy depends on the PE's load (the PE re-registers when its
    load changes).

    @param policy_type: a 32-bit policy type.
    @return: C{True} for the load-based policies.
    """
    return policy_type in POLICY_FIELDS and "load" in POLICY_FIELDS[policy_type]
