"""
Logs a machine can read: log observer factories for C{twistd --logger}
(issue #16).

    twistd -n --logger rserpool.logs.json_stdout enrp ...

writes every log event as one JSON object a line (twisted.logger's
L{jsonFileLogObserver}, without the RFC 7464 record separator, so that
C{jq}, journald or a log shipper reads the lines as they are).  Besides
Twisted's own keys (C{log_format}, C{log_level}, C{log_namespace},
C{log_time}) an event carries the fields it was logged with; the events
about pool elements carry C{pool} (the pool handle as text), C{pe} (the
PE identifier, 8 hex digits) and, for rejections, removals, failures and
takeovers, C{cause}.  C{rserpool.logs.json_file} writes to the file named
by C{RSERPOOL_JSON_LOG} instead.  ``doc/operations.rst`` shows examples.
"""
import io
import os
import sys

from twisted.logger import jsonFileLogObserver

__all__ = ["json_stdout", "json_stderr", "json_file", "ENVIRONMENT"]

#: The variable that names C{json_file}'s file.
ENVIRONMENT = "RSERPOOL_JSON_LOG"


def _lines(stream):
    return jsonFileLogObserver(stream, recordSeparator="")


def json_stdout():
    """
    JSON lines on standard output (a twistd C{--logger} factory).
    """
    return _lines(sys.stdout)


def json_stderr():
    """
    JSON lines on standard error.
    """
    return _lines(sys.stderr)


def json_file():
    """
    JSON lines appended to the file C{$RSERPOOL_JSON_LOG}.

    @raise SystemExit: the variable is not set.
    """
    path = os.environ.get(ENVIRONMENT)
    if not path:
        raise SystemExit("rserpool.logs.json_file: set %s to the file to log to" % ENVIRONMENT)
    return _lines(io.open(path, "a", encoding="utf-8", buffering=1))
