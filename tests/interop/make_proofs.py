"""Make DPoP proofs, SHRs and JWT access tokens with joserfc (a JOSE library
popkey did not write), for popkey's verifiers to check.

Prints one JSON object:
  {"jwks": {...authority public keys...}, "cases": [{"alg", "kind", "proof",
   "access_token", "method", "url", "iat"}]}
"""
import hashlib
import base64
import json
import secrets
import time

from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


registry = JWSRegistry(algorithms=["ES256", "RS256", "PS256"])
registry.max_header_length = 4096

authority = ECKey.generate_key("P-256", parameters={"kid": "as-1"})
now = int(time.time())
cases = []
for alg in ["ES256", "RS256", "PS256"]:
    if alg == "ES256":
        client = ECKey.generate_key("P-256")
    else:
        client = RSAKey.generate_key(2048)
    public = client.as_dict(private=False)
    jkt = client.thumbprint()
    for kind in ["dpop", "shr"]:
        cnf = {"jkt": jkt} if kind == "dpop" else {"kid": jkt}
        access_token = jwt.encode(
            {"alg": "ES256", "kid": "as-1", "typ": "at+jwt"},
            {"iss": "https://as.example", "aud": "api", "exp": now + 600, "cnf": cnf, "sub": "daemon"},
            authority,
        )
        url = "https://api.example.com/v1/items"
        if kind == "dpop":
            header = {"typ": "dpop+jwt", "alg": alg, "jwk": public}
            claims = {
                "jti": secrets.token_urlsafe(16),
                "htm": "GET",
                "htu": url,
                "iat": now,
                "ath": b64(hashlib.sha256(access_token.encode()).digest()),
            }
        else:
            header = {"alg": alg, "kid": jkt, "typ": "pop"}
            claims = {
                "at": access_token,
                "ts": now,
                "m": "GET",
                "u": "api.example.com",
                "p": "/v1/items",
                "nonce": secrets.token_hex(16),
                "cnf": {"jwk": public},
            }
        payload = json.dumps(claims, separators=(",", ":"))
        proof = jws.serialize_compact(header, payload, client, registry=registry)
        cases.append({
            "alg": alg, "kind": kind, "proof": proof, "access_token": access_token,
            "method": "GET", "url": url, "now": now, "jkt": jkt,
        })

print(json.dumps({"jwks": {"keys": [authority.as_dict(private=False)]}, "cases": cases}))
