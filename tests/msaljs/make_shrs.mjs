// Makes Signed HTTP Requests with Microsoft's own MSAL.js code: msal-browser's
// public SignedHttpRequest class, which drives msal-common's
// PopTokenGenerator with msal-browser's CryptoOps and TokenBindingKeyManager
// (WebCrypto RS256 keys, exactly as in a browser).
//
// Protocol (one JSON document per line):
//   stdin  line 1: {"cases":[{"method","uri","shrNonce"?,"shrClaims"?},…]}
//   stdout line 1: {"kid":"<RFC 7638 thumbprint of the generated key>"}
//   stdin  line 2: {"access_token":"<token bound to that kid>"}
//   stdout line 2: {"shrs":["<compact JWS>",…]}   (one per case, in order)
import { createInterface } from "node:readline";
import { webcrypto } from "node:crypto";

// msal-browser reads `window.crypto`; Node 20 has the same WebCrypto API.
if (typeof globalThis.window === "undefined") {
  globalThis.window = globalThis;
}
if (!globalThis.crypto) {
  globalThis.crypto = webcrypto;
}
// No IndexedDB in Node: answer `open` the way a browser with IndexedDB
// disabled does (an "error" event), so MSAL keeps the key in memory only, its
// documented fallback.
if (!globalThis.window.indexedDB) {
  globalThis.window.indexedDB = {
    open() {
      const request = new EventTarget();
      setTimeout(() => request.dispatchEvent(new Event("error")), 0);
      return request;
    },
  };
}

const { SignedHttpRequest } = await import("@azure/msal-browser");

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function readJson() {
  const { value, done } = await lines.next();
  if (done) throw new Error("stdin closed early");
  return JSON.parse(value);
}

const { cases } = await readJson();
if (!Array.isArray(cases) || cases.length === 0) throw new Error("no cases");
const shrFor = (c) =>
  new SignedHttpRequest({
    resourceRequestMethod: c.method,
    resourceRequestUri: c.uri,
    shrNonce: c.shrNonce,
    shrClaims: c.shrClaims,
  });

// One key for every case, as one MSAL.js client would use.
const kid = await shrFor(cases[0]).generatePublicKeyThumbprint();
process.stdout.write(JSON.stringify({ kid }) + "\n");

const { access_token } = await readJson();
const shrs = [];
for (const c of cases) {
  shrs.push(await shrFor(c).signRequest(access_token, kid));
}
process.stdout.write(JSON.stringify({ shrs }) + "\n");
process.exit(0);
