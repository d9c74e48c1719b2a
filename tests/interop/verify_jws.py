"""Verify popkey's SHRs and DPoP proofs with joserfc (a JOSE library popkey
did not write, on top of pyca/cryptography).

Reads lines `shr <compact>` or `dpop <compact>` on stdin; prints one JSON
line per input: {"ok": true, "alg", "thumbprint", "header", "claims"} or
{"ok": false, "error"}.
"""
import base64
import json
import sys

from joserfc import jws
from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry


def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(kind, token):
    header_b64, payload_b64, _ = token.split(".")
    header = json.loads(b64d(header_b64))
    payload = json.loads(b64d(payload_b64))
    jwk = payload["cnf"]["jwk"] if kind == "shr" else header["jwk"]
    key = JWKRegistry.import_key(jwk)
    registry = JWSRegistry(algorithms=[header["alg"]])
    # A DPoP header carries the public JWK: an RSA one exceeds joserfc's
    # default 512-byte header limit.
    registry.max_header_length = 4096
    obj = jws.deserialize_compact(token, key, registry=registry)
    return {
        "ok": True,
        "alg": header["alg"],
        "thumbprint": key.thumbprint(),
        "header": obj.headers(),
        "claims": json.loads(obj.payload),
    }


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    kind, token = line.split(" ", 1)
    try:
        out = verify(kind, token)
    except Exception as exc:  # report, never crash: the Rust test asserts
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)
