"""
The handlespace page in a real browser (issue #16): Debian's headless
Chromium, driven by Selenium through Debian's chromedriver (never a
downloaded browser), against C{twistd enrp --http} and C{rserpool pe}
processes on loopback.

 - the page shows a pool once C{rserpool pe} registers, without a reload;
 - a PE disappears once SIGKILLed, within the keep-alive timeout;
 - the filter box narrows a 1,000-PE pool as one types;
 - without JavaScript it is a plain page whose filter form works.

On failure a screenshot is saved in the test's temporary directory (its
path is in the failure message).  L{BrowserTests.test_screenshot} also
makes the picture of ``doc/operations.rst`` when
C{RSERPOOL_DOC_SCREENSHOT} names a file.

Selenium's calls block; they run in a thread (C{deferToThread}) so that
the reactor keeps reading the processes, and waits are bounded polls on
the reactor's clock.
"""
import os
import shutil
import signal
import sys

from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from tests.helpers import TWISTD, eventually, listening_port, spawn, start
from tests.test_registrar_integration import RawClient
from tests.test_web import registration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

try:
    import selenium  # noqa: F401
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    webdriver = None

if webdriver is None:
    SKIP = "Selenium is not installed (pip install '.[test]')"
elif not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    SKIP = ("Debian's chromium and chromium-driver are not installed "
            "(apt-get install chromium chromium-driver; .ci/run does)")
else:
    SKIP = None

#: The registrar's keep-alive interval and timeout in these tests.
KEEP_ALIVE = 0.5


def make_driver(javascript=True, size=(1280, 900)):
    """
    A headless Chromium of Debian's, driven by Debian's chromedriver.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=%d,%d" % size,
                     "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def run(fn, *args):
    """
    A blocking Selenium call, in a thread.
    """
    return threads.deferToThread(fn, *args)


def shows(predicate, what):
    """
    Poll the page with C{predicate} (a blocking Selenium call, run in a
    thread) until it is true, at most 15 s: its value.
    """
    return eventually(lambda: run(predicate), what, timeout=15.0, step=0.1)


class BrowserTests(unittest.TestCase):
    timeout = 120

    if SKIP:
        skip = SKIP

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = start(self, [
            sys.executable, "-c", TWISTD, "-n", "--pidfile=", "enrp",
            "--asap", "tcp:0:interface=127.0.0.1",
            "--enrp", "none",
            "--http", "tcp:0:interface=127.0.0.1",
            "--id", "0x5eed0016",
            "--keep-alive-interval", str(KEEP_ALIVE), "--keep-alive-timeout", str(KEEP_ALIVE),
        ], name="twistd enrp")
        self.asap_port = yield listening_port(self.registrar, "ASAP")
        self.http_port = yield listening_port(self.registrar, "HTTP")
        yield self.registrar.wait_for(b"ready", timeout=20)
        self.url = "http://127.0.0.1:%d/" % self.http_port
        self.registrar_endpoint = "tcp:127.0.0.1:%d" % self.asap_port
        self.driver = yield run(make_driver)
        self.addCleanup(run, self.driver.quit)

    def screenshot_on_failure(self, f, driver=None):
        """
        Save what the browser showed next to the test's files, and fail
        with the path.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "failure.png")
        try:
            (driver or self.driver).save_screenshot(path)
        except Exception as e:  # the browser may be gone
            path = "(none: %s)" % e
        self.fail("%s\nscreenshot: %s" % (f.getErrorMessage() if hasattr(f, "getErrorMessage")
                                          else f, path))

    def guarded(self, body, driver=None):
        d = defer.maybeDeferred(body)
        d.addErrback(lambda f: f if f.check(unittest.SkipTest) else
                     self.screenshot_on_failure(f, driver))
        return d

    def pe(self, handle="EchoPool", *more):
        return spawn(self, "pe", "--handle", handle, "--registrar", self.registrar_endpoint,
                     *more, "echo")

    def rows(self, selector):
        # Read in one script: the rows may be swapped meanwhile.
        attribute = selector.split("[")[1].split("]")[0]
        return lambda: self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]))"
            ".map(function (e) { return e.getAttribute(arguments[1]); });"
            .replace("arguments[1]", repr(attribute)), selector)

    def marked(self):
        # A page that was not reloaded still has what we set on it.
        return self.driver.execute_script("return window.__notReloaded === 16;")

    def mark(self):
        return run(self.driver.execute_script, "window.__notReloaded = 16;")

    def test_pool_appears(self):
        @defer.inlineCallbacks
        def body():
            yield run(self.driver.get, self.url)
            yield shows(lambda: self.driver.find_element(By.ID, "live-status").text == "live",
                        "the page to go live (server-sent events)")
            pools = yield run(self.rows("tr[data-pool]"))
            self.assertEqual(pools, [])
            yield self.mark()
            pe = self.pe("EchoPool", "--identifier", "0000e001")
            yield pe.wait_for(b"registered")
            pools = yield shows(self.rows("tr[data-pool]"), "a pool row")
            self.assertEqual(pools, ["EchoPool"])
            self.assertTrue((yield run(self.marked)), "the page was reloaded")
            text = yield run(lambda: self.driver.find_element(By.ID, "events").text)
            self.assertIn("registration 0000e001 in EchoPool", text)

        return self.guarded(body)

    def test_pe_gone_after_sigkill(self):
        @defer.inlineCallbacks
        def body():
            pes = [self.pe("EchoPool", "--identifier", "0000e00%d" % i) for i in (1, 2)]
            for pe in pes:
                yield pe.wait_for(b"registered")
            yield run(self.driver.get, self.url + "?pool=EchoPool")
            yield shows(lambda: sorted(self.rows("tr[data-pe]")()) == ["0000e001", "0000e002"],
                        "both PEs' rows")
            yield shows(lambda: self.driver.find_element(By.ID, "live-status").text == "live",
                        "the page to go live")
            yield self.mark()
            killed = reactor.seconds()
            pes[0].kill(signal.SIGKILL)
            yield shows(lambda: self.rows("tr[data-pe]")() == ["0000e002"],
                        "the killed PE's row to go")
            elapsed = reactor.seconds() - killed
            # Its connection closes with the process; at worst the
            # keep-alive removes it (interval + timeout), plus a refresh.
            self.assertLess(elapsed, 2 * KEEP_ALIVE + 2.0)
            self.assertTrue((yield run(self.marked)), "the page was reloaded")
            text = yield run(lambda: self.driver.find_element(By.ID, "events").text)
            self.assertIn("failure 0000e001 in EchoPool", text)

        return self.guarded(body)

    @defer.inlineCallbacks
    def register_many(self, handle, count):
        client = RawClient("asap", auto_ack=True)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.asap_port), client)
        self.addCleanup(client.close)
        for i in range(count):
            client.send(registration(handle, 0x10000 + i, port=10000 + i))
        from rserpool.wire import RegistrationResponse

        for i in range(count):
            answer = yield client.expect(RegistrationResponse)
            self.assertFalse(answer.reject)
        return client

    def test_filter_narrows(self):
        @defer.inlineCallbacks
        def body():
            yield self.register_many(b"Big", 1000)
            yield run(self.driver.get, self.url + "?pool=Big")
            rows = yield run(self.rows("tr[data-pe]"))
            self.assertEqual(len(rows), 100)
            heading = yield run(lambda: self.driver.find_element(By.ID, "pool").text)
            self.assertIn("1000 PEs", heading)
            yield self.mark()
            box = yield run(self.driver.find_element, By.ID, "q")
            yield run(box.send_keys, "000103e")
            yield shows(lambda: self.rows("tr[data-pe]")() == ["000103e%x" % i for i in range(8)],
                        lambda: "rows 000103e0 to 000103e7, not %r" % (self.rows("tr[data-pe]")(),))
            yield run(box.send_keys, "7")
            yield shows(lambda: self.rows("tr[data-pe]")() == ["000103e7"], "row 000103e7 alone")
            self.assertTrue((yield run(self.marked)), "the page was reloaded")
            url = yield run(lambda: self.driver.current_url)
            self.assertIn("q=000103e7", url)

        return self.guarded(body)

    def test_javascript_off(self):
        """
        Without JavaScript: a plain page; the filter is a form that works.
        """
        @defer.inlineCallbacks
        def body():
            driver = yield run(make_driver, False)
            self.addCleanup(run, driver.quit)
            self.driver = driver
            yield self.register_many(b"Plain", 30)
            yield run(driver.get, self.url + "?pool=Plain")
            status = yield run(lambda: driver.find_element(By.ID, "live-status").text)
            self.assertEqual(status, "static")
            self.assertEqual(len((yield run(self.rows("tr[data-pe]")))), 30)
            box = yield run(driver.find_element, By.ID, "q")
            yield run(box.send_keys, "0001001")
            yield run(driver.find_element(By.CSS_SELECTOR, "#filter button").click)
            # 00010010 to 0001001d
            yield shows(lambda: len(self.rows("tr[data-pe]")()) == 14,
                        "the 14 rows 00010010 to 0001001d")
            self.assertIn("q=0001001", (yield run(lambda: driver.current_url)))

        return self.guarded(body)

    def test_screenshot(self):
        """
        The picture in doc/operations.rst: a pool with a few PEs, a peer-less
        registrar, recent events (RSERPOOL_DOC_SCREENSHOT=PATH writes it
        there; else into the test's directory).
        """
        @defer.inlineCallbacks
        def body():
            pes = [self.pe("EchoPool", "--identifier", "0000e00%d" % i) for i in (1, 2, 3)]
            pes.append(self.pe("LoadPool", "--identifier", "0000f001", "--policy",
                               "LeastUsed:0.25"))
            for pe in pes:
                yield pe.wait_for(b"registered")
            pes[2].kill(signal.SIGKILL)
            yield run(self.driver.set_window_size, 1100, 760)
            yield run(self.driver.get, self.url + "?pool=EchoPool")
            yield shows(lambda: len(self.rows("tr[data-pe]")()) == 2
                        and self.driver.find_element(By.ID, "live-status").text == "live",
                        "the two live PEs' rows on a live page")
            path = os.environ.get("RSERPOOL_DOC_SCREENSHOT") or os.path.join(
                os.path.abspath(self.mktemp()) + ".png")
            ok = yield run(self.driver.save_screenshot, path)
            self.assertTrue(ok)
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        return self.guarded(body)
