"""
The Twisted services of a registrar, each with one job, composed by
L{RegistrarService} (which C{twistd enrp} builds, L{rserpool.tap}):

  - L{rserpool.services.listeners}: the ASAP and ENRP listeners;
  - L{rserpool.services.peering}: dialling ENRP peers, Presence multicast;
  - L{rserpool.services.announcing}: ASAP Server Announce;
  - L{rserpool.services.keys}: reloading TLS-PSK keys;
  - L{rserpool.services.reach}: reaching PEs adopted in a takeover;
  - L{rserpool.services.registrar_service}: the composition.

To embed a registrar in a Twisted application::

    from rserpool.services import RegistrarService, make_config

    registrar = RegistrarService(make_config(), asap_endpoints=["tcp:3863"])
    registrar.setServiceParent(application)
"""
from rserpool.services.announcing import AnnounceService, AnnounceSettings
from rserpool.transport.hosts import host_addresses, host_networks
from rserpool.services.keys import KeyReloadService
from rserpool.services.listeners import ListenerService, ListenFailed
from rserpool.services.peering import PeeringService, peer_endpoint, presence_from, \
    transport_endpoint
from rserpool.services.reach import PEReachService
from rserpool.services.registrar_service import RegistrarService, Wakeup, make_config, \
    new_server_id

__all__ = [
    "RegistrarService",
    "make_config",
    "new_server_id",
    "Wakeup",
    "AnnounceSettings",
    "AnnounceService",
    "KeyReloadService",
    "ListenerService",
    "ListenFailed",
    "PeeringService",
    "PEReachService",
    "host_addresses",
    "host_networks",
    "peer_endpoint",
    "presence_from",
    "transport_endpoint",
]
