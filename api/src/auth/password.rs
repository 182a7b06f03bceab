//! Passwords (OWASP ASVS 5): 8 to 128 characters of any Unicode, not one of
//! the most common passwords, stored as argon2id (m = 19456 KiB, t = 2,
//! p = 1). Emails are normalized before they are stored or compared.

use std::sync::OnceLock;

use argon2::password_hash::{self, Output, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::FieldError;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;
const MAX_EMAIL_BYTES: usize = 254;

/// Among the most used passwords in public breach corpora; compared
/// case-insensitively. Length rules already refuse the shorter classics.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "12345678910",
    "0123456789",
    "87654321",
    "11111111",
    "00000000",
    "88888888",
    "66666666",
    "12341234",
    "11223344",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "q1w2e3r4",
    "1qaz2wsx",
    "zaq12wsx",
    "asdfghjkl",
    "asdfasdf",
    "abcd1234",
    "abc12345",
    "abcdefgh",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "superman",
    "starwars",
    "whatever",
    "trustno1",
    "letmein1",
    "welcome1",
    "welcome123",
    "computer",
    "internet",
    "michelle",
    "jennifer",
    "corvette",
    "mercedes",
    "1234qwer",
    "qwer1234",
    "aa123456",
    "a1234567",
    "admin123",
    "administrator",
    "changeme",
    "default1",
    "testtest",
    "test1234",
    "secret123",
    "football1",
    "monkey123",
    "dragon123",
    "master123",
    "shadow123",
    "freedom1",
    "chocolate",
    "butterfly",
    "liverpool",
    "manchester",
    "samsung1",
    "michael1",
    "jordan23",
    "hello123",
    "charlie1",
    "password!",
];

/// Checks a new password against the policy.
pub fn validate_new_password(field: &'static str, password: &str) -> Result<(), FieldError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    let lowered = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lowered.as_str()) {
        return Err(FieldError::new(field, "is too common; choose another"));
    }
    Ok(())
}

fn params() -> Params {
    // Constants within argon2's documented ranges: construction cannot fail.
    Params::new(19_456, 2, 1, None).unwrap_or_default()
}

/// argon2's working memory (19 MiB with Coffer's parameters), kept and
/// reused across runs. Allocating it per run, as argon2's own hashing API
/// does, let glibc's heap grow by about 19 MiB per hash without reusing
/// it (measured: 12 hashes in a row, 220 MiB resident).
pub struct Scratch(Vec<Block>);

impl Scratch {
    pub fn new() -> Self {
        Self(vec![Block::default(); params().block_count()])
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({} blocks)", self.0.len())
    }
}

/// Runs argon2 in `scratch`, or in memory of its own for a stored hash
/// whose parameters need more than Coffer's.
fn run(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: Salt<'_>,
    scratch: &mut Scratch,
) -> password_hash::Result<Output> {
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let mut own = Vec::new();
    let memory = if scratch.0.len() >= params.block_count() {
        &mut scratch.0[..]
    } else {
        own.resize(params.block_count(), Block::default());
        &mut own[..]
    };
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut *memory)?)
    })
}

/// Hashes a password into a PHC string that records its own parameters.
pub fn hash_password(password: &str) -> Result<String, password_hash::Error> {
    hash_password_in(password, &mut Scratch::new())
}

/// `hash_password` in reused memory.
pub fn hash_password_in(
    password: &str,
    scratch: &mut Scratch,
) -> Result<String, password_hash::Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&salt)?;
    let params = params();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = run(
        &argon2,
        &params,
        password.as_bytes(),
        salt.as_salt(),
        scratch,
    )?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: (&params).try_into()?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks a password against a stored hash. An unknown user is checked
/// against a fixed dummy hash so both cases take about as long.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    verify_password_in(password, stored, &mut Scratch::new())
}

/// `verify_password` in reused memory.
pub fn verify_password_in(password: &str, stored: Option<&str>, scratch: &mut Scratch) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("coffer-dummy-password").unwrap_or_default());
    let (hash, known) = match stored {
        Some(hash) => (hash, true),
        None => (dummy.as_str(), false),
    };
    let matches = (|| -> password_hash::Result<bool> {
        let parsed = PasswordHash::new(hash)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let argon2 = Argon2::new(algorithm, version, params.clone());
        // `Output` compares in constant time.
        Ok(run(&argon2, &params, password.as_bytes(), salt, scratch)? == expected)
    })()
    .unwrap_or(false);
    matches && known
}

/// Trims and lowercases an email and checks its shape (one `@`, a dotted
/// domain of letters, digits and hyphens, at most 254 bytes).
pub fn normalize_email(field: &'static str, email: &str) -> Result<String, FieldError> {
    let email = email.trim().to_lowercase();
    let invalid = |why: &str| {
        Err(FieldError::new(
            field,
            format!("is not a valid email address ({why})"),
        ))
    };
    if email.is_empty() {
        return invalid("empty");
    }
    if email.len() > MAX_EMAIL_BYTES {
        return invalid("too long");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid("no @");
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return invalid("bad local part");
    }
    if local.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(
                c,
                '<' | '>' | '(' | ')' | ',' | ';' | ':' | '"' | '\\' | '[' | ']'
            )
    }) {
        return invalid("bad character before @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return invalid("bad domain");
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(validate_new_password("password", "correct horse battery").is_ok());
        assert!(
            validate_new_password("password", "пароль-длинный").is_ok(),
            "any Unicode"
        );
        assert!(
            validate_new_password("password", "🔐🔐🔐🔐🔐🔐🔐🔐").is_ok(),
            "8 characters, 32 bytes"
        );
        let short = validate_new_password("password", "short1!").err();
        assert_eq!(
            short.map(|e| e.to_string()).as_deref(),
            Some("password: must be at least 8 characters")
        );
        let long = "x".repeat(129);
        assert!(validate_new_password("new_password", &long).is_err());
        assert!(validate_new_password("new_password", &"x".repeat(128)).is_ok());
        let common = validate_new_password("new_password", "Password123").err();
        assert_eq!(
            common.map(|e| e.to_string()).as_deref(),
            Some("new_password: is too common; choose another")
        );
    }

    #[test]
    fn hashes_are_argon2id_with_the_required_cost_and_verify() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("correct horse batterY", Some(&hash)));
        assert!(
            !verify_password("correct horse battery", None),
            "unknown users never verify"
        );
        assert!(!verify_password("anything", Some("not a phc string")));
        // Reused memory gives the same answers, across hashes and checks.
        let mut scratch = Scratch::new();
        let again = hash_password_in("correct horse battery", &mut scratch).expect("hash");
        assert!(verify_password_in(
            "correct horse battery",
            Some(&again),
            &mut scratch
        ));
        assert!(verify_password_in(
            "correct horse battery",
            Some(&hash),
            &mut scratch
        ));
        assert!(!verify_password_in(
            "wrong horse battery",
            Some(&hash),
            &mut scratch
        ));
        // Hashes made by argon2's own API (other parameters too) still verify.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
        let light = Params::new(4_096, 1, 1, None).expect("params");
        let foreign = Argon2::new(Algorithm::Argon2id, Version::V0x13, light)
            .hash_password(b"correct horse battery", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_password_in(
            "correct horse battery",
            Some(&foreign),
            &mut scratch
        ));
        let heavy = Params::new(40_000, 1, 1, None).expect("params");
        let bigger = Argon2::new(Algorithm::Argon2id, Version::V0x13, heavy)
            .hash_password(b"correct horse battery", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_password_in(
            "correct horse battery",
            Some(&bigger),
            &mut scratch
        ));
        assert!(!verify_password_in(
            "correct horse batterY",
            Some(&bigger),
            &mut scratch
        ));
        assert_ne!(
            hash,
            hash_password("correct horse battery").expect("hash"),
            "salted"
        );
    }

    #[test]
    fn emails_normalize_and_validate() {
        assert_eq!(
            normalize_email("email", "  Alice@Example.COM ")
                .ok()
                .as_deref(),
            Some("alice@example.com")
        );
        assert!(normalize_email("email", "a.b+tag@sub.example.org").is_ok());
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "a b@example.com",
            "alice@exa_mple.com",
            "alice@@example.com",
            "alice@-example.com",
        ] {
            let err = normalize_email("email", bad).err();
            assert!(
                err.as_ref().is_some_and(|e| e.field == "email"),
                "{bad:?}: {err:?}"
            );
        }
        assert!(normalize_email("email", &format!("{}@example.com", "a".repeat(65))).is_err());
    }
}
