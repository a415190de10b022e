#!/usr/bin/env python3
"""A stand-in for the Certus Trust service, for the docker-compose stack and local trials.

It answers Trust's one call the way the real service's contract says (README.md, "Uploading
results"): `POST /v1/verify-and-permit-upload` with a JSON permit request gets `200` and either
a permit (`permitted: true`, an `upload_permission_id`) or a denial (`permitted: false` and a
reason). It verifies nothing: every well-formed request is permitted, except those of the
workspaces listed in TRUST_STAND_IN_DENY_WORKSPACES, which are denied, so the stack can show
both outcomes. `GET /health` answers `200` for container health checks.

Settings (environment):
  TRUST_STAND_IN_LISTEN             address:port to listen on (default 0.0.0.0:8057)
  TRUST_STAND_IN_TOKEN              bearer token callers must send (default: none required);
                                    the service sends CERTUS_ASSURANCE_TRUST_TOKEN
  TRUST_STAND_IN_DENY_WORKSPACES    comma-separated workspace ids whose uploads are denied

Standard library only; never logs request bodies or tokens.
"""

import hmac
import itertools
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 16 * 1024 * 1024
PATH = "/v1/verify-and-permit-upload"
permits = itertools.count(1)


def settings():
    host, _, port = os.environ.get("TRUST_STAND_IN_LISTEN", "0.0.0.0:8057").rpartition(":")
    deny = {
        w.strip()
        for w in os.environ.get("TRUST_STAND_IN_DENY_WORKSPACES", "").split(",")
        if w.strip()
    }
    return (host or "0.0.0.0", int(port)), os.environ.get("TRUST_STAND_IN_TOKEN", ""), deny


ADDRESS, TOKEN, DENY = settings()


def decide(request):
    """The answer (status, body) to one permit request."""
    if not isinstance(request, dict):
        return 422, {"detail": "the body must be a JSON object"}
    missing = [
        k
        for k in ("scan_id", "tier", "artifacts", "storage_destinations")
        if k not in request
    ]
    if missing:
        return 422, {"detail": "missing fields: " + ", ".join(missing)}
    metadata = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
    workspace = str(metadata.get("workspace_id", ""))
    if workspace in DENY:
        return 200, {
            "permitted": False,
            "upload_permission_id": None,
            "reason": f"uploads of workspace {workspace} are denied by TRUST_STAND_IN_DENY_WORKSPACES",
            "verification_proof": None,
        }
    n = next(permits)
    return 200, {
        "permitted": True,
        "upload_permission_id": f"stand-in-{n}",
        "reason": "permitted by the Trust stand-in (nothing verified)",
        "verification_proof": {"chain_verified": False, "signer_outer": "trust-stand-in"},
        "storage_config": {"raw_s3": request["storage_destinations"].get("raw_s3")},
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "trust-stand-in"

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self.answer(200, {"status": "ok"})
        else:
            self.answer(404, {"detail": "Not Found"})

    def do_POST(self):
        if self.path != PATH:
            self.answer(404, {"detail": "Not Found"})
            return
        if TOKEN:
            sent = self.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {TOKEN}".encode()):
                self.answer(401, {"detail": "a valid bearer token is required"})
                return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.answer(413, {"detail": f"the body must be at most {MAX_BODY} bytes"})
            return
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self.answer(422, {"detail": "the body is not JSON"})
            return
        self.answer(*decide(request))

    def log_message(self, format, *args):
        # Method, path and status only: never bodies or headers.
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


if __name__ == "__main__":
    server = ThreadingHTTPServer(ADDRESS, Handler)
    print(f"trust stand-in listening on {ADDRESS[0]}:{server.server_address[1]}", flush=True)
    server.serve_forever()
