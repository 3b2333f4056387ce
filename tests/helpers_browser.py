"""Headless Chromium over the DevTools protocol (CDP), for tests that open a page as a user would.

No driver binary: Chromium starts with ``--remote-debugging-port=0``, writes its port to
``<profile>/DevToolsActivePort``, and is spoken to over a websocket (the ``websockets`` package,
a Prefect dependency).  ``inspect_page`` loads a URL, waits for its media, and reports console
errors, failed loads, what every ``<img>`` and ``<audio>`` loaded, and a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

MEDIA_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({src: i.currentSrc, complete: i.complete, width: i.naturalWidth})),
  audio: [...document.querySelectorAll('audio')].map(a => ({src: a.currentSrc, ready: a.readyState,
          duration: a.duration, error: a.error && a.error.code})),
  scripts: document.scripts.length,
  tables: [...document.querySelectorAll('table')].map(t => t.innerText),
  width: document.documentElement.scrollWidth,
})"""


def find_chromium() -> str | None:
    """Path of a Chromium-family browser, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@contextmanager
def chromium(binary: str, timeout: float = 30.0):
    """Start headless Chromium; yields the browser's websocket URL; kills it on exit."""
    profile = tempfile.mkdtemp(prefix="strata-chromium-")
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--mute-audio", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not start its DevTools endpoint (exit {proc.poll()})")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


class CDP:
    """One websocket to the browser: commands (optionally on a session) and the events seen so far."""

    def __init__(self, ws) -> None:
        self.ws, self.ids, self.pending, self.events = ws, itertools.count(1), {}, []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self.pending:
                self.pending.pop(msg["id"]).set_result(msg)
            else:
                self.events.append(msg)

    async def send(self, method: str, session: str | None = None, **params) -> dict:
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        msg = {"id": i, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == method:
                    return e
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {method} within {timeout} s")

    async def evaluate(self, session: str, expression: str):
        r = await self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return r["result"].get("value")


def problems(events: list[dict]) -> dict[str, list]:
    """Console errors, uncaught exceptions, failed loads and HTTP errors among the CDP events."""
    out: dict[str, list] = {"console": [], "exceptions": [], "failed": [], "http": []}
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out["console"].append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            out["console"].append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Runtime.exceptionThrown":
            out["exceptions"].append(p["exceptionDetails"].get("text"))
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            out["failed"].append(p.get("errorText"))
        elif m == "Network.responseReceived" and p["response"].get("status", 0) >= 400:
            out["http"].append(f"{p['response']['status']} {p['response']['url']}")
    return out


async def _inspect(ws_url: str, url: str, screenshot: Path | None, width: int, height: int,
                   phone_width: int, media_timeout: float) -> dict:
    import websockets

    async with websockets.connect(ws_url, max_size=None) as ws:
        cdp = CDP(ws)
        target = (await cdp.send("Target.createTarget", url="about:blank"))["targetId"]
        s = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            await cdp.send(f"{domain}.enable", s)
        await cdp.send("Emulation.setDeviceMetricsOverride", s, width=width, height=height, deviceScaleFactor=1,
                       mobile=False)
        await cdp.send("Page.navigate", s, url=url)
        await cdp.wait_event("Page.loadEventFired", 60)
        deadline = time.monotonic() + media_timeout
        while True:  # audio metadata loads after the load event
            state = json.loads(await cdp.evaluate(s, MEDIA_STATE))
            settled = all(a["ready"] >= 1 or a["error"] for a in state["audio"]) and all(
                i["complete"] for i in state["images"])
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if screenshot is not None:
            shot = await cdp.send("Page.captureScreenshot", s, format="png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        await cdp.send("Emulation.setDeviceMetricsOverride", s, width=phone_width, height=800, deviceScaleFactor=2,
                       mobile=True)
        await asyncio.sleep(0.3)
        state["phone_width"] = await cdp.evaluate(s, "document.documentElement.scrollWidth")
        state["problems"] = problems(cdp.events)
        cdp.reader.cancel()
        return state


def inspect_page(url: str, screenshot: Path | None = None, width: int = 1200, height: int = 1600,
                 phone_width: int = 390, media_timeout: float = 30.0, binary: str | None = None) -> dict:
    """Open ``url`` in headless Chromium; returns the page's images, audio, tables' text, widths and
    problems (console errors, exceptions, failed loads), and writes a screenshot of the first screen."""
    binary = binary or find_chromium()
    if binary is None:
        raise RuntimeError("no Chromium found (apt-get install chromium)")
    with chromium(binary) as ws_url:
        return asyncio.run(_inspect(ws_url, url, screenshot, width, height, phone_width, media_timeout))


if __name__ == "__main__":  # python -m tests.helpers_browser INDEX.html[#anchor] [SCREENSHOT.png]
    import sys

    path, _, anchor = sys.argv[1].partition("#")
    shot = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    url = Path(path).resolve().as_uri() + (f"#{anchor}" if anchor else "")
    state = inspect_page(url, shot, width=1100, height=1500)
    print(json.dumps({"problems": state["problems"], "audio": len(state["audio"]), "images": len(state["images"]),
                      "not_loaded": [m["src"] for m in state["audio"] + state["images"]
                                     if m.get("ready", 1) < 1 or m.get("width", 1) == 0]}, indent=1))
