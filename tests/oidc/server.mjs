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
import crypto from 'node:crypto';
import fs from 'node:fs';
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

const provider = new Provider(issuer, {
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
  jwks: { keys: [signingKey] },
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
      nonceSecret: crypto.randomBytes(32),
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
provider.proxy = false;

const server = provider.listen(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({
    issuer,
    token_endpoint: `${issuer}/token`,
    ...(opaque ? { introspection_endpoint: `${issuer}/token/introspection` } : {}),
  }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
