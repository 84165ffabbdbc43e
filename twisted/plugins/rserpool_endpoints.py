"""
Twisted endpoint string parsers of rserpool: C{sctp:...} (see
L{rserpool.transport.sctp}).
"""
from rserpool.transport.sctp import SCTPClientParser, SCTPServerParser

sctpServerParser = SCTPServerParser()
sctpClientParser = SCTPClientParser()
