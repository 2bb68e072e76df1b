#!/usr/bin/env python3
"""A stand-in OTLP/HTTP collector for bench/trace-cost.sh: accepts every `POST /v1/traces`,
answers 200 with an empty ExportTraceServiceResponse, and keeps only counts (requests, bytes).
It does not decode the spans: it costs the machine what a collector's network read costs, not
a collector's processing.

    bench/otlp-sink.py PORT STATS_FILE     # writes {"requests": N, "bytes": B} on SIGTERM
"""
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"requests": 0, "bytes": 0}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (the handler's name is http.server's)
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        with lock:
            counts["requests"] += 1
            counts["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def main() -> None:
    port, stats = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_):
        with lock, open(stats, "w") as f:
            json.dump(counts, f)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
