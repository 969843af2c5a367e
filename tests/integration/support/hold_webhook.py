"""A validating admission webhook for tests: it admits everything, logs each request it
gets to DIR/requests, and holds the first status update of one object until DIR/release
exists (writing DIR/held when it starts to), so a test can change the object while its
status write is held.

    python3 hold_webhook.py DIR PORT CERT KEY NAME

Prints "listening" once it serves.
"""

import http.server
import json
import os
import ssl
import sys
import time

directory, port, cert, key, held_name = sys.argv[1:6]
held_once = False


def exists(name):
    return os.path.exists(os.path.join(directory, name))


def append(name, line):
    with open(os.path.join(directory, name), "a") as file:
        file.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global held_once
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        what = "%s %s/%s %s" % (
            request["operation"],
            request["resource"]["resource"],
            request.get("subResource", ""),
            request.get("name", ""),
        )
        append("requests", what)
        if (
            not held_once
            and request.get("subResource") == "status"
            and request.get("name") == held_name
        ):
            held_once = True
            append("held", what)
            deadline = time.monotonic() + 25
            while not exists("release") and time.monotonic() < deadline:
                time.sleep(0.05)
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": request["uid"], "allowed": True},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
