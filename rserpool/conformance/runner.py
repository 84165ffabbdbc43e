"""
C{rserpool conformance}: run the suite against a target and write its
results (a JUnit XML file, a Markdown table, a plain outcome list).

The suite runs in this process under trial's runner (the same test cases
C{python -m twisted.trial rserpool.conformance} runs), with the target put
into the environment; a reporter records each test's outcome against the
requirement it names.  The exit status is 0 when every MUST requirement
that was tested is met, 1 otherwise (2 for a usage error).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

from rserpool.conformance.report import (
    Result,
    classify_skip,
    compare,
    junit_xml,
    markdown,
    outcomes_text,
    parse_outcomes,
    rst_table,
    summary,
)
from rserpool.conformance.requirements import collect, format_list, parse
from rserpool.conformance.target import SETTINGS, Target, TargetError

__all__ = ["MODULES", "add_parser", "main", "run", "load"]

PACKAGE = "rserpool.conformance"
#: The test modules, by what they test.
MODULES = {
    "asap": PACKAGE + ".test_asap",
    "enrp": PACKAGE + ".test_enrp",
    "pe": PACKAGE + ".test_pe",
    "pu": PACKAGE + ".test_pu",
}


def _requirement(test):
    method = getattr(type(test), getattr(test, "_testMethodName", ""), None)
    requirement = getattr(method, "requirement", None)
    if requirement is None:
        requirement = parse(getattr(method, "__doc__", None), test.id())
    return requirement


def _failure_text(failure):
    value = getattr(failure, "value", None)
    if value is None and isinstance(failure, tuple):
        value = failure[1]
    name = type(value).__name__ if value is not None else "failure"
    text = str(value) if value is not None else str(failure)
    if name in ("AssertionError", "NoAnswer", "FailTest"):
        return text
    return "%s: %s" % (name, text)


def recording_reporter(results, clock=time.monotonic):
    """
    A trial reporter class (a C{TreeReporter}, which prints as trial does)
    that also appends a L{Result} to C{results} for every test.
    """
    from twisted.trial.reporter import TreeReporter

    class RecordingReporter(TreeReporter):
        def startTest(self, test):
            self._started = clock()
            self._outcome = None
            TreeReporter.startTest(self, test)

        def _record(self, test, outcome, detail=""):
            if self._outcome is None:
                self._outcome = (outcome, detail)

        def addSuccess(self, test):
            TreeReporter.addSuccess(self, test)
            self._record(test, "pass")

        def addFailure(self, test, fail):
            TreeReporter.addFailure(self, test, fail)
            self._record(test, "fail", _failure_text(fail))

        def addError(self, test, error):
            TreeReporter.addError(self, test, error)
            self._record(test, "error", _failure_text(error))

        def addSkip(self, test, reason):
            TreeReporter.addSkip(self, test, reason)
            self._record(test, classify_skip(reason), str(reason))

        def addExpectedFailure(self, test, error, todo=None):
            TreeReporter.addExpectedFailure(self, test, error, todo)
            self._record(test, "fail", _failure_text(error))

        def addUnexpectedSuccess(self, test, todo=None):
            TreeReporter.addUnexpectedSuccess(self, test, todo)
            self._record(test, "pass")

        def stopTest(self, test):
            TreeReporter.stopTest(self, test)
            outcome, detail = self._outcome or ("error", "no outcome")
            if outcome == "fail" and not _requirement(test).mandatory:
                # A test of a SHOULD that fails outside the case's own
                # conversion (a timeout): not met, not a failure.
                outcome = "not-met"
            results.append(Result(test.id(), _requirement(test), outcome, detail,
                                  clock() - self._started))

    return RecordingReporter


def available():
    """
    The test modules of L{MODULES} that exist, by what they test.
    """
    import importlib.util

    return {k: v for k, v in MODULES.items() if importlib.util.find_spec(v) is not None}


def load(names):
    """
    The trial suite of C{names} (module or test names).
    """
    from twisted.trial.runner import TestLoader

    return TestLoader().loadByNames(list(names), recurse=True)


def run(environ, names, stream=None):
    """
    Run the tests C{names} against the target described by C{environ}
    (C{RSERPOOL_TARGET_*} variables), in this process.

    @return: the list of L{Result}s.
    """
    from twisted.trial.runner import TrialRunner

    results = []
    saved = {k: v for k, v in os.environ.items() if k.startswith("RSERPOOL_TARGET_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(environ)
    work = tempfile.mkdtemp(prefix="rserpool-conformance-")
    cwd = os.getcwd()
    try:
        suite = load(names)
        runner = TrialRunner(recording_reporter(results), stream=stream or sys.stdout,
                             workingDirectory=os.path.join(work, "trial"))
        runner.run(suite)
    finally:
        os.chdir(cwd)
        for k in list(os.environ):
            if k.startswith("RSERPOOL_TARGET_"):
                del os.environ[k]
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)
    return results


def add_parser(sub):
    """
    Add C{conformance} to the C{rserpool} command's subparsers.
    """
    p = sub.add_parser(
        "conformance", help="test a registrar or pool element over the wire (RFC conformance)",
        description="Run the conformance suite (rserpool.conformance) against a registrar's "
                    "ASAP and ENRP endpoints or a pool element, and write a JUnit XML file "
                    "and a Markdown table.  RSERPOOL_TARGET_* variables of the environment "
                    "are used too; the options win.  Exit status 0 when every MUST "
                    "requirement tested is met.")
    configure(p)
    p.set_defaults(func=_command)
    return p


def configure(p):
    p.add_argument("--asap", metavar="ENDPOINT",
                   help="the registrar's ASAP endpoint: tcp:host=H:port=P or sctp:host=H:port=P")
    p.add_argument("--enrp", metavar="ENDPOINT",
                   help="the registrar's ENRP endpoint (it must admit this host as a peer)")
    p.add_argument("--pe", metavar="COMMAND",
                   help="the command that starts the pool element under test; {registrar} "
                        "and {registrar2} stand for the harness's registrars, {handle} for the "
                        "pool handle")
    p.add_argument("--pu", metavar="COMMAND",
                   help="the command that starts the pool user under test; {registrar} "
                        "stands for the harness's registrar, {handle} for the pool handle")
    p.add_argument("--keep-alive", type=float, metavar="SECONDS",
                   help="the registrar's keep-alive interval [5]")
    p.add_argument("--keep-alive-timeout", type=float, metavar="SECONDS",
                   help="the registrar's keep-alive timeout [5]")
    p.add_argument("--max-bad-pe-report", type=int, metavar="N",
                   help="the registrar's MAX-BAD-PE-REPORT [3]")
    p.add_argument("--psk-keys", metavar="FILE",
                   help="reach the registrar's tcp: endpoints over TLS-PSK (RFC 5355) with "
                        "a key of FILE (IDENTITY HEXKEY a line)")
    p.add_argument("--psk-identity", metavar="ID",
                   help="with --psk-keys: the identity to present [the file's only one]")
    p.add_argument("--psk-peer-keys", metavar="FILE",
                   help="with --psk-keys: the registrars' key file, for ENRP [--psk-keys]")
    p.add_argument("--psk-peer-identity", metavar="ID",
                   help="with --psk-keys: the identity the suite's ENRP peer presents")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any RSERPOOL_TARGET_NAME setting (e.g. --set SOURCES=127.0.0.2,"
                        "127.0.0.3); see doc/conformance.rst")
    p.add_argument("--only", action="append", default=[], metavar="TEST",
                   help="run only this test, class or module (e.g. test_asap.PolicyTests); "
                        "repeatable")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML file")
    p.add_argument("--report", metavar="FILE", help="write a Markdown table")
    p.add_argument("--outcomes", metavar="FILE",
                   help="write the outcomes, one test a line (a known-results file)")
    p.add_argument("--expect", metavar="FILE",
                   help="compare the outcomes with a known-results file; differences fail")
    p.add_argument("--title", default=None, help="the report's title")
    p.add_argument("--list", action="store_true",
                   help="print the requirements the suite tests, and exit")
    p.add_argument("--markdown", action="store_true", help="with --list: as a Markdown table")
    p.add_argument("--rst", action="store_true",
                   help="with --list: as a reStructuredText table (doc/conformance.rst)")
    p.add_argument("--column", action="append", default=[], metavar="LABEL=FILE[,FILE...]",
                   help="with --list --rst: a column of the outcomes of known-results files")


def _environ(args, base):
    env = {k: v for k, v in base.items() if k.startswith("RSERPOOL_TARGET_")}
    for option, name in (("asap", "RSERPOOL_TARGET_ASAP"), ("enrp", "RSERPOOL_TARGET_ENRP"),
                         ("pe", "RSERPOOL_TARGET_PE"), ("pu", "RSERPOOL_TARGET_PU"),
                         ("keep_alive", "RSERPOOL_TARGET_KEEPALIVE"),
                         ("keep_alive_timeout", "RSERPOOL_TARGET_KEEPALIVE_TIMEOUT"),
                         ("max_bad_pe_report", "RSERPOOL_TARGET_MAX_BAD_PE_REPORT"),
                         ("psk_keys", "RSERPOOL_TARGET_PSK_KEYS"),
                         ("psk_identity", "RSERPOOL_TARGET_PSK_IDENTITY"),
                         ("psk_peer_keys", "RSERPOOL_TARGET_PSK_PEER_KEYS"),
                         ("psk_peer_identity", "RSERPOOL_TARGET_PSK_PEER_IDENTITY")):
        value = getattr(args, option)
        if value is not None:
            env[name] = str(value)
    for item in args.set:
        name, sep, value = item.partition("=")
        name = name.strip().upper()
        if not name.startswith("RSERPOOL_TARGET_"):
            name = "RSERPOOL_TARGET_" + name
        if not sep or name not in SETTINGS:
            raise TargetError("--set %s: not a setting (known: %s)" % (
                item, ", ".join(n[len("RSERPOOL_TARGET_"):] for n in SETTINGS)))
        env[name] = value
    return env


def _names(args, env):
    if args.only:
        return [n if n.startswith(PACKAGE + ".") else PACKAGE + "." + n for n in args.only]
    modules = available()
    names = [modules[k] for k in ("asap", "enrp", "pe", "pu")
             if k in modules and env.get("RSERPOOL_TARGET_" + k.upper())]
    return names


def _command(args, out, err):
    if args.list:
        pairs = collect(load(list(available().values())))
        if args.rst:
            columns = []
            for item in args.column:
                label, _, paths = item.partition("=")
                outcomes = {}
                for path in paths.split(","):
                    with open(path, encoding="utf-8") as f:
                        outcomes.update(parse_outcomes(f.read()))
                columns.append((label, outcomes))
            out.write(rst_table(pairs, columns))
        else:
            out.write(format_list(pairs, markdown=args.markdown))
        return 0
    try:
        env = _environ(args, os.environ)
        target = Target.from_environ(env)
        target.check_keys()
    except TargetError as e:
        err.write("rserpool conformance: %s\n" % e)
        return 2
    names = _names(args, env)
    if not names:
        err.write("rserpool conformance: nothing to test: give --asap, --enrp, --pe or --pu\n")
        return 2
    results = run(env, names, stream=out)
    described = [(k, v) for k, v in sorted(target.environ().items())]
    if args.junit:
        with open(args.junit, "wb") as f:
            f.write(junit_xml(results, properties=described))
    if args.report:
        title = args.title or "Conformance of %s" % (target.asap or target.enrp or target.pe
                                                            or target.pu)
        with open(args.report, "w", encoding="utf-8") as f:
            f.write(markdown(results, title, described))
    if args.outcomes:
        with open(args.outcomes, "w", encoding="utf-8") as f:
            f.write(outcomes_text(results))
    counts = summary(results)
    status = 0 if not counts["fail"] and not counts["error"] else 1
    err.write("rserpool conformance: %s\n" % ", ".join(
        "%d %s" % (counts[o], o) for o in counts))
    if args.expect:
        with open(args.expect, encoding="utf-8") as f:
            differences = compare(results, parse_outcomes(f.read()))
        if differences:
            err.write("rserpool conformance: %d outcome(s) differ from %s:\n" % (
                len(differences), args.expect))
            for line in differences:
                err.write("  %s\n" % line)
            return 1
        return 0
    return status


def main(argv=None, out=None, err=None):
    """
    C{python -m rserpool.conformance}: the same as C{rserpool conformance}.
    """
    parser = argparse.ArgumentParser(prog="python -m rserpool.conformance")
    configure(parser)
    args = parser.parse_args(argv)
    return _command(args, out or sys.stdout, err or sys.stderr)
