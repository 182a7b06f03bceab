//! Access and refresh tokens (RFC 8725, RFC 9068, RFC 9700).
//!
//! Access tokens are JWTs signed with HS256, the algorithm pinned on both
//! sides: the header's `alg` is never trusted, `typ` must be `at+jwt`, and
//! `kid` selects one of the configured keys, so keys rotate by adding a new
//! one, signing with it, and retiring the old one after the access lifetime.
//! Refresh tokens are opaque 256-bit random strings; only their SHA-256 is
//! stored, so they can never pass as access tokens or the reverse.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
const ALGORITHM: Algorithm = Algorithm::HS256;
/// HS256 keys shorter than the hash output weaken it (RFC 7518 §3.2).
pub const MIN_KEY_BYTES: usize = 32;
/// Clock skew tolerated between Coffer replicas.
const LEEWAY_SECS: u64 = 5;

/// The claims Coffer puts in an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token type is not {ACCESS_TOKEN_TYPE}")]
    WrongType,
    #[error("token algorithm is not allowed")]
    WrongAlgorithm,
    #[error("token key id is unknown")]
    UnknownKey,
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("signing key `{0}` is not configured or shorter than {MIN_KEY_BYTES} bytes")]
    BadKey(String),
}

/// The signing keys, by `kid`, and which one signs new tokens.
pub struct AccessTokens {
    issuer: String,
    audience: String,
    ttl_secs: u64,
    active_kid: String,
    keys: HashMap<String, (EncodingKey, DecodingKey)>,
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("AccessTokens")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .field("active_kid", &self.active_kid)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// `keys` are `(kid, secret)` pairs; `active_kid` must be among them.
    pub fn new(
        issuer: &str,
        audience: &str,
        ttl_secs: u64,
        active_kid: &str,
        keys: &[(String, Vec<u8>)],
    ) -> Result<Self, TokenError> {
        let mut map = HashMap::new();
        for (kid, secret) in keys {
            if secret.len() < MIN_KEY_BYTES {
                return Err(TokenError::BadKey(kid.clone()));
            }
            map.insert(
                kid.clone(),
                (
                    EncodingKey::from_secret(secret),
                    DecodingKey::from_secret(secret),
                ),
            );
        }
        if !map.contains_key(active_kid) {
            return Err(TokenError::BadKey(active_kid.to_owned()));
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
            active_kid: active_kid.to_owned(),
            keys: map,
        })
    }

    /// Signs an access token for `user` valid from `now` (Unix seconds, when
    /// the credentials or refresh token it rests on were checked); returns it
    /// with its expiry. `iat` is raised to `sessions_valid_after`, the user's
    /// cut-off (tokens issued before it are void), so a token issued in the
    /// second of a password change still counts as issued after it.
    pub fn issue(
        &self,
        user: Uuid,
        now: u64,
        sessions_valid_after: u64,
    ) -> Result<(String, u64), TokenError> {
        let (encoding, _) = self
            .keys
            .get(&self.active_kid)
            .ok_or(TokenError::UnknownKey)?;
        let exp = now + self.ttl_secs;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            exp,
            iat: now.max(sessions_valid_after),
            nbf: now,
            jti: Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(ALGORITHM);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(self.active_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok((token, exp))
    }

    /// Verifies signature, algorithm, type, key, issuer, audience and times.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(TokenError::WrongAlgorithm);
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let (_, decoding) = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<AccessClaims>(token, decoding, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        Uuid::parse_str(&data.claims.sub)
            .map_err(|_| TokenError::Invalid("subject is not a user id".into()))?;
        Ok(data.claims)
    }
}

/// A new refresh token and the hash to store for it.
pub fn new_refresh_token() -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    Ok((token, hash))
}

/// What the database stores and looks refresh tokens up by.
pub fn hash_refresh_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 2_000_000_000;

    fn secret(byte: u8) -> Vec<u8> {
        vec![byte; 32]
    }

    fn tokens() -> AccessTokens {
        AccessTokens::new(
            "coffer",
            "coffer-api",
            900,
            "k2",
            &[("k1".into(), secret(1)), ("k2".into(), secret(2))],
        )
        .expect("keys")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(NOW)
    }

    /// A token with arbitrary header and claims, HS256-signed with `key`.
    fn forge(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let head = URL_SAFE_NO_PAD.encode(header.to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
        mac.update(format!("{head}.{body}").as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{head}.{body}.{signature}")
    }

    fn good_claims(now: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": "coffer", "aud": "coffer-api", "sub": Uuid::new_v4().to_string(),
            "exp": now + 600, "iat": now, "nbf": now, "jti": "j",
        })
    }

    fn good_header() -> serde_json::Value {
        serde_json::json!({ "alg": "HS256", "typ": "at+jwt", "kid": "k2" })
    }

    #[test]
    fn issued_tokens_verify_and_carry_every_claim() {
        let tokens = tokens();
        let user = Uuid::new_v4();
        let (token, exp) = tokens.issue(user, now(), 0).expect("issue");
        let claims = tokens.verify(&token).expect("verify");
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            ("coffer", "coffer-api")
        );
        assert_eq!(claims.exp, exp);
        assert_eq!(claims.exp - claims.iat, 900);
        assert!(!claims.jti.is_empty());
        // The forging helper produces what the library produces.
        assert!(
            tokens
                .verify(&forge(good_header(), good_claims(now()), &secret(2)))
                .is_ok()
        );
    }

    #[test]
    fn iat_is_raised_to_the_users_cut_off() {
        let tokens = tokens();
        let user = Uuid::new_v4();
        let now = now();
        let (token, exp) = tokens.issue(user, now, now + 1).expect("issue");
        let claims = tokens.verify(&token).expect("verify");
        assert_eq!((claims.iat, claims.nbf, exp), (now + 1, now, now + 900));
        let (older, _) = tokens.issue(user, now, now - 60).expect("issue");
        assert_eq!(tokens.verify(&older).expect("verify").iat, now);
    }

    #[test]
    fn negative_suite() {
        let tokens = tokens();
        let now = now();
        let mut cases: Vec<(&str, String)> = vec![
            ("alg none", {
                let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"k2"}"#);
                let body = URL_SAFE_NO_PAD.encode(good_claims(now).to_string());
                format!("{head}.{body}.")
            }),
            (
                "wrong key",
                forge(good_header(), good_claims(now), &secret(9)),
            ),
            (
                "EdDSA header (algorithm confusion)",
                forge(
                    serde_json::json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "k2" }),
                    good_claims(now),
                    &secret(2),
                ),
            ),
            (
                "HS512 header",
                forge(
                    serde_json::json!({ "alg": "HS512", "typ": "at+jwt", "kid": "k2" }),
                    good_claims(now),
                    &secret(2),
                ),
            ),
            (
                "typ JWT",
                forge(
                    serde_json::json!({ "alg": "HS256", "typ": "JWT", "kid": "k2" }),
                    good_claims(now),
                    &secret(2),
                ),
            ),
            (
                "no typ",
                forge(
                    serde_json::json!({ "alg": "HS256", "kid": "k2" }),
                    good_claims(now),
                    &secret(2),
                ),
            ),
            (
                "unknown kid",
                forge(
                    serde_json::json!({ "alg": "HS256", "typ": "at+jwt", "kid": "k9" }),
                    good_claims(now),
                    &secret(2),
                ),
            ),
            (
                "no kid",
                forge(
                    serde_json::json!({ "alg": "HS256", "typ": "at+jwt" }),
                    good_claims(now),
                    &secret(2),
                ),
            ),
            (
                "refresh token as access token",
                new_refresh_token().expect("random").0,
            ),
            ("garbage", "not.a.jwt".into()),
            ("empty", String::new()),
        ];
        for (name, change) in [
            ("wrong aud", ("aud", serde_json::json!("someone-else"))),
            ("wrong iss", ("iss", serde_json::json!("evil"))),
            ("expired", ("exp", serde_json::json!(now - 60))),
            ("not yet valid", ("nbf", serde_json::json!(now + 600))),
            ("subject not a user id", ("sub", serde_json::json!("admin"))),
        ] {
            let mut claims = good_claims(now);
            claims[change.0] = change.1;
            cases.push((name, forge(good_header(), claims, &secret(2))));
        }
        for missing in ["exp", "iat", "nbf", "aud", "iss", "sub"] {
            let mut claims = good_claims(now);
            claims.as_object_mut().expect("object").remove(missing);
            let name: &'static str = Box::leak(format!("missing {missing}").into_boxed_str());
            cases.push((name, forge(good_header(), claims, &secret(2))));
        }
        for (name, token) in cases {
            assert!(tokens.verify(&token).is_err(), "{name} must be rejected");
        }
    }

    #[test]
    fn keys_rotate_by_kid() {
        let user = Uuid::new_v4();
        let old = AccessTokens::new(
            "coffer",
            "coffer-api",
            900,
            "k1",
            &[("k1".into(), secret(1))],
        )
        .expect("keys");
        let (token, _) = old.issue(user, now(), 0).expect("issue");
        // During rotation both keys verify; new tokens use k2.
        let rotating = tokens();
        assert!(rotating.verify(&token).is_ok());
        let (fresh, _) = rotating.issue(user, now(), 0).expect("issue");
        assert_eq!(
            jsonwebtoken::decode_header(&fresh)
                .ok()
                .and_then(|h| h.kid)
                .as_deref(),
            Some("k2")
        );
        // After it, the retired key's tokens fail.
        let rotated = AccessTokens::new(
            "coffer",
            "coffer-api",
            900,
            "k2",
            &[("k2".into(), secret(2))],
        )
        .expect("keys");
        assert_eq!(rotated.verify(&token).err(), Some(TokenError::UnknownKey));
        assert!(rotated.verify(&fresh).is_ok());
    }

    #[test]
    fn weak_or_missing_keys_are_refused() {
        assert!(matches!(
            AccessTokens::new("i", "a", 900, "k", &[("k".into(), vec![1; 31])]),
            Err(TokenError::BadKey(_))
        ));
        assert!(matches!(
            AccessTokens::new("i", "a", 900, "other", &[("k".into(), secret(1))]),
            Err(TokenError::BadKey(_))
        ));
        let debug = format!("{:?}", tokens());
        assert!(!debug.contains("[2, 2"), "keys never print: {debug}");
    }

    #[test]
    fn refresh_tokens_are_256_random_bits_stored_as_hashes() {
        let (token, hash) = new_refresh_token().expect("random");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&token).map(|b| b.len()).ok(),
            Some(32)
        );
        assert_eq!(hash, hash_refresh_token(&token));
        assert_ne!(new_refresh_token().expect("random").0, token);
    }
}
