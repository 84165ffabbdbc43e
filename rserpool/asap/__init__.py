"""
ASAP (RFC 5352) state machines, sans I/O.

- :mod:`rserpool.asap.registrar`: the registrar's side
  (:class:`~rserpool.asap.registrar.ASAPRegistrar`).
- :mod:`rserpool.asap.pool_element`, :mod:`rserpool.asap.pool_user`: the
  pool element's and the pool user's side.
- :mod:`rserpool.asap.hunt`: the registrar hunt both of them run (RFC 5352
  section 3.6).
- :mod:`rserpool.asap.announce`: Server Announce, sent by registrars and
  learned by PEs and PUs.
- :mod:`rserpool.asap.scope`: address scopes for the registration rules.
"""
