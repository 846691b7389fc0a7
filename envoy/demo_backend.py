#!/usr/bin/env python3
"""Demo backend for `make run`: answers every request and reports its load.

Every response carries an ORCA load report (`endpoint-load-metrics: TEXT cpu_utilization=…`)
and `x-db-latency-ms`, which tenant-quota's saturation signals read. `/llm…` responses also
carry `x-tokens-used: 1200` (a response-cost budget). Tell it to act saturated:

    curl -X POST 'localhost:10001/control?cpu=0.95&db=1200'   # critical load
    curl -X POST 'localhost:10001/control?cpu=0.1&db=20'      # back to normal

It also speaks two LLM APIs, with usage, for the token and cost budgets:
`POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic), JSON, or
`text/event-stream` when the body has `"stream": true`; `?chunk=N` writes the body in
N-byte pieces (flushed, 20 ms apart) to show that the stream is not held back.
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
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            # Envoy sends a body chunked when the filter drops its content-length (it may
            # rewrite an LLM request's body).
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
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

    def _llm(self, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        q = parse_qs(urlparse(self.path).query)
        chunk = int(q.get("chunk", ["0"])[0] or 0)
        words = "Hello from the demo backend, one token at a time".split()
        model = req.get("model", "gpt-4o")
        anthropic = urlparse(self.path).path.endswith("/messages")
        n_in, n_out = 17, len(words)
        if not req.get("stream"):
            if anthropic:
                out = {"id": "msg_demo", "type": "message", "role": "assistant", "model": model,
                       "content": [{"type": "text", "text": " ".join(words)}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": n_in, "output_tokens": n_out}}
            else:
                out = {"id": "chatcmpl-demo", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}
            return self._write(200, "application/json", (json.dumps(out) + "\n").encode(), chunk)
        events = []
        if anthropic:
            events.append(("message_start", {"type": "message_start", "message": {"id": "msg_demo", "model": model, "usage": {"input_tokens": n_in, "output_tokens": 1}}}))
            for w in words:
                events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w + " "}}))
            events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n_out}}))
            events.append(("message_stop", {"type": "message_stop"}))
            text = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events)
        else:
            for w in words:
                events.append({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"content": w + " "}}], "usage": None})
            events.append({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [],
                           "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}})
            text = "".join(f"data: {json.dumps(d)}\n\n" for d in events) + "data: [DONE]\n\n"
        self._write(200, "text/event-stream", text.encode(), chunk or 64)

    def _write(self, status, ctype, data, chunk):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        step = chunk if chunk > 0 else len(data)
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
            if chunk > 0:
                time.sleep(0.02)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _any(self):
        body = self._body()
        if urlparse(self.path).path in ("/v1/chat/completions", "/v1/messages"):
            return self._llm(body)
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
    p.add_argument("--port", type=int, default=10001, help="0: any free port (the one bound is printed)")
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    # tests/e2e_docs.rs starts it on port 0 and reads the bound port from this line.
    print(f"demo backend listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
