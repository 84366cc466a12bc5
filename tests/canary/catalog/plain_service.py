"""A service the framework has never seen, for onboarding tests: the standard library only.

    python plain_service.py --release 1 --port 8123

Releases ``1`` and ``3`` answer every request; release ``2`` answers 500 to three requests in ten (by a
counter, so a test sees exactly that share).  ``/healthz`` always answers, unless ``--ready-when FILE``
is given: then it answers 503 ("warming up") until FILE exists (a release slow to get ready, as
one that loads its data first).  No ``core``, no Prometheus metrics: what a user's own small service
looks like.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAILING_IN_TEN = {"1": 0, "2": 3, "3": 0}  # 3: the reworked release, good again


def main() -> int:
    parser = argparse.ArgumentParser(prog="plain_service.py")
    parser.add_argument("--release", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-when", default="", help="/healthz answers 503 until this file exists")
    args = parser.parse_args()
    if args.release not in FAILING_IN_TEN:
        print(f"unknown release {args.release!r}: {', '.join(FAILING_IN_TEN)}", file=sys.stderr)
        return 2
    failing, counter, lock = FAILING_IN_TEN[args.release], itertools.count(), threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed ACK

        def do_GET(self) -> None:
            if self.path == "/healthz":
                if args.ready_when and not os.path.exists(args.ready_when):
                    return self._answer(503, f"warming up until {args.ready_when} exists\n")
                return self._answer(200, "ok\n")
            with lock:
                n = next(counter)
            if n % 10 < failing:
                return self._answer(500, f"release {args.release} failed request {n}\n")
            return self._answer(200, f"hello from release {args.release}\n")

        def _answer(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *values: object) -> None:  # quiet: the platform keeps logs
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"release {args.release} serves on port {args.port}", flush=True)
    server.serve_forever()  # until SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
