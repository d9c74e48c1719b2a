// A real OAuth 2.0 authorization server nobody on this project wrote
// (panva's oidc-provider) with its RFC 8705 mutual-TLS features on:
// certificate-bound access tokens (`cnf.x5t#S256` in JWT access tokens),
// self_signed_tls_client_auth and tls_client_auth, on a Node `https` server
// that asks every client for a certificate.
//
//   node mtls-server.mjs CONFIG_FILE
//
// CONFIG_FILE is JSON:
//   {"port": 0,                       // 0: any free port
//    "server_cert": "server.pem",     // the server's certificate chain (PEM)
//    "server_key": "server.key",      // its private key (PEM)
//    "client_ca": "ca.pem",           // CA(s) that issue tls_client_auth certificates
//    "clients": [ {client metadata}, … ]}
// Each client gets client_credentials, scope api:read and
// tls_client_certificate_bound_access_tokens: true unless it says otherwise;
// give client_id, token_endpoint_auth_method and, per method, `jwks`
// (self_signed_tls_client_auth: the certificate in `x5c`; private_key_jwt:
// the assertion key) or `tls_client_auth_subject_dn`.
//
// Prints {"issuer","token_endpoint","jwks"} on stdout once it listens
// ("jwks": the public keys access tokens are signed with).
//
// Client certificates: the TLS layer requests one and lets the handshake
// finish without one or with one no CA vouches for (requestCert: true,
// rejectUnauthorized: false); oidc-provider reads the peer certificate
// through features.mTLS.getCertificate. tls_client_auth additionally
// requires that Node verified the certificate against `client_ca`
// (certificateAuthorized) and that its subject DN, in RFC 4514 order, is the
// registered tls_client_auth_subject_dn.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const [, , configFile] = process.argv;
const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));

const server = https.createServer({
  cert: fs.readFileSync(config.server_cert),
  key: fs.readFileSync(config.server_key),
  ca: fs.readFileSync(config.client_ca),
  requestCert: true,
  rejectUnauthorized: false,
});
await new Promise((resolve) => server.listen(config.port ?? 0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `https://127.0.0.1:${port}`;

const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'mtls-as', alg: 'ES256', use: 'sig' };
const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid: 'mtls-as', alg: 'ES256', use: 'sig' };

// The peer's certificate on this request's TLS connection, if it sent one.
function peerCertificate(ctx) {
  const socket = ctx.req.socket;
  if (typeof socket.getPeerX509Certificate !== 'function') return undefined;
  return socket.getPeerX509Certificate() ?? undefined;
}

// Node prints a subject as "C=…\nO=…\nCN=…" (issuer order); RFC 4514 strings
// (what tls_client_auth_subject_dn holds) list the RDNs the other way round.
function rfc4514(subject) {
  return subject.split('\n').reverse().join(',');
}

const clients = config.clients.map((c) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  id_token_signed_response_alg: 'ES256',
  scope: 'api:read',
  tls_client_certificate_bound_access_tokens: true,
  ...c,
}));

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  scopes: ['api:read'],
  clientAuthMethods: ['self_signed_tls_client_auth', 'tls_client_auth', 'private_key_jwt', 'client_secret_post', 'client_secret_basic'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['ES256', 'RS256', 'PS256'],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      selfSignedTlsClientAuth: true,
      tlsClientAuth: true,
      getCertificate: peerCertificate,
      certificateAuthorized: (ctx) => ctx.req.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) => {
        const cert = peerCertificate(ctx);
        if (!cert) return false;
        switch (property) {
          case 'tls_client_auth_subject_dn':
            return rfc4514(cert.subject) === expected;
          default:
            return false;
        }
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:popkey:api',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api:read',
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.proxy = false;
// Client errors, for the test's log (stderr), never the tokens.
provider.on('grant.error', (ctx, err) => console.error(`grant.error: ${err.message} ${err.error_description ?? ''} ${err.error_detail ?? ''}`));
provider.on('server_error', (ctx, err) => console.error(`server_error: ${err.stack}`));

server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({
  issuer,
  token_endpoint: `${issuer}/token`,
  jwks: { keys: [publicJwk] },
})}\n`);
