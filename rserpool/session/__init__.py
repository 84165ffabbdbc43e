"""
Enhanced Mode (draft-ietf-rserpool-service sections 3.3 and 4, RFC 5352
section 4): control and data multiplexed on one connection, state cookies,
failover callback, business cards.

 - L{rserpool.session.core}: the sans-IO session state.
 - L{rserpool.session.protocol}: the Twisted side: L{PoolSession} (pool
   user), L{PESessionFactory} (pool element).
 - L{rserpool.session.sealing}: sealed state cookies (L{CookieSealer}).

See ``doc/session.rst``.
"""
from rserpool.session.core import CLOSE_PPID, DATA_PPID, PESessionCore, PUSessionCore
from rserpool.session.sealing import CookieRejected, CookieSealer, Keyring, load_keyring

#: The Twisted side (L{rserpool.session.protocol}), loaded when first
#: named, so that the sans-IO core (L{rserpool.session.core}) loads without
#: a reactor (issue #15: the core knows no reactor).
_TWISTED_SIDE = ("PESessionFactory", "PoolSession", "SessionFailed", "SessionTransport",
                 "pool_element_infos")

__all__ = [
    "CLOSE_PPID",
    "CookieRejected",
    "CookieSealer",
    "DATA_PPID",
    "Keyring",
    "PESessionCore",
    "PUSessionCore",
    "PESessionFactory",
    "PoolSession",
    "SessionFailed",
    "SessionTransport",
    "business_card",
    "load_keyring",
    "pool_element_infos",
    "reach_business_card",
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


def __getattr__(name):
    if name in _TWISTED_SIDE:
        from rserpool.session import protocol

        return getattr(protocol, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def reach_business_card(reactor, card, factory, pool_user=None, **options):
    """
    Reach a PE equivalent to a peer that sent C{card} (services draft
    section 3.3): the PEs the card lists, in order, then (with a
    C{pool_user}) any PE of the card's pool.

    @return: a L{Deferred} firing with C{factory}'s protocol, connected
        through a L{PoolSession}.
    """
    from rserpool.session.protocol import PoolSession, pool_element_infos

    session = PoolSession(reactor, pool_user, card.pool_handle, factory,
                          candidates=pool_element_infos(card), **options)
    return session.connect()
