"""
Transport mappings (draft-ietf-rserpool-service section 5): how ASAP, ENRP
and application data travel over a transport protocol.

Every mapping provides the interfaces of :mod:`rserpool.interfaces` (in
the core, since the state machines use them): what a state machine sees
of a connection (:class:`~rserpool.interfaces.IMessageConnection`) and of
its owner (:class:`~rserpool.interfaces.IMessageReceiver`), whatever the
mapping.

- :mod:`rserpool.transport.tcp`: the TCP mapping: plain ASAP/ENRP framed by
  their own length field, and the multiplexed control+data framing of
  Enhanced Mode (``doc/tcp-mapping.rst``).
- :mod:`rserpool.transport.multicast`: ASAP Server Announce over UDP
  multicast.

Mappings are chosen by Twisted endpoint strings (``tcp:3863``, later
``sctp:3863``), never hard-coded: only this package touches sockets.
"""
