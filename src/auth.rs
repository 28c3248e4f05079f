//! Authentication (who is calling?) and authorization (what may they see or do?).
//!
//! Everything the service knows about callers lives in this one module so that
//! the rules can be read, reviewed and tested in one place instead of being
//! scattered through HTTP handlers:
//!
//! * [`Authenticator`] turns an `Authorization: Bearer <JWT>` header into a
//!   [`Caller`], or refuses it with one [`AuthReason`] (the 401's stable `reason`).
//!   The signing algorithm is *pinned* by configuration: the
//!   algorithm written in the token header is never trusted on its own, which
//!   is what defeats `alg: none` tokens and the classic "HS256 signed with the
//!   RSA public key" confusion attack.
//! * [`Caller::can_view`], [`Caller::can_manage`], [`Caller::can_move_money`]
//!   and [`Caller::can_upsert_users`] encode the contract's role table as pure
//!   functions, so handlers only decide *what to answer* (404 vs 403), never
//!   *who may*.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
///
/// jsonwebtoken defaults to 60 s; we keep it smaller because a token is a
/// bearer credential and every extra second after expiry is a second a leaked
/// token stays useful. 30 s still absorbs ordinary NTP drift between the
/// issuer and this service.
pub const LEEWAY_SECS: u64 = 30;

/// Longest `Authorization` header value we are willing to parse.
///
/// Real tokens for this service are a few hundred bytes. Refusing absurdly
/// long values up front keeps an unauthenticated client from making us
/// base64-decode and JSON-parse megabytes before we even check a signature.
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// Tokens remembered as verified, at most.
///
/// A booking service sends thousands of requests a second with the same token; checking its signature,
/// base64 and JSON every time was about 9% of the service's CPU per debit (docs/BENCHMARKS.md). A
/// verified token is remembered with its `exp`, keyed by the exact token text, so a token that differs in
/// one byte is verified afresh. When full the map is emptied (one O(n) pass, then refilled by use), so
/// memory stays bounded whatever callers send: at most this many × [`MAX_CACHED_TOKEN_LEN`] bytes.
pub const MAX_VERIFIED_TOKENS: usize = 10_000;

/// Longer tokens are verified every time rather than remembered (real ones are a few hundred bytes).
pub const MAX_CACHED_TOKEN_LEN: usize = 2 * 1024;

/// The role carried in the token's `role` claim.
///
/// The set is closed on purpose: an unknown role is a refused token, not a
/// caller with "no permissions", so a typo at the issuer fails loudly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Manager,
    Admin,
    Service,
}

impl Role {
    /// The wire spelling, identical to the serde representation; handy for
    /// logs and metrics labels without allocating.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Manager => "manager",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    /// Exact, case-sensitive match: the contract spells roles in lowercase and
    /// accepting variants would make two spellings of one privilege.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "manager" => Ok(Role::Manager),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// An authenticated caller: the facts from a verified token that the
/// authorization rules need, and nothing else.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
    pub company_id: Uuid,
}

impl Caller {
    /// May this caller see data owned by `owner_user_id` in `owner_company_id`?
    ///
    /// * `user`: only their own data.
    /// * `manager`: everything a user may, plus every user of the same company.
    /// * `admin`, `service`: everything.
    ///
    /// When this says no, the handler must answer exactly as if the resource
    /// did not exist (404), so probing ids reveals nothing.
    pub fn can_view(&self, owner_user_id: Uuid, owner_company_id: Uuid) -> bool {
        match self.role {
            Role::User => self.user_id == owner_user_id,
            Role::Manager => self.user_id == owner_user_id || self.company_id == owner_company_id,
            Role::Admin | Role::Service => true,
        }
    }

    /// May this caller create wallets, change wallet status, or create and
    /// change budgets for a resource in `owner_company_id`?
    ///
    /// Managers only inside their own company; admins anywhere. Users never,
    /// and neither does `service`: system-internal callers move money, they do
    /// not administer accounts.
    pub fn can_manage(&self, owner_company_id: Uuid) -> bool {
        match self.role {
            Role::Manager => self.company_id == owner_company_id,
            Role::Admin => true,
            Role::User | Role::Service => false,
        }
    }

    /// May this caller post wallet transactions and transfers?
    ///
    /// Only `service` (the system-internal caller) and `admin`. Money movement
    /// is deliberately not a manager power: managers administer, they do not
    /// pay.
    pub fn can_move_money(&self) -> bool {
        matches!(self.role, Role::Service | Role::Admin)
    }

    /// May this caller create or replace user records (`PUT /users/{id}`)?
    ///
    /// Users are provisioned by the identity side of the system (a `service`
    /// caller) or by an admin; letting managers do it would let them move
    /// people between companies.
    pub fn can_upsert_users(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Service)
    }
}

/// Where the key that verifies token signatures comes from.
///
/// An HMAC secret and a public key are separate variants (instead of "some
/// bytes plus an algorithm") so that a public key can never be used as an HMAC
/// secret by accident, which is the root of the alg-confusion attack.
#[derive(Clone)]
pub enum KeySource {
    /// Shared secret; tokens must be HS256.
    Hs256Secret(Vec<u8>),
    /// PEM-encoded public key; `alg` must be `RS256` or `ES256` and tokens
    /// must use exactly that algorithm.
    PublicKeyPem { alg: Algorithm, pem: Vec<u8> },
}

/// Hand-written so the HMAC secret never ends up in a log line through
/// `{:?}` of a configuration struct.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Hs256Secret(secret) => f
                .debug_struct("Hs256Secret")
                .field("len", &secret.len())
                .finish_non_exhaustive(),
            KeySource::PublicKeyPem { alg, pem } => f
                .debug_struct("PublicKeyPem")
                .field("alg", alg)
                .field("pem_len", &pem.len())
                .finish(),
        }
    }
}

/// What a token must prove: who signed it (`key`), who issued it (`iss`) and
/// that it was meant for this service (`aud`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub key: KeySource,
    pub issuer: String,
    pub audience: String,
}

/// The one thing a 401 says about why: a closed set of stable names (the problem's `reason` member).
///
/// A client needs to know whether to fetch a new token (EXPIRED), fix its clock (NOT_YET_VALID) or fix
/// its configuration (the rest); nothing more is said, and never a library's text. Claim-based reasons
/// (EXPIRED, NOT_YET_VALID, WRONG_ISSUER, WRONG_AUDIENCE, a MALFORMED claim) are only given for a token
/// whose signature verified: the signature is checked first, so a forger learns nothing about claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthReason {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <token>`, not a JWT (encoding, JSON), or its identity claims are missing or malformed
    /// (`sub`, `company_id` not UUIDs, an unknown `role`, no numeric `exp`).
    Malformed,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// `aud` is missing or does not include the configured audience.
    WrongAudience,
    /// The header's `alg` is not the pinned algorithm (`none` included).
    Algorithm,
}

impl AuthReason {
    pub const ALL: [AuthReason; 8] = [
        AuthReason::Missing,
        AuthReason::Malformed,
        AuthReason::BadSignature,
        AuthReason::Expired,
        AuthReason::NotYetValid,
        AuthReason::WrongIssuer,
        AuthReason::WrongAudience,
        AuthReason::Algorithm,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthReason::Missing => "MISSING",
            AuthReason::Malformed => "MALFORMED",
            AuthReason::BadSignature => "BAD_SIGNATURE",
            AuthReason::Expired => "EXPIRED",
            AuthReason::NotYetValid => "NOT_YET_VALID",
            AuthReason::WrongIssuer => "WRONG_ISSUER",
            AuthReason::WrongAudience => "WRONG_AUDIENCE",
            AuthReason::Algorithm => "ALGORITHM",
        }
    }

    /// A fixed human sentence for the problem's `detail`.
    pub fn describe(self) -> &'static str {
        match self {
            AuthReason::Missing => "no Authorization header was sent",
            AuthReason::Malformed => "the Authorization header is not a well-formed Bearer JWT for this service",
            AuthReason::BadSignature => "the token's signature does not verify",
            AuthReason::Expired => "the token has expired",
            AuthReason::NotYetValid => "the token is not valid yet (nbf)",
            AuthReason::WrongIssuer => "the token was not issued by the expected issuer",
            AuthReason::WrongAudience => "the token is not meant for this service (aud)",
            AuthReason::Algorithm => "the token is not signed with the algorithm this service accepts",
        }
    }

    /// The reason of a jsonwebtoken failure. Key and provider errors (which a token cannot cause with a
    /// key that loaded at start) count as a bad signature.
    fn of(kind: &jsonwebtoken::errors::ErrorKind) -> AuthReason {
        use jsonwebtoken::errors::ErrorKind as K;
        match kind {
            K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) | K::InvalidClaimFormat(_) | K::InvalidSubject => {
                AuthReason::Malformed
            }
            K::MissingRequiredClaim(c) if c == "iss" => AuthReason::WrongIssuer,
            K::MissingRequiredClaim(c) if c == "aud" => AuthReason::WrongAudience,
            K::MissingRequiredClaim(_) => AuthReason::Malformed,
            K::ExpiredSignature => AuthReason::Expired,
            K::ImmatureSignature => AuthReason::NotYetValid,
            K::InvalidIssuer => AuthReason::WrongIssuer,
            K::InvalidAudience => AuthReason::WrongAudience,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm | K::MissingAlgorithm => {
                AuthReason::Algorithm
            }
            _ => AuthReason::BadSignature,
        }
    }
}

impl fmt::Display for AuthReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request could not be authenticated.
///
/// All map to 401 with `WWW-Authenticate` and the [`AuthReason`] of [`AuthError::reason`]. The text of
/// `Invalid` (a library's message) is for server logs only.
#[derive(thiserror::Error, Debug)]
pub enum AuthError {
    /// No `Authorization` header at all.
    #[error("missing Authorization header")]
    Missing,
    /// A header is present but is not `Bearer <token>` (or not visible ASCII).
    #[error("Authorization header is not a Bearer token")]
    Malformed,
    /// A bearer token that failed validation; the text is for logs only.
    #[error("invalid token ({0}): {1}")]
    Invalid(AuthReason, String),
}

impl AuthError {
    /// What a client is told.
    pub fn reason(&self) -> AuthReason {
        match self {
            AuthError::Missing => AuthReason::Missing,
            AuthError::Malformed => AuthReason::Malformed,
            AuthError::Invalid(reason, _) => *reason,
        }
    }
}

/// Verifies bearer tokens against one pinned key and algorithm.
///
/// The decoding key and [`Validation`] are built once in [`Authenticator::new`]
/// (parsing a PEM per request would be wasted work) and shared behind an
/// `Arc`, so cloning into every warp filter is cheap.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    key: DecodingKey,
    validation: Validation,
    /// Tokens whose signature and claims passed, with what they proved (see [`MAX_VERIFIED_TOKENS`]).
    /// Hashed with foldhash, not the default SipHash: every authenticated request hashes its whole token
    /// (a few hundred bytes) here, about 1,500 instructions with SipHash (callgrind), a thirtieth of a
    /// wallet read. Flooding is not a concern a keyed SipHash is needed for: only tokens whose signature
    /// verified are inserted, and foldhash is still seeded per process.
    verified: dashmap::DashMap<Box<str>, Verified, foldhash::quality::RandomState>,
}

/// A verified token's caller and its `exp`: served from memory until `exp` + [`LEEWAY_SECS`], the same
/// instant at which jsonwebtoken would start refusing it. (`nbf` needs no re-check: it had passed, and
/// time only moves forward.)
#[derive(Clone)]
struct Verified {
    caller: Caller,
    exp: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.inner.validation.algorithms)
            .field("iss", &self.inner.validation.iss)
            .field("aud", &self.inner.validation.aud)
            .finish_non_exhaustive()
    }
}

/// The claims this service reads. Identity fields are taken as plain strings
/// and parsed afterwards so that a bad value produces a precise log reason
/// ("sub is not a UUID") rather than a generic JSON error.
///
/// `exp`, `nbf`, `iss` and `aud` are checked by jsonwebtoken's [`Validation`]
/// and are not repeated here.
#[derive(Deserialize)]
struct IncomingClaims {
    sub: String,
    role: String,
    company_id: String,
    /// Already validated by jsonwebtoken; kept to know how long the verified token may be remembered.
    exp: u64,
}

/// The claims [`mint_hs256`] writes.
#[derive(Serialize)]
struct OutgoingClaims<'a> {
    sub: String,
    role: &'static str,
    company_id: String,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Why the verifier could not be built from its configuration (at start; never the key's bytes).
#[derive(thiserror::Error, Debug)]
pub enum AuthConfigError {
    #[error("JWT issuer must not be empty")]
    EmptyIssuer,
    #[error("JWT audience must not be empty")]
    EmptyAudience,
    #[error("HS256 secret must not be empty")]
    EmptySecret,
    /// The PEM of a public key did not parse (`alg` says which kind was expected).
    #[error("invalid {kind} public key PEM: {source}")]
    InvalidPem {
        kind: &'static str,
        source: jsonwebtoken::errors::Error,
    },
    #[error("unsupported JWT algorithm {0:?} for a public key (use RS256 or ES256)")]
    UnsupportedAlgorithm(Algorithm),
}

impl Authenticator {
    /// Builds the verifier from configuration.
    ///
    /// Fails (with a message for the operator) on an empty secret, an
    /// algorithm other than RS256/ES256 for a public key, or a PEM that does
    /// not parse; failing at start-up is far better than refusing every
    /// request later.
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthConfigError> {
        install_crypto_provider();

        if cfg.issuer.is_empty() {
            return Err(AuthConfigError::EmptyIssuer);
        }
        if cfg.audience.is_empty() {
            return Err(AuthConfigError::EmptyAudience);
        }

        let (alg, key) = match &cfg.key {
            KeySource::Hs256Secret(secret) => {
                if secret.is_empty() {
                    return Err(AuthConfigError::EmptySecret);
                }
                if secret.len() < 32 {
                    // RFC 7518 §3.2: the HS256 key should be at least as long
                    // as the hash output. Not fatal, since development secrets
                    // are often short, but worth a warning.
                    tracing::warn!(
                        len = secret.len(),
                        "HS256 secret is shorter than 32 bytes; use a longer random secret in production"
                    );
                }
                (Algorithm::HS256, DecodingKey::from_secret(secret))
            }
            KeySource::PublicKeyPem { alg, pem } => {
                let key = match alg {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(pem)
                        .map_err(|source| AuthConfigError::InvalidPem { kind: "RSA", source })?,
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem)
                        .map_err(|source| AuthConfigError::InvalidPem { kind: "EC", source })?,
                    other => return Err(AuthConfigError::UnsupportedAlgorithm(*other)),
                };
                (*alg, key)
            }
        };

        // `Validation::new` pins exactly one algorithm; the defaults around it
        // are too lax for us (STACK.md): only `exp` is required, `nbf` is not
        // checked, and `iss`/`aud` are only compared when configured.
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[cfg.issuer.as_str()]);
        validation.set_audience(&[cfg.audience.as_str()]);

        Ok(Self {
            inner: Arc::new(Inner {
                key,
                validation,
                verified: dashmap::DashMap::default(),
            }),
        })
    }

    /// Authenticates one request from its raw `Authorization` header value.
    ///
    /// Takes the header as `Option<&str>` so the HTTP layer can pass
    /// `warp::header::optional` straight through and this function stays
    /// testable without a server.
    pub fn authenticate(&self, authorization_header: Option<&str>) -> Result<Caller, AuthError> {
        let header = authorization_header.ok_or(AuthError::Missing)?;
        let token = bearer_token(header)?;
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(known) = self.inner.verified.get(token)
            && now <= known.exp.saturating_add(LEEWAY_SECS)
        {
            return Ok(known.caller.clone());
        }

        let verified = well_formed(token).and_then(|token| self.verify(token));
        match &verified {
            Ok(v) if token.len() <= MAX_CACHED_TOKEN_LEN => {
                if self.inner.verified.len() >= MAX_VERIFIED_TOKENS {
                    self.inner.verified.clear();
                }
                self.inner.verified.insert(token.into(), v.clone());
            }
            Ok(_) => {}
            // An expired token leaves the map with its first refusal.
            Err(_) => {
                self.inner.verified.remove(token);
            }
        }
        verified.map(|v| v.caller)
    }

    /// Tokens remembered as verified right now (for tests and the bound's check).
    pub fn verified_tokens(&self) -> usize {
        self.inner.verified.len()
    }

    /// The full check: signature with the pinned key and algorithm, `exp`/`nbf`/`iss`/`aud`, then the
    /// identity claims.
    fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let data = jsonwebtoken::decode::<IncomingClaims>(token, &self.inner.key, &self.inner.validation)
            .map_err(|e| AuthError::Invalid(self.reason_of(token, e.kind()), e.to_string()))?;
        let claims = data.claims;

        let malformed = |why: String| AuthError::Invalid(AuthReason::Malformed, why);
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| malformed("sub is not a UUID".to_owned()))?;
        let role = claims.role.parse::<Role>().map_err(malformed)?;
        let company_id =
            Uuid::parse_str(&claims.company_id).map_err(|_| malformed("company_id is not a UUID".to_owned()))?;

        Ok(Verified {
            caller: Caller {
                user_id,
                role,
                company_id,
            },
            exp: claims.exp,
        })
    }

    /// The reason of a failed decode. jsonwebtoken cannot parse a header whose `alg` it does not know
    /// (`none`, `None`, `HS1`): that is a JSON error to it, but an algorithm refusal to the client, so a
    /// header that is JSON with a string `alg` other than the pinned one is [`AuthReason::Algorithm`].
    fn reason_of(&self, token: &str, kind: &jsonwebtoken::errors::ErrorKind) -> AuthReason {
        let reason = AuthReason::of(kind);
        if reason != AuthReason::Malformed {
            return reason;
        }
        let alg = token
            .split('.')
            .next()
            .and_then(|h| base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h).ok())
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
        match alg {
            Some(alg)
                if !alg
                    .parse::<Algorithm>()
                    .is_ok_and(|a| self.inner.validation.algorithms.contains(&a)) =>
            {
                AuthReason::Algorithm
            }
            _ => reason,
        }
    }
}

/// Extracts `<token>` from `Bearer <token>`.
///
/// The scheme is matched case-insensitively (RFC 7235 §2.1 says auth schemes
/// are case-insensitive), the token must be a single non-empty word: anything
/// else is `Malformed` rather than `Invalid`, which keeps "client sent
/// garbage" apart from "client sent a bad token" in the logs.
fn bearer_token(header: &str) -> Result<&str, AuthError> {
    if header.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::Malformed);
    }
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = rest.trim_start();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// A token with whitespace inside is not a token (`Bearer <token> extra`). Checked only for tokens not
/// remembered as verified: one that is was checked before it was remembered, and scanning a few hundred
/// bytes char by char on every request was most of a remembered token's cost (callgrind).
fn well_formed(token: &str) -> Result<&str, AuthError> {
    if token.contains(char::is_whitespace) {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Installs the aws-lc crypto provider for jsonwebtoken exactly once.
///
/// jsonwebtoken ≥ 10 panics at the first sign/verify if it cannot tell which
/// backend to use (for example when feature unification enables both). Calling
/// this is idempotent and cheap, so `main`, tests and [`Authenticator::new`]
/// all call it rather than relying on one of them going first.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
            .install_default()
            .is_err()
        {
            // Someone installed a provider before us through the raw API;
            // that is fine, signatures still get verified by it.
            tracing::debug!("a jsonwebtoken crypto provider was already installed");
        }
    });
}

/// Mints an HS256 token for `caller`, valid for `ttl` from now.
///
/// Meant for the development helper subcommand and tests; production tokens
/// come from the identity provider. The claims are exactly the ones
/// [`Authenticator::authenticate`] requires, so a minted token always passes
/// an authenticator configured with the same secret, issuer and audience.
pub fn mint_hs256(secret: &[u8], issuer: &str, audience: &str, caller: &Caller, ttl: Duration) -> String {
    install_crypto_provider();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = OutgoingClaims {
        sub: caller.user_id.to_string(),
        role: caller.role.as_str(),
        company_id: caller.company_id.to_string(),
        iss: issuer,
        aud: audience,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of plain string/number claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::get_current_timestamp;
    use serde_json::{Value, json};

    const SECRET: &[u8] = b"test-secret-that-is-at-least-32-bytes-long!";
    const ISS: &str = "https://issuer.test";
    const AUD: &str = "wallet-service";

    /// Throwaway 2048-bit RSA key pair generated with
    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` for these
    /// tests only. Never use it for anything else.
    const RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCPMBF1NjCU+lbl
hCutHtmO7PDu79XxAjZBojUG4gVYnEfmFPG9ad4bdR30zzYHGcH4zBtOvEEYhpak
DWrqmL6gLhzQ0Gdcd4f1WibirG+Jv3Hs9zk7PqTfxQHyIHt+v9MWIeMdLRHoYGJd
Q2ABa+GRoITm3SFESPBqSWJHfNBRXuttf7ZmxXGk7G2JIOpCwos7eZo192MBHPtm
fqX5MShiMxprSW3B70v8xUqzv2AVcxDrRzMSRCLsc/5zCtg6DgxobHkLKAUlc9/F
VYgiBnr2ySvVNCE/6XkHX5YDOdY0OCdeHZTJ1q0vry7dWt/0eZ0zZHpnC2wuYsP2
ZkfeR/RHAgMBAAECggEAAsRgif3WmYJu/Hd96pYOiUMN8ugin8o1pzYNxUjH5qr6
frlH5KuvlaNBRXJdrmxyga7cFjzwGxu6vIff2ZHDGVBa0TQ90x0iPP0VhErlyuku
t/AdJIZ05Dgn7fhvuobVeveDrpQo5O8752Z+a/icPta1yspaMrogH0W0xwHj+raN
+siTWonzRO7yR7+6hstUL4U4mzJFR9nOred1AIOCfNE9o3F4Cw4PPkN5QdUdPyaS
KfQFsOYX4a22VNX9Yo43SuRLrfqq5p9e78Z/yT8uQppQElbfINgQAfkFF4hubNYM
VjfhLCiA7GJB9d+svqUkPFVmv0rTFZ7zoThgBpKWsQKBgQC/oUtYqo3IPmhfclIC
u5swRorWQlSAzvF8+tzgNKqcG9ZNBvJ3SkxjsSpJt5VQZyIaH1GyMBXkyhN/qKF+
9GKXjSX2LWp/KjJLJ2GolRh/HuK1XiNOrGvN+1CGE8LFlb+BgTz6mGcdZEUfrmLG
/WE6j2K1lbJHxdk6rK5WtJMk0QKBgQC/SRxiw/AlVK9EoA3QE3ZklqgyIVfL1frg
AeOvvcB1Xir8WbTBM2VmKH3khgtSOtWze18wc3S65VBsfO4azeLfDhgBpfuaItGw
R43iokLgs0y0ysKAxS0/6Pu+3q72fW2YxXzFcRJcx2+mQB99Qk+xRmRkkFkqyVni
MPTVyNytlwKBgFl1sBoVjRkVYV5lnTmfYYR4+imqT47OjVgeOO0GSTuVl0bgXmMo
MV88/xPo+3DMpNPzGQ2Jez8Sw2WOUM5Wwowjnbw+WYBCL7Z8DRBJgmUeAxJOf0ck
ITPJBj+BjCT3kq6fqdsHOOQ0wjxXCdABy9ktxRQmbVMqXw4QPVdG94ZxAoGAKJLM
Z5KiBHkS+B5u75zBNxLRuFhkNAM+RHeCIQvBn+OKgJ5Sfcx2DJY4Jdnc2uNJ4tkf
VrqWnvH2/hv9sUfMgH2P0AGx/X63NYnn6ZN7VggSFCMR4JhyQaUciN7ZA8WVEpuJ
HKQgPfe7ker2Au6m0rZYoxAPKcktvJGfzRze2h8CgYAzp7AMbNnoQOSiS1NG+JUy
uSxemHgAIhAkBGQC8Ctwkb9+sp7/3JTeVMw619hCxceqaPkgagzAskYbpMri3uug
eU4uAyoyhX7fHubPzX1hQI6tK/hKSeuX334T+iCzDN00UJUUFOcz/zlEh+NMYzxV
/HYVPEl7FBsPbTn3CUYsoQ==
-----END PRIVATE KEY-----
";

    const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAjzARdTYwlPpW5YQrrR7Z
juzw7u/V8QI2QaI1BuIFWJxH5hTxvWneG3Ud9M82BxnB+MwbTrxBGIaWpA1q6pi+
oC4c0NBnXHeH9Vom4qxvib9x7Pc5Oz6k38UB8iB7fr/TFiHjHS0R6GBiXUNgAWvh
kaCE5t0hREjwakliR3zQUV7rbX+2ZsVxpOxtiSDqQsKLO3maNfdjARz7Zn6l+TEo
YjMaa0ltwe9L/MVKs79gFXMQ60czEkQi7HP+cwrYOg4MaGx5CygFJXPfxVWIIgZ6
9skr1TQhP+l5B1+WAznWNDgnXh2UydatL68u3Vrf9HmdM2R6ZwtsLmLD9mZH3kf0
RwIDAQAB
-----END PUBLIC KEY-----
";

    /// Throwaway P-256 key pair (PKCS#8 private key) for the ES256 tests only.
    const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwnYq9yRLLDy7PYIq
rsdgKR4EtMJF33p+h7nP9wJLtumhRANCAATwrgTqAZ1iCg16SRHmoR5VqZEXdKbe
j1hJT3EfON0WBwz+FkT7tgUgaE1tSKTePwQmS5Vg0FkbLR3AehdO3FUi
-----END PRIVATE KEY-----
";

    const EC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8K4E6gGdYgoNekkR5qEeVamRF3Sm
3o9YSU9xHzjdFgcM/hZE+7YFIGhNbUik3j8EJkuVYNBZGy0dwHoXTtxVIg==
-----END PUBLIC KEY-----
";

    fn hs256_config() -> AuthConfig {
        AuthConfig {
            key: KeySource::Hs256Secret(SECRET.to_vec()),
            issuer: ISS.to_owned(),
            audience: AUD.to_owned(),
        }
    }

    fn hs256_auth() -> Authenticator {
        Authenticator::new(&hs256_config()).expect("valid HS256 config")
    }

    fn rs256_auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            key: KeySource::PublicKeyPem {
                alg: Algorithm::RS256,
                pem: RSA_PUBLIC_PEM.as_bytes().to_vec(),
            },
            issuer: ISS.to_owned(),
            audience: AUD.to_owned(),
        })
        .expect("valid RS256 config")
    }

    fn caller(role: Role) -> Caller {
        Caller {
            user_id: Uuid::new_v4(),
            role,
            company_id: Uuid::new_v4(),
        }
    }

    /// A complete, valid claim set; tests remove or alter single fields.
    fn good_claims() -> Value {
        let now = get_current_timestamp();
        json!({
            "sub": Uuid::new_v4().to_string(),
            "role": "manager",
            "company_id": Uuid::new_v4().to_string(),
            "iss": ISS,
            "aud": AUD,
            "iat": now,
            "exp": now + 600,
        })
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        install_crypto_provider();
        jsonwebtoken::encode(&Header::new(alg), claims, key).expect("test token signs")
    }

    fn sign_hs256(claims: &Value) -> String {
        sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn assert_invalid(result: Result<Caller, AuthError>) {
        match result {
            Err(AuthError::Invalid(..)) => {}
            other => panic!("expected AuthError::Invalid, got {other:?}"),
        }
    }

    fn with(mut claims: Value, field: &str, value: Value) -> Value {
        claims[field] = value;
        claims
    }

    fn without(mut claims: Value, field: &str) -> Value {
        claims.as_object_mut().expect("claims are an object").remove(field);
        claims
    }

    // ---- authentication -------------------------------------------------

    #[test]
    fn valid_hs256_token_is_accepted_and_claims_are_returned() {
        let claims = good_claims();
        let caller = hs256_auth()
            .authenticate(Some(&bearer(&sign_hs256(&claims))))
            .expect("valid token");
        assert_eq!(caller.user_id.to_string(), claims["sub"]);
        assert_eq!(caller.company_id.to_string(), claims["company_id"]);
        assert_eq!(caller.role, Role::Manager);
    }

    #[test]
    fn minted_token_round_trips_through_the_authenticator() {
        let original = caller(Role::Service);
        let token = mint_hs256(SECRET, ISS, AUD, &original, Duration::from_secs(300));
        let back = hs256_auth()
            .authenticate(Some(&bearer(&token)))
            .expect("minted token is valid");
        assert_eq!(back.user_id, original.user_id);
        assert_eq!(back.company_id, original.company_id);
        assert_eq!(back.role, Role::Service);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let token = sign_hs256(&good_claims());
        assert!(hs256_auth().authenticate(Some(&format!("bearer {token}"))).is_ok());
    }

    #[test]
    fn alg_none_token_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(good_claims().to_string());
        let token = format!("{header}.{payload}.");
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&token))));
        assert_invalid(rs256_auth().authenticate(Some(&bearer(&token))));
    }

    #[test]
    fn token_signed_with_wrong_secret_is_refused() {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"some-other-secret-of-sufficient-length"),
            &good_claims(),
        );
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&token))));
    }

    #[test]
    fn token_with_tampered_payload_is_refused() {
        let token = sign_hs256(&good_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(with(good_claims(), "role", json!("admin")).to_string());
        parts[1] = &forged;
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&parts.join(".")))));
    }

    #[test]
    fn token_expired_beyond_leeway_is_refused() {
        let now = get_current_timestamp();
        let claims = with(good_claims(), "exp", json!(now - LEEWAY_SECS - 60));
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_expired_within_leeway_is_still_accepted() {
        let now = get_current_timestamp();
        let claims = with(good_claims(), "exp", json!(now - LEEWAY_SECS / 2));
        assert!(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))).is_ok());
    }

    #[test]
    fn token_without_exp_is_refused() {
        let claims = without(good_claims(), "exp");
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_with_non_numeric_exp_is_refused() {
        let claims = with(good_claims(), "exp", json!("tomorrow"));
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_with_nbf_in_the_future_beyond_leeway_is_refused() {
        let now = get_current_timestamp();
        let claims = with(good_claims(), "nbf", json!(now + LEEWAY_SECS + 60));
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_with_nbf_in_the_past_is_accepted() {
        let now = get_current_timestamp();
        let claims = with(good_claims(), "nbf", json!(now - 10));
        assert!(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))).is_ok());
    }

    #[test]
    fn token_with_wrong_issuer_is_refused() {
        let claims = with(good_claims(), "iss", json!("https://evil.test"));
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_without_issuer_is_refused() {
        let claims = without(good_claims(), "iss");
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_with_wrong_audience_is_refused() {
        let claims = with(good_claims(), "aud", json!("some-other-service"));
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_without_audience_is_refused() {
        let claims = without(good_claims(), "aud");
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_with_audience_list_containing_ours_is_accepted() {
        let claims = with(good_claims(), "aud", json!(["other", AUD]));
        assert!(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))).is_ok());
    }

    #[test]
    fn hs384_token_is_refused_when_hs256_is_pinned() {
        let token = sign(Algorithm::HS384, &EncodingKey::from_secret(SECRET), &good_claims());
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&token))));
    }

    #[test]
    fn missing_header_is_reported_as_missing() {
        assert!(matches!(hs256_auth().authenticate(None), Err(AuthError::Missing)));
    }

    #[test]
    fn header_that_is_not_a_bearer_token_is_malformed() {
        let token = sign_hs256(&good_claims());
        let auth = hs256_auth();
        // Remembered as verified first: a header that carries it with more after it is still malformed.
        assert!(auth.authenticate(Some(&bearer(&token))).is_ok());
        for header in [
            String::new(),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            token.clone(),
            format!("Basic {token}"),
            format!("Bearer {token} extra"),
            format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN)),
        ] {
            assert!(
                matches!(auth.authenticate(Some(&header)), Err(AuthError::Malformed)),
                "header {header:?} should be Malformed"
            );
        }
    }

    #[test]
    fn garbled_bearer_token_is_invalid() {
        let auth = hs256_auth();
        for token in ["not-a-jwt", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"] {
            assert_invalid(auth.authenticate(Some(&bearer(token))));
        }
    }

    #[test]
    fn token_whose_sub_is_not_a_uuid_is_refused() {
        let claims = with(good_claims(), "sub", json!("alice"));
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_whose_company_id_is_not_a_uuid_is_refused() {
        let claims = with(good_claims(), "company_id", json!("acme"));
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_without_company_id_is_refused() {
        let claims = without(good_claims(), "company_id");
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&sign_hs256(&claims)))));
    }

    #[test]
    fn token_with_unknown_role_is_refused() {
        let auth = hs256_auth();
        for role in [json!("superuser"), json!("Admin"), json!(""), json!(1)] {
            let claims = with(good_claims(), "role", role);
            assert_invalid(auth.authenticate(Some(&bearer(&sign_hs256(&claims)))));
        }
    }

    #[test]
    fn every_known_role_is_accepted() {
        let auth = hs256_auth();
        for role in [Role::User, Role::Manager, Role::Admin, Role::Service] {
            let claims = with(good_claims(), "role", json!(role.as_str()));
            let caller = auth
                .authenticate(Some(&bearer(&sign_hs256(&claims))))
                .expect("known role");
            assert_eq!(caller.role, role);
        }
    }

    #[test]
    fn rs256_token_signed_with_matching_private_key_is_accepted() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("test RSA key");
        let token = sign(Algorithm::RS256, &key, &good_claims());
        assert!(rs256_auth().authenticate(Some(&bearer(&token))).is_ok());
    }

    #[test]
    fn hs256_token_using_the_rsa_public_key_as_secret_is_refused() {
        // The classic alg-confusion attack: the public key is public, so if
        // the verifier let the token pick HS256 it would check the HMAC with
        // the PEM bytes as secret and accept the forgery.
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
            &with(good_claims(), "role", json!("admin")),
        );
        assert_invalid(rs256_auth().authenticate(Some(&bearer(&token))));
    }

    #[test]
    fn rs512_token_is_refused_when_rs256_is_pinned() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("test RSA key");
        let token = sign(Algorithm::RS512, &key, &good_claims());
        assert_invalid(rs256_auth().authenticate(Some(&bearer(&token))));
    }

    #[test]
    fn es256_token_signed_with_matching_private_key_is_accepted() {
        let auth = Authenticator::new(&AuthConfig {
            key: KeySource::PublicKeyPem {
                alg: Algorithm::ES256,
                pem: EC_PUBLIC_PEM.as_bytes().to_vec(),
            },
            issuer: ISS.to_owned(),
            audience: AUD.to_owned(),
        })
        .expect("valid ES256 config");
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("test EC key");
        let token = sign(Algorithm::ES256, &key, &good_claims());
        assert!(auth.authenticate(Some(&bearer(&token))).is_ok());
        // And an HS256 token is not, whatever its secret.
        assert_invalid(auth.authenticate(Some(&bearer(&sign_hs256(&good_claims())))));
    }

    #[test]
    fn bad_pem_is_refused_at_construction() {
        let result = Authenticator::new(&AuthConfig {
            key: KeySource::PublicKeyPem {
                alg: Algorithm::RS256,
                pem: b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n".to_vec(),
            },
            issuer: ISS.to_owned(),
            audience: AUD.to_owned(),
        });
        assert!(result.is_err());
    }

    #[test]
    fn public_key_with_an_hmac_or_other_algorithm_is_refused_at_construction() {
        for alg in [Algorithm::HS256, Algorithm::RS512, Algorithm::EdDSA] {
            let result = Authenticator::new(&AuthConfig {
                key: KeySource::PublicKeyPem {
                    alg,
                    pem: RSA_PUBLIC_PEM.as_bytes().to_vec(),
                },
                issuer: ISS.to_owned(),
                audience: AUD.to_owned(),
            });
            assert!(result.is_err(), "{alg:?} must be refused");
        }
    }

    #[test]
    fn empty_secret_issuer_or_audience_is_refused_at_construction() {
        let mut cfg = hs256_config();
        cfg.key = KeySource::Hs256Secret(Vec::new());
        assert!(Authenticator::new(&cfg).is_err());
        let mut cfg = hs256_config();
        cfg.issuer.clear();
        assert!(Authenticator::new(&cfg).is_err());
        let mut cfg = hs256_config();
        cfg.audience.clear();
        assert!(Authenticator::new(&cfg).is_err());
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let shown = format!("{:?} {:?}", hs256_config(), hs256_auth());
        assert!(!shown.contains(std::str::from_utf8(SECRET).expect("ascii")));
    }

    #[test]
    fn installing_the_crypto_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        // Still one working provider: a token signs and verifies, and a forged one is still refused.
        let token = mint_hs256(SECRET, ISS, AUD, &caller(Role::User), Duration::from_secs(60));
        assert!(hs256_auth().authenticate(Some(&bearer(&token))).is_ok());
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"not-the-secret"),
            &good_claims(),
        );
        assert_invalid(hs256_auth().authenticate(Some(&bearer(&forged))));
    }

    fn reason_of(result: Result<Caller, AuthError>) -> AuthReason {
        match result {
            Err(e) => e.reason(),
            Ok(_) => panic!("expected a refusal"),
        }
    }

    #[test]
    fn every_refusal_names_its_one_stable_reason() {
        let auth = hs256_auth();
        let now = get_current_timestamp();
        let check = |header: Option<String>, want: AuthReason| {
            assert_eq!(reason_of(auth.authenticate(header.as_deref())), want, "{header:?}");
        };
        let token = |claims: &Value| Some(bearer(&sign_hs256(claims)));
        check(None, AuthReason::Missing);
        check(Some("Basic abc".into()), AuthReason::Malformed);
        check(Some(bearer("not-a-jwt")), AuthReason::Malformed);
        check(token(&without(good_claims(), "exp")), AuthReason::Malformed);
        check(
            token(&with(good_claims(), "sub", json!("alice"))),
            AuthReason::Malformed,
        );
        check(
            token(&with(good_claims(), "role", json!("root"))),
            AuthReason::Malformed,
        );
        let other_key = EncodingKey::from_secret(b"some-other-secret-of-sufficient-length");
        check(
            Some(bearer(&sign(Algorithm::HS256, &other_key, &good_claims()))),
            AuthReason::BadSignature,
        );
        check(
            token(&with(good_claims(), "exp", json!(now - LEEWAY_SECS - 60))),
            AuthReason::Expired,
        );
        check(
            token(&with(good_claims(), "nbf", json!(now + LEEWAY_SECS + 60))),
            AuthReason::NotYetValid,
        );
        check(token(&with(good_claims(), "iss", json!("x"))), AuthReason::WrongIssuer);
        check(token(&without(good_claims(), "iss")), AuthReason::WrongIssuer);
        check(
            token(&with(good_claims(), "aud", json!("x"))),
            AuthReason::WrongAudience,
        );
        check(token(&without(good_claims(), "aud")), AuthReason::WrongAudience);
        check(
            Some(bearer(&sign(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET),
                &good_claims(),
            ))),
            AuthReason::Algorithm,
        );
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(good_claims().to_string());
        check(Some(bearer(&format!("{none}.{payload}."))), AuthReason::Algorithm);
        // A forged expired token is a bad signature: claims are judged only once the signature holds.
        check(
            Some(bearer(&sign(
                Algorithm::HS256,
                &other_key,
                &with(good_claims(), "exp", json!(now - 3600)),
            ))),
            AuthReason::BadSignature,
        );
    }

    #[test]
    fn reasons_have_their_wire_names() {
        let names: Vec<String> = AuthReason::ALL
            .iter()
            .map(|r| serde_json::to_string(r).expect("serializes"))
            .collect();
        assert_eq!(
            names,
            [
                "\"MISSING\"",
                "\"MALFORMED\"",
                "\"BAD_SIGNATURE\"",
                "\"EXPIRED\"",
                "\"NOT_YET_VALID\"",
                "\"WRONG_ISSUER\"",
                "\"WRONG_AUDIENCE\"",
                "\"ALGORITHM\""
            ]
        );
        for r in AuthReason::ALL {
            assert_eq!(format!("\"{r}\""), serde_json::to_string(&r).expect("serializes"));
        }
    }

    #[test]
    fn authenticator_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Authenticator>();
    }

    #[test]
    fn role_serde_uses_lowercase_names() {
        for role in [Role::User, Role::Manager, Role::Admin, Role::Service] {
            let json = serde_json::to_string(&role).expect("serializes");
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            let back: Role = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, role);
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
    }

    // ---- authorization --------------------------------------------------

    #[test]
    fn user_can_view_only_own_data() {
        let me = caller(Role::User);
        assert!(me.can_view(me.user_id, me.company_id));
        assert!(!me.can_view(Uuid::new_v4(), me.company_id));
        assert!(!me.can_view(Uuid::new_v4(), Uuid::new_v4()));
    }

    #[test]
    fn manager_can_view_everyone_in_own_company_only() {
        let mgr = caller(Role::Manager);
        assert!(mgr.can_view(mgr.user_id, mgr.company_id));
        assert!(mgr.can_view(Uuid::new_v4(), mgr.company_id));
        assert!(!mgr.can_view(Uuid::new_v4(), Uuid::new_v4()));
    }

    #[test]
    fn admin_and_service_can_view_everything() {
        for role in [Role::Admin, Role::Service] {
            let c = caller(role);
            assert!(c.can_view(Uuid::new_v4(), Uuid::new_v4()), "{role}");
            assert!(c.can_view(c.user_id, c.company_id), "{role}");
        }
    }

    #[test]
    fn only_managers_of_the_same_company_and_admins_can_manage() {
        let user = caller(Role::User);
        assert!(!user.can_manage(user.company_id));
        assert!(!user.can_manage(Uuid::new_v4()));

        let mgr = caller(Role::Manager);
        assert!(mgr.can_manage(mgr.company_id));

        let admin = caller(Role::Admin);
        assert!(admin.can_manage(admin.company_id));
        assert!(admin.can_manage(Uuid::new_v4()));

        let service = caller(Role::Service);
        assert!(!service.can_manage(service.company_id));
        assert!(!service.can_manage(Uuid::new_v4()));
    }

    #[test]
    fn manager_of_another_company_cannot_view_or_manage() {
        let target_company = Uuid::new_v4();
        let target_user = Uuid::new_v4();
        let other_mgr = caller(Role::Manager);
        assert_ne!(other_mgr.company_id, target_company);
        assert!(!other_mgr.can_view(target_user, target_company));
        assert!(!other_mgr.can_manage(target_company));
    }

    #[test]
    fn only_service_and_admin_can_move_money() {
        assert!(!caller(Role::User).can_move_money());
        assert!(!caller(Role::Manager).can_move_money());
        assert!(caller(Role::Admin).can_move_money());
        assert!(caller(Role::Service).can_move_money());
    }

    #[test]
    fn only_admin_and_service_can_upsert_users() {
        assert!(!caller(Role::User).can_upsert_users());
        assert!(!caller(Role::Manager).can_upsert_users());
        assert!(caller(Role::Admin).can_upsert_users());
        assert!(caller(Role::Service).can_upsert_users());
    }

    #[test]
    fn a_remembered_token_gives_the_same_caller_as_its_first_verification() {
        let auth = hs256_auth();
        let claims = good_claims();
        let header = bearer(&sign_hs256(&claims));
        let first = auth.authenticate(Some(&header)).expect("valid token");
        assert_eq!(auth.verified_tokens(), 1);
        let again = auth.authenticate(Some(&header)).expect("remembered token");
        assert_eq!(again.user_id, first.user_id);
        assert_eq!(again.company_id, first.company_id);
        assert_eq!(again.role, Role::Manager);
        assert_eq!(auth.verified_tokens(), 1);
    }

    #[test]
    fn a_token_differing_from_a_remembered_one_in_its_signature_is_refused() {
        let auth = hs256_auth();
        let token = sign_hs256(&good_claims());
        auth.authenticate(Some(&bearer(&token))).expect("valid token");
        // Change one character in the middle of the signature: same header and claims, other bytes.
        let at = token.rfind('.').expect("three-part token") + 10;
        let flipped = if token.as_bytes()[at] == b'A' { "B" } else { "A" };
        let mut forged = token.clone();
        forged.replace_range(at..=at, flipped);
        assert_invalid(auth.authenticate(Some(&bearer(&forged))));
        assert_eq!(auth.verified_tokens(), 1);
    }

    #[test]
    fn a_remembered_token_is_refused_once_it_expires_beyond_the_leeway() {
        let auth = hs256_auth();
        let now = get_current_timestamp();
        // Valid for about two more seconds (exp is LEEWAY_SECS - 2 s in the past).
        let claims = with(good_claims(), "exp", json!(now - LEEWAY_SECS + 2));
        let header = bearer(&sign_hs256(&claims));
        auth.authenticate(Some(&header)).expect("still within the leeway");
        std::thread::sleep(Duration::from_millis(3_100));
        assert_invalid(auth.authenticate(Some(&header)));
        assert_eq!(
            auth.verified_tokens(),
            0,
            "the expired token is forgotten on its refusal"
        );
    }

    #[test]
    fn remembered_tokens_never_exceed_their_bound() {
        let auth = hs256_auth();
        for _ in 0..MAX_VERIFIED_TOKENS + 5 {
            auth.authenticate(Some(&bearer(&sign_hs256(&good_claims()))))
                .expect("valid token");
            assert!(auth.verified_tokens() <= MAX_VERIFIED_TOKENS);
        }
        assert!(auth.verified_tokens() >= 1);
    }

    #[test]
    fn refused_tokens_are_not_remembered() {
        let auth = hs256_auth();
        let claims = with(good_claims(), "aud", json!("someone-else"));
        let header = bearer(&sign_hs256(&claims));
        assert_invalid(auth.authenticate(Some(&header)));
        assert_invalid(auth.authenticate(Some(&header)));
        assert_eq!(auth.verified_tokens(), 0);
    }
}
