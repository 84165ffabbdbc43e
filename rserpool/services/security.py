"""
The RFC 5355 rules a registrar's configuration must keep, checked before
anything listens: every registration and peer update secured or none
(section 2.15.3), and the registrars' keys kept apart from those of PEs
and pool users (section 2.5).  C{twistd enrp} checks its options here
(L{rserpool.tap}); L{rserpool.services.RegistrarService} refuses the
same mistakes when embedded (L{check_enrp_keys}).
"""
import os

from rserpool.enrp.trust import endpoint_arguments
from rserpool.services.peering import peer_endpoint
from rserpool.transport.psk import KeyFileError, PSKEndpoints, is_secure, load_keys

__all__ = ["InsecureConfiguration", "check_security", "check_enrp_keys"]


class InsecureConfiguration(ValueError):
    """
    A configuration that RFC 5355 rules out; the message is one line that
    says why and what to do instead.
    """


def check_enrp_keys(enrp_endpoint, psk):
    """
    RFC 5355 section 2.5: registrars authenticate each other; a key handed
    to PEs and pool users must not make a registrar.  ENRP over TLS-PSK
    needs a key file of the registrars' own.

    @param enrp_endpoint: the ENRP listener's endpoint string, or C{None}.
    @param psk: a L{PSKEndpoints}, or C{None}.
    @raise InsecureConfiguration: ENRP on, C{psk} given, and no separate
        key file for the registrars.
    """
    if enrp_endpoint and psk is not None and (
            psk.peer_keys is None or os.path.realpath(psk.peer_keys) ==
            os.path.realpath(psk.keys)):
        raise InsecureConfiguration(
            "ENRP over TLS-PSK needs a key file of the registrars' own (--psk-peer-keys), "
            "not the PEs' and pool users' %s (or turn ENRP off with --enrp none)" % psk.keys)


def check_security(settings):
    """
    RFC 5355 section 2.15.3: a registrar's handlespace holds either only
    registrations and peer updates that came over secured connections, or
    none.  With C{psk-keys}, every endpoint is secured with TLS-PSK; without
    it, the endpoints given must all be secured (C{psk:}, C{ssl:}, C{tls:})
    or all not.

    @param settings: C{twistd enrp}'s settings (L{rserpool.tap.Options}):
        C{asap}, C{enrp}, C{peer}, C{psk-keys}, C{psk-identity},
        C{psk-peer-keys}.
    @return: a L{PSKEndpoints} for C{psk-keys}, or C{None}.
    @raise InsecureConfiguration: with a one-line reason.
    """
    path = settings.get("psk-keys")
    identity = settings.get("psk-identity")
    peer_path = settings.get("psk-peer-keys")
    if path is None:
        if identity is not None or peer_path is not None:
            raise InsecureConfiguration("--psk-identity and --psk-peer-keys need --psk-keys")
        endpoints = settings["asap"] + ([settings["enrp"]] if settings["enrp"] else []) \
            + [peer_endpoint(p) for p in settings["peer"]]
        secured = [d for d in endpoints if is_secure(d)]
        if secured and len(secured) != len(endpoints):
            plain = [d for d in endpoints if not is_secure(d)]
            raise InsecureConfiguration(
                "secured and unsecured endpoints mixed ({} and {}): RFC 5355 wants every "
                "registration and peer update secured, or none; use --psk-keys or secure "
                "them all".format(secured[0], plain[0]))
        if settings["enrp"]:
            _check_apart([_keys_of(d) for d in settings["asap"]], _keys_of(settings["enrp"]),
                         "the ENRP listener's keys= file")
        return None
    endpoints = PSKEndpoints(path, identity, peer_path)
    try:
        load_keys(path)
        keys = load_keys(endpoints.peer_file)
    except KeyFileError as e:
        raise InsecureConfiguration(str(e)) from None
    if identity is None:
        if settings["enrp"] is not None and len(keys) > 1:
            raise InsecureConfiguration(
                "{}: the file holds {} identities; say with --psk-identity which one this "
                "registrar presents to its ENRP peers".format(endpoints.peer_file, len(keys)))
    elif identity.encode("ascii", "replace") not in keys:
        raise InsecureConfiguration("--psk-identity: no identity {!r} in {}".format(
            identity, endpoints.peer_file))
    for peer in settings["peer"]:
        try:
            endpoints.client(peer_endpoint(peer))
        except ValueError as e:
            raise InsecureConfiguration("--peer: {}".format(e)) from None
    if settings["enrp"] is not None:
        # RFC 5355 section 2.5: registrars authenticate each other.  A key
        # of the PEs' and pool users' file must not open ENRP.
        if peer_path is None:
            raise InsecureConfiguration(
                "--psk-keys with ENRP on needs --psk-peer-keys, a key file of the registrars "
                "only: otherwise every PE and pool user holding a key could act as a "
                "registrar (or turn ENRP off with --enrp none)")
        _check_apart([path], peer_path, "--psk-peer-keys")
    return endpoints


def _keys_of(description):
    # The keys= file of a psk: endpoint string, or None.
    prefix, _, keywords = endpoint_arguments(description)
    return keywords.get("keys") if prefix == "psk" else None


def _check_apart(asap_files, enrp_file, what):
    """
    The key file of ENRP shares neither a file nor an identity with those
    of ASAP (RFC 5355 section 2.5: a PE's or pool user's key never makes
    a registrar).

    @raise InsecureConfiguration: with a one-line reason.
    """
    if enrp_file is None:
        return
    try:
        enrp_keys = load_keys(enrp_file)
        for path in asap_files:
            if path is None:
                continue
            if os.path.realpath(path) == os.path.realpath(enrp_file):
                raise InsecureConfiguration(
                    "{} is {}, the PEs' and pool users' key file: give the registrars a key "
                    "file of their own".format(what, path))
            shared = sorted(set(load_keys(path)) & set(enrp_keys))
            if shared:
                raise InsecureConfiguration(
                    "identity {!r} is both in {} and in {}: a PE or pool user holding it could "
                    "act as a registrar; keep the registrars' identities apart".format(
                        shared[0].decode("ascii", "replace"), path, enrp_file))
    except KeyFileError as e:
        raise InsecureConfiguration(str(e)) from None
