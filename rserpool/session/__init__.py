"""
Enhanced Mode (draft-ietf-rserpool-service sections 3.3 and 4, RFC 5352
section 4): control and data multiplexed on one connection, state cookies,
failover callback, business cards; sans I/O.

 - L{rserpool.session.core}: the session state machines.
 - L{rserpool.session.sealing}: sealed state cookies (L{CookieSealer}).

The Twisted side lives with the other adapters, in L{rserpool.transport}:
L{rserpool.transport.enhanced} (L{PoolSession
<rserpool.transport.enhanced.PoolSession>} for pool users,
L{PESessionFactory <rserpool.transport.enhanced.PESessionFactory>} for pool
elements, L{reach_business_card
<rserpool.transport.enhanced.reach_business_card>}) and
L{rserpool.transport.channel} (how a session's frames travel).  This
package loads no reactor (issue #15, C{tests/test_architecture.py}).

See ``doc/session.rst``.
"""
from rserpool.session.core import CLOSE_PPID, DATA_PPID, PESessionCore, PUSessionCore
from rserpool.session.sealing import CookieRejected, CookieSealer, Keyring, load_keyring

__all__ = [
    "CLOSE_PPID",
    "CookieRejected",
    "CookieSealer",
    "DATA_PPID",
    "Keyring",
    "PESessionCore",
    "PUSessionCore",
    "business_card",
    "load_keyring",
]


def business_card(pool_handle, pool_elements=(), policy=None):
    """
    The Business Card a PU that is also a PE sends (RFC 5352 section 2.2.13):
    its pool and, in order of preference, the PEs that may stand in for it.

    @param pool_handle: the handle of the pool this PU belongs to.
    @param pool_elements: L{rserpool.wire.PoolElement} parameters, or
        L{rserpool.pe.PoolElementService}s (their registration is used).
    @rtype: L{rserpool.wire.BusinessCard}
    """
    from rserpool.wire import BusinessCard

    if isinstance(pool_handle, str):
        pool_handle = pool_handle.encode("utf-8")
    elements = []
    for pe in pool_elements:
        machine = getattr(pe, "machine", None)
        if machine is not None:
            pe = machine.registration().pool_element
        elements.append(pe)
    return BusinessCard(pool_handle, tuple(elements), policy)

