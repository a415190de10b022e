"""A git smart-HTTP server over TLS for the integration tests: `git http-backend` as CGI.

    python3 tests/https_git_server.py <project root> <cert.pem> <key.pem> <port file>

Requests under /moved/ are answered with a redirect to the same path without the prefix.
The chosen port is written to <port file> once the server listens. With GIT_BASIC_AUTH=user:password
in the environment, every request must carry those credentials (HTTP Basic); others get 401.
"""

import base64
import hmac
import http.server
import os
import ssl
import subprocess
import sys

ROOT, CERT, KEY, PORT_FILE = sys.argv[1:5]
BASIC_AUTH = os.environ.pop("GIT_BASIC_AUTH", None)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.cgi()

    def do_POST(self):
        self.cgi()

    def authorized(self):
        if BASIC_AUTH is None:
            return True
        expected = "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode()
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), expected.encode())

    def cgi(self):
        if not self.authorized():
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        if path.startswith("/moved/"):
            port = self.server.server_address[1]
            target = f"https://127.0.0.1:{port}{path[len('/moved'):]}"
            if query:
                target += "?" + query
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=ROOT,
            GIT_HTTP_EXPORT_ALL="1",
            PATH_INFO=path,
            QUERY_STRING=query,
            REQUEST_METHOD=self.command,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_ADDR="127.0.0.1",
        )
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
        ).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(sep)
        status, headers = 200, []
        for line in head.decode().splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
