"""
The house plan, checked from the code (issue #15): the sans-IO core
(codec, handlespace, the ASAP, ENRP and session machines) knows no
reactor and nothing of the Twisted side, and modules import each other
without cycles.

What does not hold yet is listed by name in L{KNOWN_ARROWS},
L{TWISTED_IN_CORE} and L{KNOWN_CYCLES}: anything new fails, and an entry
that no longer holds fails too, so the lists only shrink.  All three are
empty now (the session layer's Twisted side moved to
L{rserpool.transport}; L{rserpool.transport.connection} broke the
C{tcp} <-> C{sctp_messages} cycle): keep them so.
"""
import ast
import os
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "rserpool")

#: The core: pure protocol logic and data, no I/O.
CORE = (
    "rserpool.actions",
    "rserpool.codes",
    "rserpool.interfaces",
    "rserpool.limits",
    "rserpool.states",
    "rserpool.wire",
    "rserpool.handlespace",
    "rserpool.asap",
    "rserpool.enrp",
    "rserpool.session",
)

#: Core modules that still live on the Twisted side (issue #15 moves them
#: beside the other adapters), and what of it they import.
KNOWN_ARROWS = set()

#: Twisted-side modules that are still in a core package (their
#: twisted.internet imports are allowed; nothing else of the core may).
TWISTED_IN_CORE = set()

#: Import cycles that issue #15 has still to break.
KNOWN_CYCLES = set()


def modules():
    """
    Every module of the package: dotted name -> path.
    """
    out = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            if dotted.endswith(".__init__"):
                dotted = dotted[: -len(".__init__")]
            out[dotted] = path
    return out


def imports(found):
    """
    The import graph, from the code: module -> (rserpool modules it
    imports, other top-level names it imports with their full dotted
    names).  Imports inside functions count: they run too.
    """
    graph = {}
    external = {}
    for name, path in found.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        targets, others = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                # "from package import module" names the module.
                names = [module + "." + a.name if module + "." + a.name in found else module
                         for a in node.names]
            else:
                continue
            for target in names:
                if target.startswith("rserpool"):
                    while target not in found and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in found and target != name:
                        targets.add(target)
                else:
                    others.add(target)
        graph[name] = targets
        external[name] = others
    return graph, external


def cycles(graph):
    """
    The strongly connected components of more than one module (Tarjan).
    """
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        # iterative deepening is not needed: the package is a few dozen
        # modules deep at most
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return set(out)


def is_core(name):
    return any(name == c or name.startswith(c + ".") for c in CORE)


class ImportGraphTests(unittest.TestCase):
    def setUp(self):
        self.found = modules()
        self.graph, self.external = imports(self.found)

    def test_core_imports_only_core(self):
        arrows = {(m, t) for m, targets in self.graph.items() if is_core(m)
                  for t in targets if not is_core(t)}
        self.assertEqual(arrows - KNOWN_ARROWS, set(),
                         "the core imports the Twisted side (issue #15)")
        self.assertEqual(KNOWN_ARROWS - arrows, set(),
                         "gone: remove them from KNOWN_ARROWS")

    def test_core_imports_no_reactor(self):
        reactor = {(m, t) for m, names in self.external.items()
                   if is_core(m) and m not in TWISTED_IN_CORE
                   for t in names if t == "twisted.internet" or t.startswith("twisted.internet.")}
        self.assertEqual(reactor, set())

    def test_no_new_cycles(self):
        found = cycles(self.graph)
        self.assertEqual(found - KNOWN_CYCLES, set(), "new import cycles")
        self.assertEqual(KNOWN_CYCLES - found, set(), "gone: remove them from KNOWN_CYCLES")

    def test_cycles_are_found(self):
        # the detector itself, on a graph with one cycle and a tail
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}),
                         {frozenset("abc")})


class FreshInterpreterTests(unittest.TestCase):
    def test_core_loads_without_a_reactor(self):
        """
        Importing every core module in a fresh interpreter loads no
        C{twisted.internet}: the machines can run under anything.
        """
        core = sorted(m for m in modules() if is_core(m) and m not in TWISTED_IN_CORE)
        program = ("import importlib, sys\n"
                   "for name in sys.argv[1:]:\n"
                   "    importlib.import_module(name)\n"
                   "print(sorted(m for m in sys.modules if m.startswith('twisted.internet')))\n")
        env = dict(os.environ, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-c", program] + core, capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "[]")
        self.assertIn("rserpool.session.core", core)
        self.assertIn("rserpool.asap.registrar", core)


#: The state machines (issue #15, step 2): they return actions
#: (rserpool.actions, and the PE, PU and session machines' own), and
#: the adapters carry them out.
MACHINES = (
    "rserpool/asap/registrar.py",
    "rserpool/enrp/machine.py",
    "rserpool/asap/pool_element.py",
    "rserpool/asap/pool_user.py",
    "rserpool/session/core.py",
)

#: Calls that are I/O, whatever they are called on.
_IO_METHODS = frozenset(["send", "send_encoded", "write", "callLater"])
#: Names of injected callbacks the machines used to call: allowed only as
#: the machine's own methods.
_CALLBACKS = frozenset(["schedule", "_schedule", "connect", "_connect", "multicast",
                        "_multicast", "close"])


def calls_out(source, filename="<machine>"):
    """
    The calls in a machine module that do I/O themselves: C{x.send(...)}
    and the like on anything, and C{schedule(...)}, C{connect(...)},
    C{close()}... unless it is C{self.name(...)} of a method the module
    defines.

    @return: C{[(line, text)]}.
    """
    tree = ast.parse(source, filename)
    own = {node.name for node in ast.walk(tree)
           if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            name = func.attr
            on_self = isinstance(func.value, ast.Name) and func.value.id == "self"
        elif isinstance(func, ast.Name):
            name, on_self = func.id, False
        else:
            continue
        if name in _IO_METHODS and isinstance(func, ast.Attribute):
            out.append((node.lineno, ast.unparse(func)))
        elif name in _CALLBACKS and not (on_self and name in own):
            out.append((node.lineno, ast.unparse(func)))
    return out


class MachineStyleTests(unittest.TestCase):
    def test_machines_do_not_call_out(self):
        """
        No machine sends, closes, schedules or dials itself (issue #15:
        "No machine calls send/schedule/connect; the adapters do").
        """
        found = {}
        for relative in MACHINES:
            path = os.path.join(ROOT, relative)
            with open(path) as f:
                bad = calls_out(f.read(), path)
            if bad:
                found[relative] = bad
        self.assertEqual(found, {})

    def test_calls_out_found(self):
        # the checker itself
        source = (
            "class M:\n"
            "    def __init__(self, schedule, connect):\n"
            "        self._schedule, self.connect = schedule, connect\n"
            "    def _connect(self, now):\n"
            "        return []\n"
            "    def event(self, conn, now):\n"
            "        conn.send(b'x')\n"
            "        conn.send_encoded(b'x')\n"
            "        conn.close()\n"
            "        self._schedule(now)\n"
            "        self.connect(None)\n"
            "        schedule(now)\n"
            "        self._connect(now)\n"
            "        return self._out.append(now)\n")
        self.assertEqual([line for line, _ in calls_out(source)], [7, 8, 9, 10, 11, 12])


class NameTests(unittest.TestCase):
    """
    One name for one thing: no two modules of the package share a name
    across layers (a C{registrar.py} service beside an
    C{asap/registrar.py} machine read as one thing and were two).
    """

    def test_module_names_unique(self):
        seen = {}
        for dotted in sorted(modules()):
            parts = dotted.split(".")
            # packages are named by their directory; their __init__ is not
            # a module of its own name
            if parts[-1] in ("__main__",) or dotted in ("rserpool",):
                continue
            seen.setdefault(parts[-1], []).append(dotted)
        shared = {name: found for name, found in seen.items() if len(found) > 1}
        self.assertEqual(shared, {})
