#!/usr/bin/env python3
"""Loads a page in headless Chromium and waits, in real time, until it shows enough
publications; then saves its DOM and a screenshot.

    cdp_capture.py CHROMIUM URL SELECTOR MIN DOM_OUT PNG_OUT [TIMEOUT_S]

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: fd 3 in,
fd 4 out, JSON messages ended by NUL), so that nothing listens on a port. The wait is for
document.querySelectorAll(SELECTOR).length >= MIN, polled every 100 ms, bounded by TIMEOUT_S
(default 30). Exit 0 when the page got there, 1 when it did not (the DOM is saved anyway),
2 on a protocol failure.

`--dump-dom` with `--virtual-time-budget` does not do for this page: virtual time waits for
network fetches, not for WebSocket messages, which arrive in real time; a dump taken at the
end of the budget showed none in 3 of 4 tries.
"""

import base64
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time


class Cdp:
    def __init__(self, chromium, profile):
        # Moved above 10 so that the child's dup2 to 3 and 4 cannot clobber one another.
        to_chrome_r, to_chrome_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in os.pipe())
        from_chrome_r, from_chrome_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in os.pipe())

        def child_fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        args = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            "--window-size=900,600", "--remote-debugging-pipe", "about:blank",
        ]
        self.proc = subprocess.Popen(
            args, preexec_fn=child_fds, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self.inp = os.fdopen(from_chrome_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0

    def call(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.out.write(json.dumps(msg).encode() + b"\0")
        while True:
            reply = self.read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def read(self):
        while b"\0" not in self.buf:
            chunk = self.inp.read(65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    chromium, url, selector, minimum, dom_out, png_out = sys.argv[1:7]
    minimum = int(minimum)
    timeout = float(sys.argv[7]) if len(sys.argv) > 7 else 30.0
    with tempfile.TemporaryDirectory() as profile:
        cdp = Cdp(chromium, profile)
        try:
            target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.call(
                "Target.attachToTarget", {"targetId": target, "flatten": True}
            )["sessionId"]
            cdp.call("Page.enable", session=session)
            cdp.call("Page.navigate", {"url": url}, session=session)

            def evaluate(expression):
                result = cdp.call(
                    "Runtime.evaluate",
                    {"expression": expression, "returnByValue": True},
                    session=session,
                )
                return result.get("result", {}).get("value")

            count_js = f"document.querySelectorAll({json.dumps(selector)}).length"
            deadline = time.monotonic() + timeout
            count = 0
            while time.monotonic() < deadline:
                count = evaluate(count_js) or 0
                if count >= minimum:
                    break
                time.sleep(0.1)
            with open(dom_out, "w", encoding="utf-8") as f:
                f.write(evaluate("document.documentElement.outerHTML") or "")
            shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
            with open(png_out, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        except Exception as e:  # a protocol failure: say which step
            print(f"cdp_capture: {e}", file=sys.stderr)
            return 2
        finally:
            cdp.close()
    print(f"{count} elements match {selector!r}")
    return 0 if count >= minimum else 1


if __name__ == "__main__":
    sys.exit(main())
