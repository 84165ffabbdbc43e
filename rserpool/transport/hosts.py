"""
What the Twisted side needs to know of the host it runs on: its
interface addresses and networks (the default ENRP peer networks, the
addresses a wildcard listener stands for) and how to say where a
listener listens, in one line.
"""
import fcntl
import ipaddress
import socket
import struct

from rserpool.interfaces import normalize_address

__all__ = ["host_networks", "host_addresses", "where", "strerror"]


def where(address):
    """
    A listener's address for a log line: C{host:port}, and on the
    wildcard address the addresses of this host it stands for.
    """
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    port = getattr(address, "port", "")
    text = "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)
    try:
        wildcard = normalize_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard:
        # Say what the wildcard means on this host: the addresses PEs and
        # peers elsewhere can use.
        family = 6 if ":" in host else 4
        found = [str(a) for a in host_addresses() if a.version == family or
                 (family == 6 and _dual_stack_host())]
        text += "; every address: %s" % (", ".join(found) or "none found")
    return text


def _dual_stack_host():
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def _host_interfaces():
    """
    This host's interface addresses with their prefix lengths (Linux; an
    empty list where they cannot be read): the primary IPv4 address of
    each interface (SIOCGIFADDR, SIOCGIFNETMASK) and every IPv6 address
    (/proc/net/if_inet6).

    @return: a list of L{ipaddress} interfaces (C{IPv4Interface},
        C{IPv6Interface}).
    """
    out = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for name in names:
            request = struct.pack("256s", name[:15].encode())
            try:
                address = fcntl.ioctl(probe.fileno(), 0x8915, request)[20:24]
                mask = fcntl.ioctl(probe.fileno(), 0x891B, request)[20:24]
            except OSError:
                continue
            prefix = bin(int.from_bytes(mask, "big")).count("1")
            out.append(ipaddress.IPv4Interface((ipaddress.IPv4Address(address), prefix)))
    finally:
        probe.close()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    out.append(ipaddress.IPv6Interface(
                        (ipaddress.IPv6Address(int(fields[0], 16)), int(fields[2], 16))))
    except (OSError, ValueError):
        pass
    return out


def host_networks():
    """
    The networks this host's interfaces are on, loopback and IPv6
    link-local excepted (Linux; an empty tuple where they cannot be read):
    the registrars a registrar admits as ENRP peers by default.

    @return: a tuple of L{ipaddress} networks.
    """
    out = []
    for interface in _host_interfaces():
        if interface.ip.is_loopback or (interface.version == 6 and interface.ip.is_link_local):
            continue
        if interface.network not in out:
            out.append(interface.network)
    return tuple(out)


def host_addresses():
    """
    The IP addresses of this host's interfaces (Linux; an empty list
    where they cannot be read): the IPv4 address of each interface and
    every IPv6 address, loopback first.

    @return: a list of L{ipaddress} addresses.
    """
    out = [interface.ip for interface in _host_interfaces()]
    out.sort(key=lambda a: (a.version, not a.is_loopback))
    return out


def strerror(error):
    """
    The system's words for an C{OSError} (lower case), or the error as text.
    """
    text = getattr(error, "strerror", None)
    if text:
        return text.lower() if text[0].isupper() and text[1:2].islower() else text
    return str(error)
