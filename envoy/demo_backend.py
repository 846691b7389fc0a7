#!/usr/bin/env python3
"""Demo backend for `make run`: answers every request and reports its load.

Every response carries an ORCA load report (`endpoint-load-metrics: TEXT cpu_utilization=…`)
and `x-db-latency-ms`, which tenant-quota's saturation signals read. `/llm…` responses also
carry `x-tokens-used: 1200` (a response-cost budget). Tell it to act saturated:

    curl -X POST 'localhost:10001/control?cpu=0.95&db=1200'   # critical load
    curl -X POST 'localhost:10001/control?cpu=0.1&db=20'      # back to normal
"""
import argparse
import time
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOAD = {"cpu": 0.1, "db": 20.0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, extra=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        with LOCK:
            cpu, db = LOAD["cpu"], LOAD["db"]
        self.send_header("endpoint-load-metrics", f"TEXT cpu_utilization={cpu}")
        self.send_header("x-db-latency-ms", f"{db:g}")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _control(self):
        q = parse_qs(urlparse(self.path).query)
        with LOCK:
            if "cpu" in q:
                LOAD["cpu"] = float(q["cpu"][0])
            if "db" in q:
                LOAD["db"] = float(q["db"][0])
            state = dict(LOAD)
        self._send(200, json.dumps(state) + "\n")

    def _any(self):
        self._body()
        if urlparse(self.path).path == "/control":
            return self._control()
        if self.path.startswith("/export"):
            # A slow export (1 s, or ?ms=N) for the queue demo.
            ms = float(parse_qs(urlparse(self.path).query).get("ms", ["1000"])[0])
            time.sleep(min(ms, 30000) / 1000)
        extra = [("x-tokens-used", "1200")] if self.path.startswith("/llm") else []
        self._send(200, "hello from the demo backend\n", extra)

    do_GET = do_POST = do_PUT = do_DELETE = _any


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=10001)
    a = p.parse_args()
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
