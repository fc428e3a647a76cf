#!/usr/bin/env python3
"""Load one page in a throwaway headless Chromium and report on it as JSON.

For goprox's browser tests of the HTML status page.  Drives Chromium (fresh
profile, no network use beyond loopback) over the Chrome DevTools Protocol:
loads --url, optionally waits for / reloads until a JS condition, evaluates JS
expressions, takes a full-page PNG screenshot, and prints one JSON object on
stdout.  Exit status 0 when the script itself worked, even if the page had
errors (the caller judges); else 1 (2: bad arguments), "ok": false, "error" why.
Needs only the standard library and `websockets`.  See README.md.
"""
import argparse, asyncio, base64, ctypes, json, math, os, shutil, signal
import subprocess, sys, tempfile, time, urllib.request

from websockets.asyncio.client import connect

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-background-networking", "--disable-sync", "--disable-component-update",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--metrics-recording-only", "--no-pings", "--no-proxy-server", "--disable-default-apps",
    "--password-store=basic", "--hide-scrollbars", "--mute-audio",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying",
    # Even with all that, Chromium looks up accounts.google.com and update.googleapis.com:
    # let no name but localhost resolve, so that no DNS query or connection leaves the host.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--remote-debugging-port=0",
]


class CDP:
    """A minimal CDP client on one page target's websocket (no sessions)."""

    def __init__(self, ws, on_event):
        self.ws, self.on_event, self.next_id = ws, on_event, 0
        self.pending, self.waiters = {}, []  # id -> future; [(event name, future)]
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        err = ConnectionError("DevTools connection closed")
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                fut = self.pending.pop(msg.get("id"), None)
                if fut and not fut.done() and "error" in msg:
                    fut.set_exception(RuntimeError(f"CDP error: {msg['error'].get('message')}"))
                elif fut and not fut.done():
                    fut.set_result(msg.get("result", {}))
                elif "method" in msg:
                    self.on_event(msg["method"], msg.get("params", {}))
                    for event, fut in self.waiters:
                        if event == msg["method"] and not fut.done():
                            fut.set_result(msg.get("params", {}))
        except Exception as e:
            err = ConnectionError(f"DevTools connection lost: {e!r}")
        for fut in [*self.pending.values(), *(f for _, f in self.waiters)]:
            if not fut.done():
                fut.set_exception(err)

    async def send(self, method, params=None):
        self.next_id += 1
        fut = self.pending[self.next_id] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        return await fut

    async def send_and_wait(self, method, params, event):
        """Send a command, then wait for the next `event` (listened for before sending)."""
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((event, fut))
        try:
            result = await self.send(method, params)
            await fut
            return result
        finally:
            self.waiters.remove((event, fut))
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark it retrieved: no "never retrieved" noise on stderr

    async def evaluate(self, expr):
        """Runtime.evaluate -> RemoteObject; ValueError if the expression throws."""
        r = await self.send("Runtime.evaluate",
                            {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise ValueError(describe(r["exceptionDetails"]))
        return r["result"]


def describe(details):
    return (details.get("exception") or {}).get("description") or details.get("text")


def value_of(obj):  # a RemoteObject's value; NaN, Infinity, -0 and bigints as strings
    return obj.get("value", obj.get("unserializableValue"))


def remote_text(obj):  # how a console.* argument reads
    if "value" in obj:
        return obj["value"] if isinstance(obj["value"], str) else json.dumps(obj["value"])
    return obj.get("unserializableValue") or obj.get("description") or obj.get("type", "")


def js_truthy(obj):  # JavaScript truthiness of a RemoteObject
    if obj.get("type") in ("object", "function", "symbol"):
        return obj.get("subtype") != "null"
    if "unserializableValue" in obj:
        return obj["unserializableValue"] not in ("NaN", "-0", "0n")
    return bool(obj.get("value"))  # undefined, boolean, number, string


def is_favicon(url):
    return url.split("?")[0].endswith("/favicon.ico")


class Run:
    def __init__(self, args, res):
        self.args, self.res, self.urls = args, res, {}  # urls: requestId -> url
        self.phase, self.last = "starting chromium", None  # for the timeout message

    def on_event(self, method, p):
        res = self.res
        if method == "Runtime.consoleAPICalled":
            text = " ".join(remote_text(a) for a in p.get("args", []))
            res["console"].append({"level": p.get("type"), "source": "console-api", "text": text})
        elif method == "Log.entryAdded" and not is_favicon(p["entry"].get("url", "")):
            e = p["entry"]
            res["console"].append({"level": e.get("level"), "source": e.get("source"),
                                   "text": e.get("text")} | ({"url": e["url"]} if e.get("url") else {}))
        elif method == "Runtime.exceptionThrown":
            res["exceptions"].append(describe(p.get("exceptionDetails", {})))
        elif method == "Network.requestWillBeSent":
            self.urls[p["requestId"]] = p["request"]["url"]
        elif method == "Network.responseReceived":
            url, status = p["response"].get("url", ""), p["response"].get("status", 0)
            if status >= 400 and not is_favicon(url):
                res["failed_requests"].append({"url": url, "status": status})
        elif method == "Network.loadingFailed":  # a request the browser cancelled is no failure
            url = self.urls.get(p.get("requestId"), "?")
            if not p.get("canceled") and not is_favicon(url):
                res["failed_requests"].append({"url": url, "error": p.get("errorText")})

    async def page_ws_url(self, proc, tmp):
        """Poll DevToolsActivePort, then /json/list (loopback, no proxy) for the page target."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while proc.poll() is None:
            try:
                with open(os.path.join(tmp, "profile", "DevToolsActivePort")) as f:
                    port, _ = f.read().split("\n", 1)
                with opener.open(f"http://127.0.0.1:{int(port)}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages and pages[0].get("webSocketDebuggerUrl"):
                    return pages[0]["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass  # not written / not listening yet
            await asyncio.sleep(0.05)
        with open(os.path.join(tmp, "chromium.log"), errors="replace") as f:
            raise RuntimeError(f"chromium exited with status {proc.returncode}: {f.read()[-2000:]}")

    async def poll(self, cdp, expr, interval, reload):
        """Until `expr` is truthy (throwing counts as false); reload between tries if asked."""
        start, self.last = time.monotonic(), None
        try:
            while True:
                try:
                    obj = await cdp.evaluate(expr)
                    self.last = obj.get("value", obj.get("unserializableValue", obj.get("type")))
                    if js_truthy(obj):
                        return
                except ValueError as e:
                    self.last = f"threw {e}"
                if reload:  # then give the page's own scripts `interval` to settle
                    await cdp.send_and_wait("Page.reload", {"ignoreCache": True}, "Page.loadEventFired")
                    self.res["reloads"] += 1
                await asyncio.sleep(interval)
        finally:
            self.res["waited_ms"] += round((time.monotonic() - start) * 1000)

    async def run(self, proc, tmp):
        a, res = self.args, self.res
        ws_url = await self.page_ws_url(proc, tmp)
        self.phase = "connecting to DevTools"
        async with connect(ws_url, proxy=None, max_size=None, compression=None,
                           open_timeout=a.timeout, close_timeout=1, ping_interval=None) as ws:
            cdp = CDP(ws, self.on_event)
            self.phase = "setting up the page"
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.send(f"{domain}.enable")
            if a.user is not None:
                token = base64.b64encode(f"{a.user}:{a.password}".encode()).decode()
                await cdp.send("Network.setExtraHTTPHeaders",
                               {"headers": {"Authorization": f"Basic {token}"}})
            await cdp.send("Emulation.setDeviceMetricsOverride",
                           {"width": a.width, "height": a.height, "mobile": a.mobile,
                            "deviceScaleFactor": 3 if a.mobile else 1})
            if a.mobile:  # so that (pointer: coarse) and (hover: none) match too
                await cdp.send("Emulation.setTouchEmulationEnabled",
                               {"enabled": True, "maxTouchPoints": 5})
            self.phase = f"loading {a.url}"
            nav = await cdp.send_and_wait("Page.navigate", {"url": a.url}, "Page.loadEventFired")
            res["navigation_error"] = nav.get("errorText") or None  # e.g. refused, 401: not fatal
            if a.wait_for:
                self.phase = f"waiting for --wait-for {a.wait_for!r}"
                await self.poll(cdp, a.wait_for, 0.1, reload=False)
            if a.reload_until:
                self.phase = f"reloading until --reload-until {a.reload_until!r}"
                await self.poll(cdp, a.reload_until, 0.25, reload=True)
            self.phase = "evaluating"
            for i, expr in enumerate(a.eval, 1):
                try:
                    res["evals"].append(value_of(await cdp.evaluate(expr)))
                except ValueError as e:
                    raise RuntimeError(f"--eval #{i} {expr!r} threw: {e}") from None
            res["title"] = value_of(await cdp.evaluate("document.title"))
            if a.screenshot:
                self.phase = "taking the screenshot"
                size = (await cdp.send("Page.getLayoutMetrics"))["cssContentSize"]
                clip = {"x": 0, "y": 0, "scale": 1,
                        "width": math.ceil(size["width"]), "height": math.ceil(size["height"])}
                shot = await cdp.send("Page.captureScreenshot",  # the whole page, not just the viewport
                                      {"format": "png", "captureBeyondViewport": True, "clip": clip})
                with open(a.screenshot, "wb") as f:
                    f.write(base64.b64decode(shot["data"]))

    def timeout_error(self):
        last = f" (last value: {self.last!r})" if self.phase.startswith(("wait", "reload")) else ""
        return f"timed out after {self.args.timeout:g}s while {self.phase}{last}"


def launch(chromium, tmp):
    def die_with_parent():  # chromium gets SIGKILL should this script be killed
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    with open(os.path.join(tmp, "chromium.log"), "wb") as log:
        return subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={os.path.join(tmp, 'profile')}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent)


def stop(proc):
    """SIGTERM chromium's process group (its own session), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(3)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.error = lambda msg: finish({"ok": False, "error": f"usage: {msg}"}, 2)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--url", required=True)
    for name in ("--user", "--password", "--screenshot", "--wait-for", "--reload-until"):
        p.add_argument(name)
    p.add_argument("--eval", action="append", default=[], help="JS expression, repeatable")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--mobile", action="store_true", help="390x844, deviceScaleFactor 3, touch")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds, bounds everything")
    a = p.parse_args()
    if (a.user is None) != (a.password is None):
        p.error("--user and --password go together")
    a.width = a.width or (390 if a.mobile else 1280)
    a.height = a.height or (844 if a.mobile else 900)
    return a


def finish(res, code):
    print(json.dumps(res), flush=True)
    sys.exit(code)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` cleans up
    args = parse_args()
    res = {"ok": False, "error": None, "title": None, "evals": [], "console": [], "exceptions": [],
           "failed_requests": [], "reloads": 0, "waited_ms": 0, "navigation_error": None}
    tmp, proc, run = tempfile.mkdtemp(prefix="cdp_page."), None, Run(args, res)
    try:
        proc = launch(args.chromium, tmp)
        asyncio.run(asyncio.wait_for(run.run(proc, tmp), args.timeout))
        res["ok"] = True
    except TimeoutError:
        res["error"] = run.timeout_error()
    except (KeyboardInterrupt, SystemExit):  # SIGTERM / Ctrl-C: still report and clean up
        res["error"] = "interrupted"
    except Exception as e:
        res["error"] = str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    finish(res, 0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
