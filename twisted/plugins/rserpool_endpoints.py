"""
Twisted endpoint string parsers of rserpool: C{sctp:...} (see
L{rserpool.transport.sctp}) and C{psk:...}, TLS with pre-shared keys (see
L{rserpool.transport.psk}).
"""
from rserpool.transport.psk import PSKClientParser, PSKServerParser
from rserpool.transport.sctp import SCTPClientParser, SCTPServerParser

sctpServerParser = SCTPServerParser()
sctpClientParser = SCTPClientParser()
pskServerParser = PSKServerParser()
pskClientParser = PSKClientParser()
