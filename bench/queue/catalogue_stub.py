"""Stand-in for concert-api's GET /api/concerts/{id}: 200 for ids 1..=20, else 404.
A threading server with a real listen backlog (http.server's default of 5 drops SYNs
under a burst, which shows up as one-second client stalls)."""
import http.server, re, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        m = re.fullmatch(r"/api/concerts/(\d+)", self.path)
        ok = m is not None and 1 <= int(m.group(1)) <= 20
        body = b'{"id":%s,"title":"t","performer":"p"}' % (m.group(1).encode() if ok else b"0")
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
