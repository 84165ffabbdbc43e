"""
Member selection policy settings (RFC 5356 section 3 and RSPLIB's
non-standard policies) as an immutable value.

The codec has its own wire class for the Member Selection Policy parameter;
the registrar converts with L{PolicySettings.from_values} and
L{PolicySettings.values}.
"""
import attrs

from rserpool.codes import POLICY_FIELDS, POLICY_NAMES, PolicyType

from rserpool.handlespace.errors import InvalidValues

#: The largest value of every 32-bit policy field.  Load, load degradation
#: and the DPF fields are fractions of this value (0 = 0 %, MAX_VALUE =
#: 100 %), RFC 5356 section 3.
MAX_VALUE = 0xFFFFFFFF

#: Every field a policy can carry, in the order of the attributes below.
ALL_FIELDS = (
    "weight",
    "priority",
    "load",
    "load_degradation",
    "weight_dpf",
    "load_dpf",
    "distance",
)


def _policy_type(value):
    try:
        return PolicyType(value)
    except ValueError:
        raise InvalidValues("unknown policy type 0x{:08x}".format(value)) from None


def _uint32(instance, attribute, value):
    if type(value) is not int or not 0 <= value <= MAX_VALUE:
        raise InvalidValues(
            "policy field {} = {!r} is not a 32-bit unsigned integer".format(
                attribute.name, value
            )
        )


@attrs.frozen(repr=False)
class PolicySettings:
    """
    A pool element's member selection policy and its values.

    Build it as C{PolicySettings(PolicyType.WEIGHTED_RANDOM, weight=5)} or
    from the wire's field tuple with L{from_values}.  Fields the policy type
    does not carry (see L{rserpool.codes.POLICY_FIELDS}) must be 0.

    @ivar policy_type: the L{PolicyType}.
    @ivar weight: weight (Weighted Round Robin, Weighted Random, WRandom DPF).
    @ivar priority: priority (Priority; RSPLIB keeps it in its weight field).
    @ivar load: load, a fraction of L{MAX_VALUE}.
    @ivar load_degradation: load degradation (load increment), a fraction of
        L{MAX_VALUE}.
    @ivar weight_dpf: weight distance penalty factor, a fraction of
        L{MAX_VALUE} per unit of distance.
    @ivar load_dpf: load distance penalty factor, a fraction of
        L{MAX_VALUE} per unit of distance.
    @ivar distance: distance of the PE from the registrar (RSPLIB: half the
        SCTP round trip time in milliseconds), supplied by the registrar.
    @raise InvalidValues: unknown policy type, a field outside 32 bits, or a
        non-zero field the policy does not carry.
    """

    policy_type = attrs.field(converter=_policy_type)
    weight = attrs.field(default=0, validator=_uint32)
    priority = attrs.field(default=0, validator=_uint32)
    load = attrs.field(default=0, validator=_uint32)
    load_degradation = attrs.field(default=0, validator=_uint32)
    weight_dpf = attrs.field(default=0, validator=_uint32)
    load_dpf = attrs.field(default=0, validator=_uint32)
    distance = attrs.field(default=0, validator=_uint32)

    def __attrs_post_init__(self):
        used = POLICY_FIELDS[self.policy_type]
        for name in ALL_FIELDS:
            if name not in used and getattr(self, name):
                raise InvalidValues(
                    "policy {} has no field {}".format(self.name, name)
                )

    @classmethod
    def from_values(cls, policy_type, values):
        """
        Build settings from a policy type and its field values in wire order.

        @param policy_type: the 32-bit policy type.
        @param values: the values of the type's fields, in the order of
            L{rserpool.codes.POLICY_FIELDS}.
        @return: a L{PolicySettings}.
        @raise InvalidValues: unknown type, wrong number of values, or a value
            outside 32 bits.
        """
        policy_type = _policy_type(policy_type)
        names = POLICY_FIELDS[policy_type]
        values = tuple(values)
        if len(values) != len(names):
            raise InvalidValues(
                "policy {} takes {} values, got {}".format(
                    POLICY_NAMES[policy_type], len(names), len(values)
                )
            )
        return cls(policy_type, **dict(zip(names, values)))

    @property
    def values(self):
        """
        The field values in wire order (L{rserpool.codes.POLICY_FIELDS}).
        """
        return tuple(getattr(self, name) for name in POLICY_FIELDS[self.policy_type])

    @property
    def name(self):
        """
        The policy's name as RSPLIB's tools spell it, e.g. C{"LeastUsed"}.
        """
        return POLICY_NAMES[self.policy_type]

    def with_distance(self, distance):
        """
        The same settings with another distance (for the DPF policies; the
        registrar measures the distance and fills it in).

        @param distance: the new distance.
        @return: a new L{PolicySettings}; C{self} for policies without a
            distance field.
        """
        if "distance" not in POLICY_FIELDS[self.policy_type]:
            return self
        return attrs.evolve(self, distance=distance)

    def __repr__(self):
        fields = ", ".join(
            "{}={}".format(name, getattr(self, name))
            for name in POLICY_FIELDS[self.policy_type]
        )
        return "PolicySettings({}{})".format(
            self.policy_type.name, ", " + fields if fields else ""
        )
