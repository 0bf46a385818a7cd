//! API key secrets: made from the operating system's random source, shown once, stored only as
//! a SHA-256 hash. A key is `db-` followed by 48 hex digits (192 random bits), so a hash
//! without salt is safe: the input space is far too large to search.

use drawbridge_types::ApiError;
use sha2::{Digest, Sha256};

/// Every key made here starts with this.
pub const PREFIX: &str = "db-";
/// How many characters of a key are kept to recognise it in lists (`db-` + 7).
pub const SHOWN_CHARS: usize = 10;
const RANDOM_BYTES: usize = 24;

/// A new key: its secret (to show once), the hash to store, the prefix to list.
pub struct NewSecret {
    pub secret: String,
    pub hash: String,
    pub prefix: String,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The stored form of a secret: lowercase hex SHA-256.
pub fn hash(secret: &str) -> String {
    drawbridge_core::hex::encode(&Sha256::digest(secret.as_bytes()))
}

/// Make a new secret.
pub fn generate() -> Result<NewSecret, ApiError> {
    let mut random = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut random)
        .map_err(|e| ApiError::internal(format!("no random source for a new key: {e}")))?;
    let secret = format!("{PREFIX}{}", drawbridge_core::hex::encode(&random));
    Ok(NewSecret {
        hash: hash(&secret),
        prefix: secret.chars().take(SHOWN_CHARS).collect(),
        secret,
    })
}

/// A new record id: `key_` + 16 hex digits.
pub fn new_id() -> Result<String, ApiError> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|e| ApiError::internal(format!("no random source for a key id: {e}")))?;
    Ok(format!("key_{}", drawbridge_core::hex::encode(&random)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("db-"));
        assert_eq!(a.secret.len(), 3 + 2 * RANDOM_BYTES);
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret));
        assert_eq!(a.prefix, &a.secret[..SHOWN_CHARS]);
        assert!(
            !format!("{a:?}").contains(&a.secret),
            "Debug must not print the secret"
        );
        // A known vector: SHA-256("abc").
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(new_id().unwrap().starts_with("key_"));
        assert_ne!(new_id().unwrap(), new_id().unwrap());
    }
}
