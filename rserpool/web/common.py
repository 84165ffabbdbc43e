"""
Small helpers shared by the registrar's monitor and its page.
"""

__all__ = ["handle_text", "pe_matches", "arg", "int_arg", "hex_id"]


def handle_text(handle):
    """
    A pool handle for people and JSON: UTF-8, undecodable bytes escaped.
    """
    return bytes(handle).decode("utf-8", "backslashreplace")


def hex_id(number):
    return "%08x" % number


def arg(request, name, default=None):
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    return values[0]


def int_arg(request, name, default, low, high):
    try:
        value = int(arg(request, name, b"") or default)
    except ValueError:
        value = default
    return max(low, min(high, value))


def pe_matches(pe, query):
    """
    Whether the filter C{query} (words, all of which must match) matches a
    PE: its identifier, addresses, port, pool handle, home or policy.
    """
    if not query:
        return True
    wire = pe.user_transport.wire
    text = " ".join([
        hex_id(pe.pe_id), handle_text(pe.handle), " ".join(str(a) for a in wire.addresses),
        str(wire.port), hex_id(pe.home_registrar), pe.policy.name, wire.protocol,
    ]).lower()
    return all(word in text for word in query.lower().split())
