// A TLS server nobody on this project wrote the TLS of (Node's https, i.e.
// OpenSSL), for popkey's TLS tests and the mTLS bench.
//
//   node server.mjs SERVER_CERT SERVER_KEY [CLIENT_CA_FILE]
//
// With CLIENT_CA_FILE it requires a client certificate that chains to (or
// is one of) the certificates in that file, and OpenSSL checks the client's
// handshake signature. Every answer is JSON about the connection:
// {"authorized","protocol","client_cert_sha256" (base64url SHA-256 of the
// client certificate's DER, i.e. RFC 8705 x5t#S256),"handshakes" (TLS
// handshakes completed so far),"path"}. Prints {"port":N} once listening.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';

const [, , certFile, keyFile, clientCa] = process.argv;
const options = {
  cert: fs.readFileSync(certFile),
  key: fs.readFileSync(keyFile),
  minVersion: 'TLSv1.2',
};
if (clientCa) {
  options.requestCert = true;
  options.rejectUnauthorized = true;
  options.ca = fs.readFileSync(clientCa);
}
let handshakes = 0;
const server = https.createServer(options, (req, res) => {
  const peer = req.socket.getPeerCertificate();
  const body = {
    authorized: req.socket.authorized,
    protocol: req.socket.getProtocol(),
    client_cert_sha256: peer && peer.raw
      ? crypto.createHash('sha256').update(peer.raw).digest('base64url')
      : null,
    handshakes,
    path: req.url,
  };
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
});
server.on('secureConnection', () => { handshakes += 1; });
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
process.on('SIGTERM', () => process.exit(0));
