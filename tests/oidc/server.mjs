// A real OAuth 2.0 authorization server nobody on this project wrote
// (panva's oidc-provider), configured for client_credentials,
// private_key_jwt client authentication and DPoP-bound JWT access tokens.
//
//   node server.mjs PORT CLIENT_JWKS_FILE REQUIRE_NONCE(true|false)
//
// Prints {"issuer","token_endpoint"} on stdout once it listens.
//
// With POPKEY_OIDC_OPAQUE=1 in the environment, access tokens are OPAQUE
// (still DPoP-bound) and the RFC 7662 introspection endpoint is on, for a
// resource-server client `popkey-rs` authenticating with client_secret_basic
// and the secret in POPKEY_OIDC_RS_SECRET; the printed JSON then also has
// "introspection_endpoint".
//
// With POPKEY_OIDC_ROTATE=1, the server can rotate its signing key on demand
// (for the resource-server JWKS-refresh test): `POST /__popkey/rotate` makes a
// new ES256 key (a fresh kid) that signs every later token, while the JWKS
// keeps the old key too; `GET /__popkey/jwks-hits` answers how many times
// the JWKS endpoint was fetched, as {"hits": N}.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const [, , port, jwksFile, requireNonce] = process.argv;
const clientJwks = JSON.parse(fs.readFileSync(jwksFile, 'utf8'));
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'interop-as', alg: 'ES256', use: 'sig' };

const opaque = process.env.POPKEY_OIDC_OPAQUE === '1';
const resourceServer = opaque ? [{
  client_id: 'popkey-rs',
  client_secret: process.env.POPKEY_OIDC_RS_SECRET,
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'ES256',
  grant_types: [],
  response_types: [],
  redirect_uris: [],
}] : [];
if (opaque && !process.env.POPKEY_OIDC_RS_SECRET) throw new Error('POPKEY_OIDC_RS_SECRET is required');

const dpopNonceSecret = crypto.randomBytes(32);
const makeProvider = (signingKeys) => new Provider(issuer, {
  clients: [...resourceServer, {
    client_id: 'popkey-client',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: clientJwks,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    dpop_bound_access_tokens: true,
    id_token_signed_response_alg: 'ES256',
    scope: 'api:read',
  }],
  jwks: { keys: signingKeys },
  scopes: ['api:read'],
  enabledJWA: {
    dPoPSigningAlgValues: ['ES256', 'RS256', 'PS256'],
    clientAuthSigningAlgValues: ['ES256', 'RS256', 'PS256'],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: dpopNonceSecret,
      requireNonce: () => requireNonce === 'true',
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:popkey:api',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api:read',
        ...(opaque
          ? { accessTokenFormat: 'opaque' }
          : { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      }),
    },
    introspection: {
      enabled: opaque,
      // Only the resource server may introspect.
      allowedPolicy: (ctx, client) => client.clientId === 'popkey-rs',
    },
  },
});
let provider = makeProvider([signingKey]);
provider.proxy = false;

const rotate = process.env.POPKEY_OIDC_ROTATE === '1';
let signingKeys = [signingKey];
let handle = provider.callback();
let jwksHits = 0;
const rotating = (req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/__popkey/rotate') {
    const { privateKey: next } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = `interop-as-${signingKeys.length + 1}`;
    // The first key of the JWKS signs; the old keys stay published.
    signingKeys = [{ ...next.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }, ...signingKeys];
    provider = makeProvider(signingKeys);
    provider.proxy = false;
    handle = provider.callback();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kid }));
    return;
  }
  if (req.method === 'GET' && path === '/__popkey/jwks-hits') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ hits: jwksHits }));
    return;
  }
  if (path === '/jwks') jwksHits += 1;
  handle(req, res);
};

const server = (rotate ? http.createServer(rotating).listen(Number(port), '127.0.0.1') : null)
  ?? provider.listen(Number(port), '127.0.0.1');
server.on('listening', () => {
  console.log(JSON.stringify({
    issuer,
    token_endpoint: `${issuer}/token`,
    ...(opaque ? { introspection_endpoint: `${issuer}/token/introspection` } : {}),
  }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
