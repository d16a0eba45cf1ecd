"""Authentication and authorisation for every Stratus service.

Modules (``auth`` imports no project package but ``core``):

* :mod:`auth.config` — the ``[auth]`` config section (:class:`~auth.config.AuthConfig`);
* :mod:`auth.authenticator` — :class:`~auth.authenticator.Authenticator`: credentials -> principal;
* :mod:`auth.credentials` — what a request offers (:class:`~auth.credentials.Credentials`);
* :mod:`auth.delegation` — a broker acting for a user at a site: assertions signed
  (:class:`~auth.delegation.DelegationSigner`) and verified
  (:class:`~auth.delegation.DelegationVerifier`); :mod:`auth.broker_key` (the broker's
  certificate), :mod:`auth.claims` (reading an assertion), :mod:`auth.hostname`
  (certificate-for-host matching);
* :mod:`auth.middleware` — aiohttp middleware, ``PRINCIPAL`` request key, ``principal_of``;
* :mod:`auth.tls` — the server SSL context (grid CAs, CRLs, RFC 3820 proxies), peer chains;
* :mod:`auth.x509`, :mod:`auth.cadir`, :mod:`auth.dn` — chains, proxies, CA directory, DNs;
* :mod:`auth.voms` — VOMS attribute certificates and FQANs;
* :mod:`auth.oidc` — OIDC bearer tokens (discovery, JWKS, rotation);
* :mod:`auth.tokens` — static API tokens; :mod:`auth.passwords` — scrypt hashes;
* :mod:`auth.accounts` — accounts, linked identities, group memberships;
* :mod:`auth.authz` — ``require_admin`` and the other checks;
* :mod:`auth.principal`, :mod:`auth.errors`, :mod:`auth.request`, :mod:`auth.cache`.

See ``docs/authentication.md``.
"""
