"""A local RFC 3161 time-stamping authority for tests, built on `openssl ts -reply`.

A throwaway CA and a TSA certificate (extendedKeyUsage critical timeStamping) are made in a
folder; an HTTP server on 127.0.0.1 answers POSTed TimeStampReqs with `openssl ts -reply`.
"""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONFIG = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.crt
certs = $dir/tsa.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256
accuracy = secs:1
ordering = yes
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _ossl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tsa(folder: Path) -> Path:
    """Keys, certificates and the openssl config of a TSA in `folder`; returns the CA cert."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test TSA CA",
          "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign", cwd=folder)
    _ossl("req", "-new", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=test TSA",
          cwd=folder)
    (folder / "ext.cnf").write_text("extendedKeyUsage=critical,timeStamping\n"
                                    "keyUsage=critical,digitalSignature\n"
                                    "basicConstraints=CA:FALSE\n")
    _ossl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
          "-CAcreateserial", "-out", "tsa.crt", "-days", "2", "-extfile", "ext.cnf", cwd=folder)
    (folder / "serial").write_text("01\n")
    (folder / "ts.cnf").write_text(CONFIG.format(dir=folder))
    return folder / "ca.crt"


class TSA:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = make_tsa(folder)
        self.requests = 0
        lock = threading.Lock()
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    tsa.requests += 1
                    q, r = folder / "query.tsq", folder / "reply.tsr"
                    q.write_bytes(body)
                    out = subprocess.run(["openssl", "ts", "-reply", "-config", "ts.cnf",
                                          "-queryfile", "query.tsq", "-out", "reply.tsr"],
                                         cwd=folder, capture_output=True, timeout=60,
                                         check=False)
                    reply = r.read_bytes() if out.returncode == 0 else b""
                self.send_response(200 if reply else 500)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsa"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
