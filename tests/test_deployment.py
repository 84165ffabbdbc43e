"""
Tests of the deployment files: the systemd units and the example
configuration under C{doc/systemd/}, and the command lines that
C{doc/deployment.rst} shows, so that neither drifts from the code.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial import unittest

from rserpool import cli, tap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "doc", "deployment.rst")
SYSTEMD = os.path.join(ROOT, "doc", "systemd")
REGISTRAR_UNIT = "rserpool-registrar.service"
PE_UNIT = "rserpool-pe@.service"
#: The instance of the PE template unit the tests use, and its file.
PE_INSTANCE = "rserpool-pe@EchoPool.service"
PE_ENV = "pe-EchoPool.env"
EXAMPLE_CONFIG = os.path.join(SYSTEMD, "enrp.toml")

#: Where the units expect the virtualenv's scripts.
UNIT_BIN = "/opt/rserpool/venv/bin/"
#: Where this interpreter's scripts are: the tests run as
#: C{.venv/bin/python -m twisted.trial}, next to C{.venv/bin/twistd}.
HERE_BIN = os.path.dirname(sys.executable)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


# -- unit files -------------------------------------------------------------


def read_unit(path):
    """
    Read a systemd unit file.

    @return: a C{dict} from section name to a list of C{(key, value)}, in
        file order (keys such as C{Environment} may repeat).
    """
    sections = {}
    current = None
    with open(path) as f:
        lines = f.read().splitlines()
    logical = []
    for line in lines:
        if logical and logical[-1].endswith("\\"):
            logical[-1] = logical[-1][:-1] + " " + line.strip()
        else:
            logical.append(line)
    for line in logical:
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        if text.startswith("[") and text.endswith("]"):
            current = sections.setdefault(text[1:-1], [])
            continue
        key, _, value = text.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def localize(source, directory, bin_dir=HERE_BIN):
    """
    Copy a unit into C{directory} with the virtualenv paths of a deployment
    (L{UNIT_BIN}) replaced by this interpreter's, since C{systemd-analyze
    verify} checks that the programs exist.

    @return: the copy's path.
    """
    with open(source) as f:
        text = f.read()
    if UNIT_BIN not in text:
        raise AssertionError("%s does not run programs from %s" % (source, UNIT_BIN))
    target = os.path.join(directory, os.path.basename(source))
    with open(target, "w") as f:
        f.write(text.replace(UNIT_BIN, bin_dir.rstrip("/") + "/"))
    return target


def verify(directory, name):
    """
    Run C{systemd-analyze verify} on unit C{name} (for a template, an
    instance of it) of C{directory}.

    @return: a list of problems, empty when the unit is fine: the exit
        status if it is not 0, and whatever the tool printed (it prints
        nothing for a good unit; warnings such as an unknown key or a bad
        value leave the exit status at 0).
    """
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C")
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", os.path.join(directory, name)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120)
    problems = []
    if proc.returncode != 0:
        problems.append("exit status %d" % proc.returncode)
    output = proc.stdout.decode("utf-8", "replace").strip()
    if output:
        problems.append(output)
    return problems


def _needs_systemd_analyze(test):
    if SYSTEMD_ANALYZE is None:
        test.skip = ("systemd-analyze is not on PATH (Debian: apt-get install systemd); "
                     "the units are not verified")
    return test


def _needs_scripts(test):
    missing = [p for p in ("twistd", "rserpool")
               if not os.access(os.path.join(HERE_BIN, p), os.X_OK)]
    if missing and not getattr(test, "skip", None):
        test.skip = ("no %s next to %s: run the tests with the virtualenv's python "
                     "(.venv/bin/python -m twisted.trial)" % (" or ".join(missing), sys.executable))
    return test


def _needs_kill(test):
    if not os.access("/bin/kill", os.X_OK) and not getattr(test, "skip", None):
        test.skip = ("/bin/kill is missing (Debian: apt-get install procps); the registrar "
                     "unit's ExecReload runs it")
    return test


class UnitVerifyTests(unittest.TestCase):
    """
    C{systemd-analyze verify} accepts the units, with the programs of this
    virtualenv in place of C{/opt/rserpool/venv}, and without a word.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    @_needs_kill
    @_needs_scripts
    @_needs_systemd_analyze
    def test_registrar(self):
        localize(os.path.join(SYSTEMD, REGISTRAR_UNIT), self.directory)
        self.assertEqual(verify(self.directory, REGISTRAR_UNIT), [])

    @_needs_scripts
    @_needs_systemd_analyze
    def test_pool_element(self):
        """
        The template, verified as an instance (C{%I} and C{%i} expanded).
        """
        localize(os.path.join(SYSTEMD, PE_UNIT), self.directory)
        self.assertEqual(verify(self.directory, PE_INSTANCE), [])

    def _broken(self, change):
        path = localize(os.path.join(SYSTEMD, REGISTRAR_UNIT), self.directory)
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(change(text))
        return verify(self.directory, REGISTRAR_UNIT)

    @_needs_kill
    @_needs_scripts
    @_needs_systemd_analyze
    def test_missing_program(self):
        """
        A unit whose program does not exist fails: the exit status says so.
        """
        problems = self._broken(lambda t: t.replace("/twistd ", "/no-such-twistd "))
        self.assertIn("exit status 1", problems)
        self.assertIn("no-such-twistd", problems[-1])

    @_needs_kill
    @_needs_scripts
    @_needs_systemd_analyze
    def test_unknown_setting(self):
        """
        A misspelt setting or a bad value is only a warning for systemd
        (exit status 0), and still a failure here.
        """
        problems = self._broken(lambda t: t.replace("ProtectHome=yes", "ProtectHomes=yes"))
        self.assertEqual(len(problems), 1)
        self.assertIn("ProtectHomes", problems[0])
        problems = self._broken(lambda t: t.replace("ProtectSystem=strict",
                                                    "ProtectSystem=strictly"))
        self.assertEqual(len(problems), 1)
        self.assertIn("strictly", problems[0])


class UnitContentTests(unittest.TestCase):
    """
    The units do what doc/deployment.rst says they do.
    """

    def test_registrar_unit(self):
        unit = read_unit(os.path.join(SYSTEMD, REGISTRAR_UNIT))
        service = dict(unit["Service"])
        self.assertEqual(service["User"], "rserpool")
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["ExecReload"], "/bin/kill -HUP $MAINPID")
        for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                           ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                           ("CapabilityBoundingSet", "")]:
            self.assertEqual(service[key], value, key)
        self.assertGreaterEqual(int(service["LimitNOFILE"]), 4096)
        # ports 3863 and 9901 need no privilege
        self.assertNotIn("AmbientCapabilities", service)
        argv = service["ExecStart"].split()
        self.assertEqual(argv[0], UNIT_BIN + "twistd")
        self.assertEqual(argv[1:argv.index("enrp")],
                         ["--nodaemon", "--pidfile=", "--logfile=-"])

    def test_registrar_command_line(self):
        """
        twistd accepts the registrar unit's command line, with the example
        configuration in place of /etc/rserpool/enrp.toml.
        """
        unit = read_unit(os.path.join(SYSTEMD, REGISTRAR_UNIT))
        argv = unit_values(unit, "Service", "ExecStart")[0].split()
        self.assertIn("/etc/rserpool/enrp.toml", argv)
        argv = [EXAMPLE_CONFIG if a == "/etc/rserpool/enrp.toml" else a for a in argv]
        options = ServerOptions()
        options.parseOptions(argv[1:])
        self.assertEqual(options.subCommand, "enrp")
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["logfile"], "-")
        self.assertEqual(options.subOptions.settings["asap"], ["tcp:3863"])

    def test_pe_command_line(self):
        """
        The PE template's command line, with its environment file, is a
        valid ``rserpool pe`` command for the pool of the instance name.
        """
        unit = read_unit(os.path.join(SYSTEMD, PE_UNIT))
        self.assertEqual(dict(unit["Service"])["User"], "rserpool")
        env = {}
        for assignment in unit_values(unit, "Service", "Environment"):
            key, _, value = assignment.replace("%I", "EchoPool").partition("=")
            env[key] = value
        [env_file] = unit_values(unit, "Service", "EnvironmentFile")
        self.assertEqual(env_file.replace("%i", "EchoPool"), "/etc/rserpool/" + PE_ENV)
        env.update(read_environment_file(os.path.join(SYSTEMD, PE_ENV)))
        [command] = unit_values(unit, "Service", "ExecStart")
        argv = expand(command, env)
        self.assertEqual(argv[0], UNIT_BIN + "rserpool")
        args = cli.build_parser().parse_args(argv[1:])
        self.assertEqual(args.command, "pe")
        self.assertEqual(args.handle, "EchoPool")
        self.assertEqual(args.service, "echo")
        self.assertEqual(args.port, 7000)
        self.assertTrue(args.verbose)
        self.assertIsNone(args.bind)
        self.assertEqual(args.registrar, ["tcp:192.0.2.%d:3863" % n for n in (11, 12, 13)])


def read_environment_file(path):
    """
    Read a systemd environment file (C{KEY=VALUE} lines).
    """
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def expand(command, env):
    """
    Split a unit's command line as systemd does for these units:
    C{${NAME}} is one word, C{$NAME} as many words as its value has.
    """
    argv = []
    for word in command.split():
        m = re.fullmatch(r"\$\{(\w+)\}", word)
        if m:
            argv.append(env.get(m.group(1), ""))
            continue
        m = re.fullmatch(r"\$(\w+)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
            continue
        argv.append(word)
    return argv


# -- the example configuration -----------------------------------------------


class ExampleConfigTests(unittest.TestCase):
    """
    doc/systemd/enrp.toml is a registrar configuration C{twistd enrp}
    accepts, and so are its commented TLS-PSK lines once uncommented.
    """

    def test_load_config(self):
        raw = tap.load_config(EXAMPLE_CONFIG)
        self.assertEqual(raw["asap"], ["tcp:3863"])
        self.assertEqual(raw["enrp"], "tcp:9901")
        self.assertEqual(raw["peer"], ["tcp:192.0.2.12:9901", "tcp:192.0.2.13:9901"])

    def test_options(self):
        options = tap.Options()
        options.parseOptions(["--config", EXAMPLE_CONFIG])
        s = options.settings
        self.assertEqual(s["asap"], ["tcp:3863"])
        self.assertEqual(s["enrp"], "tcp:9901")
        self.assertEqual(s["peer"], ["tcp:192.0.2.12:9901", "tcp:192.0.2.13:9901"])
        self.assertEqual(s["id"], 0x11)
        self.assertEqual(tap.SETTINGS["min-address-scope"][1]("site-local"),
                         s["min-address-scope"])
        self.assertIsNone(s["psk"])

    def test_psk_lines(self):
        """
        The commented TLS-PSK settings work, with key files as
        doc/deployment.rst makes them.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        keys = {
            "enrp.keys": ["registrar-11", "registrar-12", "registrar-13"],
            "asap.keys": ["pe-21", "pe-22", "pu-31"],
        }
        for name, identities in keys.items():
            path = os.path.join(directory, name)
            with open(path, "w") as f:
                for n, identity in enumerate(identities):
                    f.write("%s %s\n" % (identity, ("%02x" % (n + 1)) * 32))
            os.chmod(path, 0o640)
        with open(EXAMPLE_CONFIG) as f:
            text = f.read()
        self.assertIn("# psk-keys = ", text)
        text = re.sub(r"(?m)^# (psk-)", r"\1", text).replace("/etc/rserpool/", directory + "/")
        config = os.path.join(directory, "enrp.toml")
        with open(config, "w") as f:
            f.write(text)
        options = tap.Options()
        options.parseOptions(["--config", config])
        s = options.settings
        self.assertEqual(s["psk-identity"], "registrar-11")
        self.assertIsNotNone(s["psk"])
        self.assertTrue(s["secured"])


# -- doc/deployment.rst -------------------------------------------------------


def literal_spans(text):
    """
    The literal text of a reStructuredText document: each inline literal
    (````...````) of the prose, and each line of the literal blocks (after
    ``::`` or a C{code-block} directive), a line ending in a backslash
    joined to the next.

    @return: a list of C{(line number, text)}.
    """
    lines = text.splitlines()
    spans = []
    paragraph = []
    start = 0

    def flush():
        if paragraph:
            joined = " ".join(paragraph)
            for m in re.finditer(r"``(.+?)``", joined):
                spans.append((start, m.group(1)))
            del paragraph[:]

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        directive = re.match(r"\.\.\s+(code-block|code|sourcecode)::", stripped)
        block = directive or (stripped.endswith("::") and not stripped.startswith(".."))
        if not stripped:
            flush()
            i += 1
            continue
        if not directive:
            if not paragraph:
                start = i + 1
            paragraph.append(stripped)
        if not block:
            i += 1
            continue
        flush()
        i += 1
        pending = None
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            content = line.strip()
            if directive and content.startswith(":") and pending is None:
                i += 1
                continue
            if pending is not None:
                content = pending[1] + " " + content
                number = pending[0]
            else:
                number = i + 1
            if content.endswith("\\"):
                pending = (number, content[:-1].rstrip())
            else:
                pending = None
                if content:
                    spans.append((number, content))
            i += 1
    flush()
    return spans


def rserpool_parsers():
    """
    The argparse parsers of C{rserpool}: its own and each subcommand's.
    """
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, dict(sub.choices)


def _usage_options(options):
    names = set()
    for name in options.synonyms:
        names.add(("-" if len(name) == 1 else "--") + name)
    return names


def known_options():
    """
    C{{command: set of option strings}} for C{twistd}, C{twistd enrp} and
    each C{rserpool} subcommand (C{"rserpool"} for the command itself).
    """
    known = {
        "twistd": _usage_options(ServerOptions()),
        "twistd enrp": _usage_options(tap.Options()),
    }
    parser, subcommands = rserpool_parsers()
    known["rserpool"] = set(parser._option_string_actions)
    for name, sub in subcommands.items():
        known["rserpool " + name] = set(sub._option_string_actions)
    return known


_PUNCTUATION = "()[]{},;.`'\""
_SEPARATORS = {"&&", "||", ";", "|"}


def command_options(span, subcommands):
    """
    The options in a piece of literal text and the commands they are given
    to.

    @param span: the text (a command line, or an inline literal).
    @param subcommands: the names of C{rserpool}'s subcommands.
    @return: a list of C{(command, option)}; C{command} is C{"twistd"},
        C{"twistd enrp"}, C{"rserpool NAME"}, or C{None} for options that
        follow no command (prose such as ````--bind````).  Options of other
        programs (C{pip}, C{systemctl}...) are left out; an unknown
        C{rserpool} subcommand is reported as C{("rserpool", NAME)} with
        C{NAME} not an option.
    """
    found = []
    command = None
    at_start = True
    after_rserpool = False
    for raw in span.split():
        if raw.startswith("#"):
            break  # a shell comment
        if raw in _SEPARATORS:
            command, at_start, after_rserpool = None, True, False
            continue
        token = raw.strip(_PUNCTUATION)
        base = token.rsplit("/", 1)[-1]
        if after_rserpool:
            after_rserpool = False
            if re.fullmatch(r"[a-z]+", raw):
                command = "rserpool " + raw
                if raw not in subcommands:
                    found.append(("rserpool", raw))
                continue
            if not token.startswith("-"):
                command = None  # "rserpool pe: ...": a message, not a command
        if command != "other":
            if base == "twistd":
                command, at_start = "twistd", False
                continue
            if base == "rserpool":
                command, at_start, after_rserpool = "rserpool", False, True
                continue
        if command == "twistd" and token == "enrp":
            command = "twistd enrp"
            continue
        if token.startswith("--") and len(token) > 2:
            if command != "other":
                found.append((command, token.split("=", 1)[0]))
        elif re.fullmatch(r"-[A-Za-z]", token):
            if command != "other":
                found.append((command, token))
        elif at_start:
            command = "other"  # another program: its options are its own
        at_start = False
    return found


def check_options(text):
    """
    Check every option of a document against the option parsers.

    @return: C{(problems, checked)}: a list of one-line problems, and the
        C{(command, option)} pairs that were checked.
    """
    known = known_options()
    everything = set().union(*known.values())
    _, subcommands = rserpool_parsers()
    problems = []
    checked = []
    for number, span in literal_spans(text):
        for command, option in command_options(span, subcommands):
            if command == "rserpool" and not option.startswith("-"):
                problems.append("line %d: rserpool has no subcommand %r" % (number, option))
                continue
            if command is not None and command not in known:
                continue  # an unknown subcommand, reported above
            checked.append((command, option))
            if command is None:
                if option not in everything:
                    problems.append("line %d: %s is no option of twistd enrp or rserpool"
                                    % (number, option))
            elif option not in known[command]:
                problems.append("line %d: %s is no option of %s" % (number, option, command))
    return problems, checked


class DocumentTests(unittest.TestCase):
    """
    Every option that doc/deployment.rst gives C{twistd}, C{twistd enrp}
    or C{rserpool} exists, and its TOML fragments are settings
    C{twistd enrp --config} knows.
    """

    def setUp(self):
        with open(DOC) as f:
            self.text = f.read()

    def test_options_exist(self):
        problems, checked = check_options(self.text)
        self.assertEqual(problems, [])
        # the check did look at the commands of the document
        for pair in [("twistd", "--nodaemon"), ("twistd enrp", "--asap"),
                     ("twistd enrp", "--enrp"), ("twistd enrp", "--peer"),
                     ("twistd enrp", "--psk-keys"), ("twistd enrp", "--psk-peer-keys"),
                     ("twistd enrp", "--psk-identity"), ("rserpool pe", "--handle"),
                     ("rserpool pe", "--registrar"), ("rserpool pe", "--port"),
                     ("rserpool resolve", "--registrar"), ("rserpool terminal", "--registrar"),
                     ("rserpool dump", "--registrar"), (None, "--bind"),
                     (None, "--min-address-scope")]:
            self.assertIn(pair, checked)

    def test_drift_is_found(self):
        """
        An option or subcommand that does not exist is reported, in a
        literal block and in prose.
        """
        doc = (
            "Run it::\n\n"
            "    twistd --nodaemon --no-such-twistd-option enrp --asap tcp:3863 \\\n"
            "        --no-such-enrp-option\n"
            "    rserpool pe --handle P --no-such-pe-option echo\n"
            "    rserpool frobnicate --registrar tcp:192.0.2.11:3863\n\n"
            "Prose with ``--no-such-option`` and ``rserpool resolve --items 3 --no-items``.\n\n"
            ".. code-block:: shell\n\n"
            "    pip install --no-such-pip-option rserpool\n"
            "    twistd enrp --quiet --loud\n"
        )
        problems, _ = check_options(doc)
        self.assertEqual(problems, [
            "line 3: --no-such-twistd-option is no option of twistd",
            "line 3: --no-such-enrp-option is no option of twistd enrp",
            "line 5: --no-such-pe-option is no option of rserpool pe",
            "line 6: rserpool has no subcommand 'frobnicate'",
            "line 8: --no-such-option is no option of twistd enrp or rserpool",
            "line 8: --no-items is no option of rserpool resolve",
            "line 13: --loud is no option of twistd enrp",
        ])

    def test_toml_blocks(self):
        """
        Each TOML block of the document names settings that
        C{twistd enrp --config} knows.
        """
        blocks = re.findall(r"(?m)^\.\. code-block:: toml\n\n((?:    .*\n|\n)+)", self.text)
        self.assertTrue(blocks)
        directory = self.mktemp()
        os.makedirs(directory)
        for n, block in enumerate(blocks):
            path = os.path.join(directory, "%d.toml" % n)
            with open(path, "w") as f:
                f.write("\n".join(line[4:] for line in block.splitlines()) + "\n")
            try:
                raw = tap.load_config(path)
            except usage.UsageError as e:
                self.fail("TOML block %d: %s" % (n + 1, e))
            self.assertTrue(raw)

    def test_included_files(self):
        """
        The files the document includes are the ones tested here.
        """
        included = set(re.findall(r"(?m)^\.\. literalinclude:: (\S+)", self.text))
        self.assertEqual(included, {"systemd/enrp.toml", "systemd/" + REGISTRAR_UNIT,
                                    "systemd/" + PE_UNIT, "systemd/" + PE_ENV})
