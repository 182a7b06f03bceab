//! Key material. This crate loads the custody seed and (as chains are added)
//! derives keys and signs transactions. It never touches the network or the
//! database, and never logs or `Debug`-prints key material: every type that
//! holds a secret redacts itself and wipes its memory on drop.
//!
//! No feature flags.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, ZeroizeOnDrop};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read seed file {path}: {source}")]
    SeedFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seed environment variable `{0}` is not set or not valid UTF-8")]
    SeedEnv(String),
    #[error("seed from {0} is empty")]
    EmptySeed(String),
}

/// Where the seed phrase comes from. Never a command-line argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedSource {
    File(PathBuf),
    Env(String),
}

/// A seed phrase held in memory: redacted in `Debug`, wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SeedPhrase(String);

impl fmt::Debug for SeedPhrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeedPhrase([REDACTED])")
    }
}

impl SeedPhrase {
    /// Loads the phrase, normalizing whitespace between words.
    pub fn load(source: &SeedSource) -> Result<Self> {
        let (mut raw, origin) = match source {
            SeedSource::File(path) => (read_file(path)?, format!("file {}", path.display())),
            SeedSource::Env(var) => (
                std::env::var(var).map_err(|_| Error::SeedEnv(var.clone()))?,
                format!("environment variable `{var}`"),
            ),
        };
        let normalized = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        raw.zeroize();
        if normalized.is_empty() {
            return Err(Error::EmptySeed(origin));
        }
        Ok(Self(normalized))
    }

    /// The phrase's words; callers must not log them.
    pub fn expose_words(&self) -> &str {
        &self.0
    }
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::SeedFile {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_normalizes_a_file_without_printing_it() {
        let dir = std::env::temp_dir().join(format!("signer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("seed");
        std::fs::write(&path, "  abandon  abandon\n about \n").expect("write seed");
        let seed = SeedPhrase::load(&SeedSource::File(path)).expect("load");
        assert_eq!(seed.expose_words(), "abandon abandon about");
        assert_eq!(format!("{seed:?}"), "SeedPhrase([REDACTED])");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_sources_name_what_is_missing() {
        let err = SeedPhrase::load(&SeedSource::Env("COFFER_TEST_SURELY_UNSET_SEED".into()))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "seed environment variable `COFFER_TEST_SURELY_UNSET_SEED` is not set or not valid UTF-8"
            )
        );
        let err = SeedPhrase::load(&SeedSource::File("/nonexistent/seed".into())).err();
        assert!(matches!(err, Some(Error::SeedFile { .. })));
    }
}
