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
- :mod:`rserpool.transport.sctp`, :mod:`rserpool.transport.sctp_messages`:
  the kernel's SCTP as Twisted endpoints, and the SCTP mapping of ASAP and
  ENRP (one message per SCTP message, told apart by PPID).
- :mod:`rserpool.transport.multicast`: ASAP Server Announce over UDP
  multicast.
- :mod:`rserpool.transport.enhanced`, :mod:`rserpool.transport.channel`:
  the Twisted side of the Enhanced Mode session layer, whose sans-IO
  machines are :mod:`rserpool.session`: the pool user's failover session
  and the pool element's session factory, and how a session's frames
  travel (the multiplexed framing over TCP and TLS, SCTP messages over
  SCTP).

Mappings are chosen by Twisted endpoint strings (``tcp:3863``,
``sctp:3863``, ``psk:...``), never hard-coded: only this package touches
sockets.
"""
