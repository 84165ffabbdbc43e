"""
ASAP (RFC 5352) state machines, sans I/O.

- :mod:`rserpool.asap.registrar`: the registrar's side
  (:class:`~rserpool.asap.registrar.ASAPRegistrar`).
- :mod:`rserpool.asap.announce`: Server Announce, sent by registrars and
  learned by PEs and PUs.
- :mod:`rserpool.asap.scope`: address scopes for the registration rules.
"""
