"""Stand-in for the TaskFlow backend in docker/compose.yml: the app dualkey stops and starts.

GET /healthz answers 200 while the app runs, 503 while stopped (dualkey's health_url).
POST /admin/stop and /admin/start switch it; GET /admin/status and /admin/logs report.
These are the endpoints docker/dualkey.toml's app_* commands call with curl; a real app
would close its database connections on stop. Listens on 0.0.0.0:$PORT (default 3000).
"""
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"running": True}
log = []
lock = threading.Lock()


def note(line):
    with lock:
        log.append(time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + line)
        del log[:-100]


class Handler(BaseHTTPRequestHandler):
    def answer(self, code, text):
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        running = state["running"]
        if self.path == "/healthz":
            self.answer(200 if running else 503, "ok" if running else "stopped")
        elif self.path == "/admin/status":
            self.answer(200, "backend: " + ("running" if running else "stopped"))
        elif self.path == "/admin/logs":
            with lock:
                self.answer(200, "\n".join(log[-20:]))
        else:
            self.answer(404, "not found")

    def do_POST(self):
        if self.path in ("/admin/stop", "/admin/start"):
            state["running"] = self.path == "/admin/start"
            note("backend " + ("started" if state["running"] else "stopped"))
            self.answer(200, "backend: " + ("running" if state["running"] else "stopped"))
        else:
            self.answer(404, "not found")

    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "3000"))), Handler)
    print(f"backend stand-in listening on port {server.server_address[1]}", flush=True)
    note("backend started")
    server.serve_forever()
