"""
Installing rserpool as its users and contributors do, in a fresh virtual
environment: ``pip install -e .`` (what every contributor types) must leave
``twistd enrp`` working from any directory.
"""
import os
import subprocess
import sys
import tempfile

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: pip's words when it cannot reach a package index (offline machine).
_OFFLINE = ("Could not find a version", "Failed to establish a new connection",
            "No matching distribution", "Temporary failure in name resolution")


class EditableInstallTests(unittest.TestCase):
    def test_twistd_finds_the_plugin(self):
        """
        Twisted finds plugins by scanning C{sys.path} for C{twisted/plugins}
        directories; setuptools' default editable install hides the
        checkout behind an import hook, and C{twistd} answered "Unknown
        command: enrp".  setup.cfg's C{package_dir} makes it a path entry.
        """
        # As a user's shell has it: trial -j sets PYTHONPATH to its own
        # site-packages, which would make pip skip the dependencies.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        work = tempfile.mkdtemp(prefix="rserpool-editable-")
        self.addCleanup(subprocess.call, ["rm", "-rf", work])
        venv = os.path.join(work, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, env=env)
        pip = subprocess.run(
            [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
             "-e", ROOT], capture_output=True, text=True, cwd=work, timeout=300, env=env)
        if pip.returncode != 0:
            if any(text in pip.stderr for text in _OFFLINE):
                raise unittest.SkipTest("no package index reachable: " + pip.stderr.strip()[-200:])
            self.fail("pip install -e failed:\n" + pip.stderr)
        # From another directory, as a user would run it.
        twistd = subprocess.run([os.path.join(venv, "bin", "twistd"), "--help"],
                                capture_output=True, text=True, cwd=work, timeout=60, env=env)
        self.assertEqual(twistd.returncode, 0, twistd.stderr)
        listed = [line.split()[0] for line in twistd.stdout.splitlines()
                  if line.startswith("    ") and line.split()]
        self.assertIn("enrp", listed, twistd.stdout)
        usage = subprocess.run([os.path.join(venv, "bin", "twistd"), "enrp", "--help"],
                               capture_output=True, text=True, cwd=work, timeout=60, env=env)
        self.assertEqual(usage.returncode, 0, usage.stderr)
        self.assertIn("--psk-keys", usage.stdout)
        # The checkout itself is what runs (an edit shows at once).
        where = subprocess.run(
            [os.path.join(venv, "bin", "python"), "-c", "import rserpool; print(rserpool.__file__)"],
            capture_output=True, text=True, cwd=work, timeout=60, env=env)
        self.assertEqual(where.stdout.strip(), os.path.join(ROOT, "rserpool", "__init__.py"))
