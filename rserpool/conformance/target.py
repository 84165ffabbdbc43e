"""
What the conformance suite tests, and how: the implementation under test
(its ASAP and ENRP endpoints, or the command that starts a pool element)
and its timers, read from the environment.

Sans I/O: L{Target.from_environ} takes a mapping and returns a frozen
L{Target}; nothing here opens a socket.

Every setting is an environment variable (L{SETTINGS} lists them with
their defaults, which are RFC 5352's and RSPLIB's)::

    RSERPOOL_TARGET_ASAP=tcp:host=127.0.0.1:port=3863 \\
    RSERPOOL_TARGET_KEEPALIVE=1 RSERPOOL_TARGET_KEEPALIVE_TIMEOUT=1 \\
        python -m twisted.trial rserpool.conformance
"""
import ipaddress
import shlex

import attrs

__all__ = ["Target", "SETTINGS", "TargetError", "endpoint_host"]


class TargetError(ValueError):
    """
    A setting of the environment is wrong; the message names it.
    """


def _seconds(name):
    def convert(text):
        try:
            value = float(text)
        except ValueError:
            raise TargetError("%s takes seconds, not %r" % (name, text)) from None
        if not 0 < value < 3600:
            raise TargetError("%s must be between 0 and 3600 seconds, not %r" % (name, text))
        return value

    return convert


def _count(name):
    def convert(text):
        try:
            value = int(text, 0)
        except ValueError:
            raise TargetError("%s takes a number, not %r" % (name, text)) from None
        if not 1 <= value <= 1000:
            raise TargetError("%s must be between 1 and 1000, not %r" % (name, text))
        return value

    return convert


def _endpoint(name):
    def convert(text):
        text = text.strip()
        if not text or text.lower() == "none":
            return None
        kind = text.split(":", 1)[0].lower()
        if kind not in ("tcp", "sctp", "psk", "ssl", "tls"):
            raise TargetError(
                "%s must be a Twisted client endpoint (tcp:host=H:port=P or "
                "sctp:host=H:port=P), not %r" % (name, text))
        return text

    return convert


def _addresses(name):
    def convert(text):
        out = []
        for part in text.replace(" ", ",").split(","):
            if not part:
                continue
            try:
                out.append(str(ipaddress.ip_address(part)))
            except ValueError:
                raise TargetError("%s lists addresses, and %r is none" % (name, part)) from None
        return tuple(out)

    return convert


def _address(name):
    def convert(text):
        text = text.strip()
        if not text:
            return None
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise TargetError("%s takes an address, not %r" % (name, text)) from None

    return convert


def _group(name):
    def convert(text):
        text = text.strip()
        if not text or text.lower() == "none":
            return None
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise TargetError("%s is GROUP:PORT[:INTERFACE], not %r" % (name, text))
        try:
            group = str(ipaddress.ip_address(parts[0]))
            port = int(parts[1])
            interface = str(ipaddress.ip_address(parts[2])) if len(parts) == 3 else ""
        except ValueError:
            raise TargetError("%s is GROUP:PORT[:INTERFACE], not %r" % (name, text)) from None
        if not 0 < port < 65536:
            raise TargetError("%s: port out of range in %r" % (name, text))
        return (group, port, interface)

    return convert


def _command(name):
    def convert(text):
        text = text.strip()
        if not text:
            return None
        try:
            shlex.split(text)
        except ValueError as e:
            raise TargetError("%s is not a command line: %s" % (name, e)) from None
        return text

    return convert


def _choice(name, choices):
    def convert(text):
        text = text.strip().lower()
        if text not in choices:
            raise TargetError("%s is one of %s, not %r" % (name, ", ".join(choices), text))
        return text

    return convert


def _server_id(name):
    def convert(text):
        try:
            value = int(text, 0)
        except ValueError:
            raise TargetError("%s takes a 32-bit id, not %r" % (name, text)) from None
        if not 1 <= value <= 0xFFFFFFFF:
            raise TargetError("%s must be a non-zero 32-bit id" % name)
        return value

    return convert


def _path(name):
    def convert(text):
        text = text.strip()
        if not text or text.lower() == "none":
            return None
        return text

    return convert


def _identity(name):
    def convert(text):
        text = text.strip()
        if not text:
            return None
        if len(text) > 128 or not all(0x21 <= ord(c) <= 0x7E for c in text):
            raise TargetError("%s must be 1 to 128 printable ASCII characters without "
                              "spaces, not %r" % (name, text))
        return text

    return convert


#: Environment variable: (attribute, converter, default, what it means).
#: Timer defaults are RFC 5352 section 5 / RSPLIB 3.4's.
SETTINGS = {
    "RSERPOOL_TARGET_ASAP": (
        "asap", _endpoint("RSERPOOL_TARGET_ASAP"), None,
        "The registrar's ASAP endpoint, a Twisted client endpoint: "
        "tcp:host=H:port=P or sctp:host=H:port=P."),
    "RSERPOOL_TARGET_ENRP": (
        "enrp", _endpoint("RSERPOOL_TARGET_ENRP"), None,
        "The registrar's ENRP endpoint (the suite poses as a peer: the target must "
        "admit the suite's address as one)."),
    "RSERPOOL_TARGET_PE": (
        "pe", _command("RSERPOOL_TARGET_PE"), None,
        "The command that starts the pool element under test; {registrar} stands for "
        "the harness's registrar endpoints (repeat as needed with {registrar2}), "
        "{handle} for the pool handle."),
    "RSERPOOL_TARGET_PU": (
        "pu", _command("RSERPOOL_TARGET_PU"), None,
        "The command that starts the pool user under test, which reaches a PE of the "
        "pool at once; {registrar} stands for the harness's registrar endpoint, {handle} "
        "for the pool handle."),
    "RSERPOOL_TARGET_KEEPALIVE": (
        "keep_alive_interval", _seconds("RSERPOOL_TARGET_KEEPALIVE"), 5.0,
        "Seconds between the registrar's Endpoint Keep Alives to a PE."),
    "RSERPOOL_TARGET_KEEPALIVE_TIMEOUT": (
        "keep_alive_timeout", _seconds("RSERPOOL_TARGET_KEEPALIVE_TIMEOUT"), 5.0,
        "Seconds the registrar waits for an Endpoint Keep Alive Ack."),
    "RSERPOOL_TARGET_MAX_BAD_PE_REPORT": (
        "max_bad_pe_report", _count("RSERPOOL_TARGET_MAX_BAD_PE_REPORT"), 3,
        "MAX-BAD-PE-REPORT: Endpoint Unreachable reports that remove a PE."),
    "RSERPOOL_TARGET_RESPONSE_TIMEOUT": (
        "response_timeout", _seconds("RSERPOOL_TARGET_RESPONSE_TIMEOUT"), 3.0,
        "Seconds to wait for an answer to a request."),
    "RSERPOOL_TARGET_SLACK": (
        "slack", _seconds("RSERPOOL_TARGET_SLACK"), 1.0,
        "Seconds added to every timer-based bound (scheduling, a loaded host)."),
    "RSERPOOL_TARGET_SOURCES": (
        "sources", _addresses("RSERPOOL_TARGET_SOURCES"), None,
        "Local addresses to send from as distinct pool users (Endpoint Unreachable); "
        "[127.0.0.2, 127.0.0.3, ... for a target on 127.0.0.0/8]."),
    "RSERPOOL_TARGET_BIND": (
        "bind", _address("RSERPOOL_TARGET_BIND"), None,
        "The local address the suite's PEs and pool users send from [the system's choice]."),
    "RSERPOOL_TARGET_ANNOUNCE": (
        "announce", _group("RSERPOOL_TARGET_ANNOUNCE"), None,
        "GROUP:PORT[:INTERFACE] where the registrar sends ASAP Server Announce "
        "[unset: it does not announce]."),
    "RSERPOOL_TARGET_ANNOUNCE_INTERVAL": (
        "announce_interval", _seconds("RSERPOOL_TARGET_ANNOUNCE_INTERVAL"), 1.0,
        "Seconds between the registrar's Server Announces."),
    "RSERPOOL_TARGET_PEER_HEARTBEAT": (
        "peer_heartbeat", _seconds("RSERPOOL_TARGET_PEER_HEARTBEAT"), 2.444,
        "PEER-HEARTBEAT-CYCLE of the registrar: seconds between its ENRP Presences."),
    "RSERPOOL_TARGET_PEER_MAX_TIME_LAST_HEARD": (
        "peer_max_time_last_heard", _seconds("RSERPOOL_TARGET_PEER_MAX_TIME_LAST_HEARD"), 5.0,
        "MAX-TIME-LAST-HEARD of the registrar."),
    "RSERPOOL_TARGET_PEER_MAX_TIME_NO_RESPONSE": (
        "peer_max_time_no_response", _seconds("RSERPOOL_TARGET_PEER_MAX_TIME_NO_RESPONSE"),
        5.0, "MAX-TIME-NO-RESPONSE of the registrar."),
    "RSERPOOL_TARGET_TAKEOVER_EXPIRY": (
        "takeover_expiry", _seconds("RSERPOOL_TARGET_TAKEOVER_EXPIRY"), 5.0,
        "Seconds the registrar's takeover waits for its acknowledgements."),
    "RSERPOOL_TARGET_PEER_ID": (
        "peer_id", _server_id("RSERPOOL_TARGET_PEER_ID"), None,
        "The server id the suite uses as an ENRP peer [random]."),
    "RSERPOOL_TARGET_PSK_KEYS": (
        "psk_keys", _path("RSERPOOL_TARGET_PSK_KEYS"), None,
        "A TLS-PSK key file (RFC 5355; lines IDENTITY HEXKEY): the suite reaches the "
        "registrar's tcp: endpoints over TLS with a pre-shared key of it [unset: in the "
        "clear]."),
    "RSERPOOL_TARGET_PSK_IDENTITY": (
        "psk_identity", _identity("RSERPOOL_TARGET_PSK_IDENTITY"), None,
        "The identity of RSERPOOL_TARGET_PSK_KEYS the suite's PEs and pool users present "
        "[the file's only one]."),
    "RSERPOOL_TARGET_PSK_PEER_KEYS": (
        "psk_peer_keys", _path("RSERPOOL_TARGET_PSK_PEER_KEYS"), None,
        "The TLS-PSK key file of the registrars, for ENRP: the suite's peer dials and "
        "listens with it [RSERPOOL_TARGET_PSK_KEYS]."),
    "RSERPOOL_TARGET_PSK_PEER_IDENTITY": (
        "psk_peer_identity", _identity("RSERPOOL_TARGET_PSK_PEER_IDENTITY"), None,
        "The identity the suite's ENRP peer presents [RSERPOOL_TARGET_PSK_IDENTITY, or the "
        "file's only one]."),
    "RSERPOOL_TARGET_PE_MAPPING": (
        "pe_mapping", _choice("RSERPOOL_TARGET_PE_MAPPING", ("tcp", "sctp")), "tcp",
        "The transport the harness's registrars listen on for the PE under test."),
    "RSERPOOL_TARGET_PE_WAIT": (
        "pe_wait", _seconds("RSERPOOL_TARGET_PE_WAIT"), 30.0,
        "Seconds the pool element harness waits for the PE under test to register, "
        "re-register or fail over (and the pool user harness for the PU's messages)."),
}


@attrs.frozen
class Target:
    """
    The implementation under test.

    @ivar asap: the registrar's ASAP client endpoint string, or C{None}.
    @ivar enrp: the registrar's ENRP client endpoint string, or C{None}.
    @ivar pe: the command line template that starts the PE under test, or
        C{None}.
    @ivar sources: the local addresses that act as distinct pool users, or
        C{None} for the default (see L{source_addresses}).
    """

    asap: object = None
    enrp: object = None
    pe: object = None
    pu: object = None
    keep_alive_interval: float = 5.0
    keep_alive_timeout: float = 5.0
    max_bad_pe_report: int = 3
    response_timeout: float = 3.0
    slack: float = 1.0
    sources: object = None
    bind: object = None
    announce: object = None
    announce_interval: float = 1.0
    peer_heartbeat: float = 2.444
    peer_max_time_last_heard: float = 5.0
    peer_max_time_no_response: float = 5.0
    takeover_expiry: float = 5.0
    peer_id: object = None
    psk_keys: object = None
    psk_identity: object = None
    psk_peer_keys: object = None
    psk_peer_identity: object = None
    pe_mapping: str = "tcp"
    pe_wait: float = 30.0

    @classmethod
    def from_environ(cls, environ):
        """
        The target the environment describes.

        @param environ: a mapping such as C{os.environ}.
        @raise TargetError: for a malformed setting.
        """
        values = {}
        for name, (attribute, convert, _default, _help) in SETTINGS.items():
            text = environ.get(name)
            if text is None or text == "":
                continue
            values[attribute] = convert(text)
        return cls(**values)

    def client(self, description, peer=False):
        """
        The client endpoint string the suite dials: C{description} as it
        is, or with C{RSERPOOL_TARGET_PSK_KEYS} its C{tcp:} form secured
        with TLS-PSK (RFC 5355) by the suite's key and identity for ASAP
        (or, with C{peer}, for ENRP).

        @raise TargetError: TLS-PSK asked for over another transport.
        """
        if self.psk_keys is None or description is None:
            return description
        from rserpool.transport.psk import PSKEndpoints

        if peer:
            keys = self.psk_peer_keys or self.psk_keys
            identity = self.psk_peer_identity or self.psk_identity
        else:
            keys, identity = self.psk_keys, self.psk_identity
        try:
            return PSKEndpoints(keys, identity).client(description)
        except ValueError as e:
            raise TargetError("RSERPOOL_TARGET_PSK_KEYS: %s" % (e,))

    def check_keys(self):
        """
        Read the TLS-PSK key files and find the identities to present.

        @raise TargetError: with a one-line reason.
        """
        if self.psk_keys is None:
            return
        from rserpool.transport.psk import pe_securer

        for name, keys, identity in (
                ("RSERPOOL_TARGET_PSK_KEYS", self.psk_keys, self.psk_identity),
                ("RSERPOOL_TARGET_PSK_PEER_KEYS", self.psk_peer_keys or self.psk_keys,
                 self.psk_peer_identity or self.psk_identity)):
            try:
                pe_securer(keys, identity)
            except ValueError as e:
                raise TargetError("%s: %s" % (name, e))
        self.client(self.asap)
        self.client(self.enrp, peer=True)

    def server(self, description):
        """
        The server endpoint string the suite's ENRP peer listens on:
        C{description}, or secured with TLS-PSK by the registrars' key file
        (the target dials the suite's peer with its own key).
        """
        if self.psk_keys is None:
            return description
        from rserpool.transport.psk import PSKEndpoints

        try:
            return PSKEndpoints(self.psk_peer_keys or self.psk_keys).server(description)
        except ValueError as e:
            raise TargetError("RSERPOOL_TARGET_PSK_KEYS: %s" % (e,))

    def source_addresses(self, count):
        """
        C{count} local addresses to send from as distinct sources, or
        C{None} when the target gives too few: those of
        C{RSERPOOL_TARGET_SOURCES}, else, for a target on a loopback
        address, 127.0.0.2 and on (every address of 127.0.0.0/8 is this
        host's) unless the suite speaks TLS-PSK.
        """
        if self.sources is not None:
            return self.sources[:count] if len(self.sources) >= count else None
        if self.psk_keys is not None:
            # Over TLS-PSK every connection of the suite presents one
            # identity: another loopback address is not another node to a
            # registrar that tells nodes apart by identity.
            return None
        host = endpoint_host(self.asap) if self.asap else None
        if host is not None and host.version == 4 and host.is_loopback:
            return tuple("127.0.0.%d" % (2 + i) for i in range(count))
        return None

    def environ(self):
        """
        This target as environment variables (the inverse of
        L{from_environ}, for a child process).
        """
        out = {}
        for name, (attribute, _convert, default, _help) in SETTINGS.items():
            value = getattr(self, attribute)
            if value is None or value == default:
                continue
            if attribute == "sources":
                value = ",".join(value)
            elif attribute == "announce":
                value = ":".join(str(v) for v in value if v != "")
            out[name] = str(value)
        return out


def endpoint_host(description):
    """
    The address a client endpoint string names (C{tcp:host=H:port=P},
    C{tcp:H:P}, C{sctp:host=H,H2:port=P}: the first), or C{None} when it
    names a host name or nothing parsable.

    @rtype: L{ipaddress.IPv4Address}, L{ipaddress.IPv6Address} or C{None}
    """
    from twisted.internet.endpoints import _parse

    try:
        args, kwargs = _parse(description)
    except Exception:
        return None
    host = kwargs.get("host")
    if host is None and len(args) >= 2:
        host = args[1]
    if not host:
        return None
    try:
        return ipaddress.ip_address(host.split(",")[0].strip("[]"))
    except ValueError:
        return None
