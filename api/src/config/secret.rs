//! Settings that must never print.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A string that never prints: `Debug` and serialization show `[REDACTED]`.
#[derive(Clone, Deserialize)]
#[serde(from = "SecretInput")]
pub struct Secret(SecretString);

/// Environment values that look numeric arrive as numbers; a secret takes them as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum SecretInput {
    Text(String),
    Unsigned(u64),
    Signed(i64),
}

impl From<SecretInput> for Secret {
    fn from(input: SecretInput) -> Self {
        match input {
            SecretInput::Text(text) => Secret::from(text.as_str()),
            SecretInput::Unsigned(n) => Secret::from(n.to_string().as_str()),
            SecretInput::Signed(n) => Secret::from(n.to_string().as_str()),
        }
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(SecretString::from(value))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(SecretString::from(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[REDACTED]")
    }
}
