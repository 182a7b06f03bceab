//! Loading the custody seed: a BIP39 phrase from a file or an environment
//! variable, turned into the 64-byte seed every derivation starts from.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

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

/// The devnet's seed phrase (BIP39's first test vector). PUBLIC AND
/// INSECURE: anyone can derive every key from it. It exists so `coffer run`
/// works with no setup, and is refused on mainnet. It differs from anvil's
/// phrase so deposit addresses never coincide with anvil's dev accounts.
pub const INSECURE_DEVNET_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

/// The 64-byte BIP39 seed: redacted in `Debug`, wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HdSeed([u8; 64]);

impl fmt::Debug for HdSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HdSeed([REDACTED])")
    }
}

impl HdSeed {
    /// Validates the phrase (English wordlist and checksum) and stretches it
    /// with the optional BIP39 passphrase.
    pub fn from_phrase(phrase: &SeedPhrase, passphrase: &str) -> Result<Self> {
        use bip39::{Error as Bip39Error, Language, Mnemonic};
        let mnemonic = Mnemonic::parse_in_normalized(Language::English, phrase.expose_words())
            .map_err(|err| {
                Error::InvalidMnemonic(match err {
                    Bip39Error::BadWordCount(_) => "it must have 12, 15, 18, 21 or 24 words",
                    Bip39Error::UnknownWord(_) => "a word is not in the English wordlist",
                    Bip39Error::InvalidChecksum => "its checksum does not match",
                    _ => "it does not parse",
                })
            })?;
        Ok(Self(mnemonic.to_seed_normalized(passphrase)))
    }

    /// A seed from raw bytes (test vectors).
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 64] {
        &self.0
    }

    /// Refuses the public devnet phrase when the keys would guard real money.
    pub fn check_allowed(phrase: &SeedPhrase, mainnet: bool) -> Result<()> {
        if mainnet && phrase.expose_words() == INSECURE_DEVNET_MNEMONIC {
            return Err(Error::InsecureSeedOnMainnet);
        }
        Ok(())
    }
}

impl SeedPhrase {
    /// A phrase given in code (tests and the devnet default).
    pub fn from_words(words: &str) -> Self {
        SeedPhrase(words.split_whitespace().collect::<Vec<_>>().join(" "))
    }
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
    fn invalid_phrases_are_refused_without_echoing_them() {
        for (words, expected) in [
            (
                "abandon abandon abandon",
                "it must have 12, 15, 18, 21 or 24 words",
            ),
            (
                "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon",
                "its checksum does not match",
            ),
            (
                "zebra abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon xyzzyq",
                "a word is not in the English wordlist",
            ),
        ] {
            let err = HdSeed::from_phrase(&SeedPhrase::from_words(words), "")
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                err,
                Some(format!(
                    "the seed phrase is not a valid BIP39 English mnemonic: {expected}"
                ))
            );
        }
        let seed = HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "")
            .expect("seed");
        assert_eq!(format!("{seed:?}"), "HdSeed([REDACTED])");
    }

    #[test]
    fn the_devnet_phrase_is_refused_on_mainnet() {
        let devnet = SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC);
        assert!(matches!(
            HdSeed::check_allowed(&devnet, true),
            Err(Error::InsecureSeedOnMainnet)
        ));
        assert!(HdSeed::check_allowed(&devnet, false).is_ok());
    }

    /// BIP39's first published vector, passphrase "TREZOR".
    #[test]
    fn bip39_published_seed() {
        let phrase = SeedPhrase::from_words(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        );
        let seed = HdSeed::from_phrase(&phrase, "TREZOR").expect("seed");
        let expected = "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04";
        let hex: String = seed.expose().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
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
