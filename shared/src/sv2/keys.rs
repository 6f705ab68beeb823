//! The Noise **authority** key pair of an SV2 server.
//!
//! The authority key signs the certificate a server presents during the Noise NX handshake;
//! clients pin its public half (`authority_public_key` in SRI configs). Formats are the ones
//! SRI's `key-utils` and the spec use, so keys move freely between our tools and SRI's:
//!
//! - secret key: base58check of the 32 raw secret bytes, e.g.
//!   `mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n`;
//! - public key: base58check of `[0x01, 0x00] || x-only key (32 bytes)` (version 1, little
//!   endian), e.g. `9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh`.
//!
//! On disk, [`AuthorityKeys::load_or_generate`] keeps `<dir>/authority_secret_key` (mode 0600)
//! and `<dir>/authority_public_key`, one key per file followed by a newline.

use rand::RngCore;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use stratum_core::bitcoin::base58;
use stratum_core::bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey, XOnlyPublicKey};

/// File name of the secret key inside the key folder.
pub const SECRET_KEY_FILE: &str = "authority_secret_key";
/// File name of the public key inside the key folder.
pub const PUBLIC_KEY_FILE: &str = "authority_public_key";

/// Version prefix of an encoded authority public key (`1` as u16 little endian).
const PUBLIC_KEY_VERSION: u16 = 1;

/// A problem with an authority key, naming the key (never printing a secret).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An authority public key string is not a valid SRI/spec encoding.
    #[error("invalid authority public key `{key}`: {reason} (expected base58check of [0x01,0x00] || 32-byte x-only key, e.g. 9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh)")]
    InvalidPublicKey {
        /// The offending string, as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An authority secret key is not a valid SRI encoding (the key itself is never printed).
    #[error("invalid authority secret key{location}: {reason} (expected base58check of the 32 secret bytes)")]
    InvalidSecretKey {
        /// Where it came from, e.g. " in keys/authority_secret_key", or empty.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The authority key pair: signs the Noise certificates of the server.
#[derive(Clone)]
pub struct AuthorityKeys {
    keypair: Keypair,
}

impl std::fmt::Debug for AuthorityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityKeys")
            .field("public_key", &self.public_key_string())
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

impl AuthorityKeys {
    /// A fresh random key pair (OS randomness).
    pub fn generate() -> Self {
        let secp = Secp256k1::new();
        let mut rng = rand::rngs::OsRng;
        loop {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            // Fails only for 0 or values >= the curve order: astronomically rare, just retry.
            if let Ok(secret) = SecretKey::from_slice(&bytes) {
                return Self {
                    keypair: Keypair::from_secret_key(&secp, &secret),
                };
            }
        }
    }

    /// Parses a secret key in SRI format (base58check of the 32 secret bytes).
    pub fn from_secret_str(s: &str) -> Result<Self, KeyError> {
        Self::parse_secret(s, String::new())
    }

    fn parse_secret(s: &str, location: String) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidSecretKey {
            location: location.clone(),
            reason,
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let bytes = base58::decode_check(s).map_err(|e| invalid(base58_reason(&e)))?;
        if bytes.len() != 32 {
            return Err(invalid(format!(
                "decodes to {} bytes instead of 32",
                bytes.len()
            )));
        }
        let secret = SecretKey::from_slice(&bytes)
            .map_err(|_| invalid("not a valid secp256k1 secret key".into()))?;
        let secp = Secp256k1::new();
        Ok(Self {
            keypair: Keypair::from_secret_key(&secp, &secret),
        })
    }

    /// Loads `<dir>/authority_secret_key`, or generates a key pair and saves it there (mode
    /// 0600, folder created with mode 0700) when the file is absent. Also (re)writes
    /// `<dir>/authority_public_key`. Returns the keys and whether they were generated now.
    ///
    /// Two processes racing to generate end up with the same key: the secret file is created
    /// atomically and the loser loads the winner's key.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), KeyError> {
        let secret_path = dir.join(SECRET_KEY_FILE);
        let (keys, generated) = match fs::read_to_string(&secret_path) {
            Ok(text) => (Self::load_file(&secret_path, &text)?, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_dir(dir)?;
                let fresh = Self::generate();
                if fresh.save_secret_new(&secret_path)? {
                    (fresh, true)
                } else {
                    // Someone else created it between our read and our write: use theirs.
                    let text = fs::read_to_string(&secret_path).map_err(|source| KeyError::Io {
                        action: "cannot read",
                        path: secret_path.clone(),
                        source,
                    })?;
                    (Self::load_file(&secret_path, &text)?, false)
                }
            }
            Err(source) => {
                return Err(KeyError::Io {
                    action: "cannot read",
                    path: secret_path,
                    source,
                })
            }
        };
        keys.write_public_key_file(dir, generated)?;
        Ok((keys, generated))
    }

    fn load_file(path: &Path, text: &str) -> Result<Self, KeyError> {
        warn_if_readable_by_others(path);
        Self::parse_secret(text, format!(" in {}", path.display()))
    }

    /// Writes the secret to a fresh file; `Ok(false)` if the file already exists.
    fn save_secret_new(&self, path: &Path) -> Result<bool, KeyError> {
        let io = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| KeyError::Io {
                action,
                path: p,
                source,
            }
        };
        let tmp = path.with_file_name(format!(
            ".{SECRET_KEY_FILE}.tmp.{}.{}",
            std::process::id(),
            crate::time::now_micros()
        ));
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(io("cannot create", &tmp))?;
            let written = file
                .write_all(format!("{}\n", self.secret_key_string()).as_bytes())
                .and_then(|_| file.sync_all());
            if let Err(source) = written {
                let _ = fs::remove_file(&tmp);
                return Err(KeyError::Io {
                    action: "cannot write",
                    path: tmp,
                    source,
                });
            }
        }
        // hard_link fails if the target exists: atomic "create if absent" with full content.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(KeyError::Io {
                action: "cannot create",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes `<dir>/authority_public_key` if missing or different. A failure is an error for a
    /// freshly generated key, and only a warning when loading an existing one (read-only dirs).
    fn write_public_key_file(&self, dir: &Path, strict: bool) -> Result<(), KeyError> {
        let path = dir.join(PUBLIC_KEY_FILE);
        let content = format!("{}\n", self.public_key_string());
        if fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            return Ok(());
        }
        match fs::write(&path, content) {
            Ok(()) => Ok(()),
            Err(source) if strict => Err(KeyError::Io {
                action: "cannot write",
                path,
                source,
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot update the authority public key file");
                Ok(())
            }
        }
    }

    /// The public key in SRI/spec format: base58check of `[0x01,0x00] || xonly32`.
    pub fn public_key_string(&self) -> String {
        encode_authority_public_key(&self.public_key())
    }

    /// The x-only public key.
    pub fn public_key(&self) -> XOnlyPublicKey {
        self.keypair.x_only_public_key().0
    }

    /// The secret key in SRI format (base58check of the 32 bytes). Handle with care: never log it.
    pub fn secret_key_string(&self) -> String {
        base58::encode_check(&self.keypair.secret_bytes())
    }

    /// The raw x-only public key bytes (what `noise_sv2::Responder::from_authority_kp` takes).
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.public_key().serialize()
    }

    /// The raw secret bytes (what `noise_sv2::Responder::from_authority_kp` takes).
    pub(crate) fn secret_bytes(&self) -> [u8; 32] {
        self.keypair.secret_bytes()
    }
}

/// Encodes an x-only key as an authority public key string (SRI/spec format).
pub fn encode_authority_public_key(key: &XOnlyPublicKey) -> String {
    let mut raw = [0u8; 34];
    raw[..2].copy_from_slice(&PUBLIC_KEY_VERSION.to_le_bytes());
    raw[2..].copy_from_slice(&key.serialize());
    base58::encode_check(&raw)
}

/// Parses an authority public key string (SRI/spec format); the error says what is wrong
/// (bad base58 character, checksum, length, version, or not a curve point).
pub fn parse_authority_public_key(s: &str) -> Result<XOnlyPublicKey, KeyError> {
    let trimmed = s.trim();
    let invalid = |reason: String| KeyError::InvalidPublicKey {
        key: s.to_string(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let raw = base58::decode_check(trimmed).map_err(|e| invalid(base58_reason(&e)))?;
    if raw.len() != 34 {
        return Err(invalid(format!(
            "decodes to {} bytes instead of 34",
            raw.len()
        )));
    }
    let version = u16::from_le_bytes([raw[0], raw[1]]);
    if version != PUBLIC_KEY_VERSION {
        return Err(invalid(format!(
            "unknown key version {version} (only version {PUBLIC_KEY_VERSION} exists)"
        )));
    }
    XOnlyPublicKey::from_slice(&raw[2..])
        .map_err(|_| invalid("the 32 key bytes are not a point on secp256k1".into()))
}

fn base58_reason(e: &base58::Error) -> String {
    match e {
        base58::Error::IncorrectChecksum(_) => {
            "base58check checksum mismatch (typo or truncated?)".into()
        }
        base58::Error::TooShort(_) => "too short to carry a base58check checksum".into(),
        base58::Error::Decode(inner) => format!("not base58: {inner}"),
        other => format!("not base58check: {other}"),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| KeyError::Io {
        action: "cannot create key folder",
        path: dir.to_path_buf(),
        source,
    })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "authority secret key file is accessible by other users; run chmod 600 on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests;
