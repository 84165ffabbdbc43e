"""
Human-readable renderings of decoded ASAP/ENRP messages: a one-line summary
and a full indented tree.
"""
import ipaddress

import attrs

from rserpool.codes import ErrorCause
from rserpool.wire import params as P
from rserpool.wire.messages import ADD_PE, DEL_PE

_NAMES = {
    "Registration": "Registration",
    "Deregistration": "Deregistration",
    "RegistrationResponse": "Registration Response",
    "DeregistrationResponse": "Deregistration Response",
    "HandleResolution": "Handle Resolution",
    "HandleResolutionResponse": "Handle Resolution Response",
    "EndpointKeepAlive": "Endpoint Keep Alive",
    "EndpointKeepAliveAck": "Endpoint Keep Alive Ack",
    "EndpointUnreachable": "Endpoint Unreachable",
    "ServerAnnounce": "Server Announce",
    "Cookie": "Cookie",
    "CookieEcho": "Cookie Echo",
    "BusinessCard": "Business Card",
    "ASAPError": "Error",
    "Presence": "Presence",
    "HandleTableRequest": "Handle Table Request",
    "HandleTableResponse": "Handle Table Response",
    "HandleUpdate": "Handle Update",
    "ListRequest": "List Request",
    "ListResponse": "List Response",
    "InitTakeover": "Init Takeover",
    "InitTakeoverAck": "Init Takeover Ack",
    "TakeoverServer": "Takeover Server",
    "ENRPError": "Error",
}


def message_name(message):
    """
    C{"ASAP Registration"}, C{"ENRP Presence"}, ...
    """
    return "%s %s" % (message.protocol.upper(), _NAMES[type(message).__name__])


def handle_text(handle):
    """
    A pool handle as text: quoted if printable ASCII, else hex.
    """
    try:
        text = handle.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + handle.hex()
    if text.isprintable():
        return repr(text)
    return "0x" + handle.hex()


def transport_text(t):
    """
    C{sctp 10.0.0.1,10.0.0.2:3863} and the like.
    """
    addrs = ",".join(
        ("[%s]" % a) if a.version == 6 and len(t.addresses) == 1 else str(a) for a in t.addresses
    )
    text = "%s %s:%d" % (t.protocol, addrs, t.port)
    if getattr(t, "transport_use", 0) == P.DATA_PLUS_CONTROL:
        text += " (data+control)"
    return text


def policy_text(p):
    """
    C{WeightedRandom(weight=7)}, or the hex type of an unknown policy.
    """
    if p.name is None:
        return "policy-0x%08x(%s)" % (p.policy_type, p.data.hex())
    fields = ",".join("%s=%d" % kv for kv in p.fields.items())
    return "%s(%s)" % (p.name, fields) if fields else p.name


def _cause_text(c):
    text = c.name
    if c.info:
        text += " info=%s" % c.info.hex()
    return text


def error_text(err):
    """
    The causes of an Operation Error, comma separated.
    """
    return ", ".join(_cause_text(c) for c in err.causes)


def _pe_text(pe):
    return "pe=%08x %s %s" % (pe.identifier, transport_text(pe.user_transport), policy_text(pe.policy))


def summary(message):
    """
    One line describing C{message}.
    """
    name = message_name(message)
    parts = [name]
    m = message
    if hasattr(m, "sender_id"):
        parts.append("%08x->%08x" % (m.sender_id, m.receiver_id))
    flags = [
        f
        for f in (
            "reject",
            "home",
            "reply_required",
            "own_children_only",
            "more_to_send",
            "takeover_suggested",
        )
        if getattr(m, f, False)
    ]
    if flags:
        parts.append("[%s]" % ",".join(flags))
    if hasattr(m, "server_id"):
        parts.append("server=%08x" % m.server_id)
    if hasattr(m, "target_id"):
        parts.append("target=%08x" % m.target_id)
    if hasattr(m, "action"):
        parts.append({ADD_PE: "ADD_PE", DEL_PE: "DEL_PE"}.get(m.action, "action=%d" % m.action))
    if hasattr(m, "pool_handle"):
        parts.append("handle=%s" % handle_text(m.pool_handle))
    if getattr(m, "identifier", None) is not None:
        parts.append("pe=%08x" % m.identifier)
    if getattr(m, "items", None) is not None:
        parts.append("items=%d" % m.items)
    if hasattr(m, "pool_element"):
        parts.append(_pe_text(m.pool_element))
    if getattr(m, "policy", None) is not None:
        parts.append(policy_text(m.policy))
    if hasattr(m, "pool_elements"):
        parts.append("%d PEs" % len(m.pool_elements))
        parts.extend("%08x" % pe.identifier for pe in m.pool_elements)
    if hasattr(m, "entries"):
        parts.append(
            "%d pools, %d PEs" % (len(m.entries), sum(len(e.pool_elements) for e in m.entries))
        )
    if hasattr(m, "checksum"):
        parts.append("checksum=0x%04x" % m.checksum)
    if hasattr(m, "server_information"):
        parts.append("at %s" % transport_text(m.server_information.transport))
    if hasattr(m, "servers"):
        parts.append("%d servers" % len(m.servers))
    if hasattr(m, "transports"):
        parts.extend(transport_text(t) for t in m.transports)
    if hasattr(m, "cookie"):
        parts.append("cookie=%d bytes" % len(m.cookie))
    if getattr(m, "error", None) is not None:
        parts.append("error: %s" % error_text(m.error))
    if m.unrecognized:
        parts.append("(%d unrecognized parameters to report)" % len(m.unrecognized))
    return " ".join(parts)


def _value_lines(name, value, indent):
    pad = "  " * indent
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ["%s%s: %s" % (pad, name, value)]
    if isinstance(value, P.Policy):
        lines = ["%s%s: %s (0x%08x)" % (pad, name, value.name or "unknown policy", value.policy_type)]
        for k, v in value.fields.items():
            lines.append("%s  %s: %d (0x%08x)" % (pad, k, v, v))
        if value.data:
            lines.append("%s  data: %s" % (pad, value.data.hex()))
        return lines
    if isinstance(value, P.Cause):
        line = "%s%s: %s (0x%04x)" % (pad, name, value.name, value.code)
        lines = [line]
        if value.info:
            lines.append("%s  info: %s" % (pad, value.info.hex()))
        return lines
    if attrs.has(type(value)):
        lines = ["%s%s: %s" % (pad, name, type(value).__name__)]
        for f in attrs.fields(type(value)):
            if f.name == "unrecognized":
                continue
            lines.extend(_value_lines(f.name, getattr(value, f.name), indent + 1))
        return lines
    if isinstance(value, tuple):
        if not value:
            return ["%s%s: (none)" % (pad, name)]
        lines = []
        for i, item in enumerate(value):
            lines.extend(_value_lines("%s[%d]" % (name, i), item, indent))
        return lines
    if isinstance(value, bytes):
        if name == "pool_handle":
            return ["%s%s: %s" % (pad, name, handle_text(value))]
        return ["%s%s: %s (%d bytes)" % (pad, name, value.hex(), len(value))]
    if isinstance(value, bool) or value is None:
        return ["%s%s: %s" % (pad, name, value)]
    if isinstance(value, int):
        if name in ("port", "registration_life", "items", "action", "transport_use"):
            return ["%s%s: %d" % (pad, name, value)]
        return ["%s%s: 0x%x (%d)" % (pad, name, value, value)]
    return ["%s%s: %r" % (pad, name, value)]


def tree(message):
    """
    Every field of C{message}, one per line, nested parameters indented.
    """
    lines = [message_name(message)]
    for f in attrs.fields(type(message)):
        if f.name == "unrecognized":
            continue
        lines.extend(_value_lines(f.name, getattr(message, f.name), 1))
    for tlv in message.unrecognized:
        lines.append("  unrecognized parameter (report): %s" % tlv.hex())
    return "\n".join(lines)


__all__ = [
    "ErrorCause",
    "error_text",
    "handle_text",
    "message_name",
    "policy_text",
    "summary",
    "transport_text",
    "tree",
]
