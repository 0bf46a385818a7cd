//! Rules that both the config and the stores enforce, defined once here so that a value the
//! config accepts is never refused later by a store: what an id may be, how long a routing
//! record may live. (The statuses both share are [`crate::HealthStatus`].)

use std::time::Duration;

/// The longest id a store takes (key ids, account ids, rate-limit subjects), in bytes.
pub const MAX_ID_LEN: usize = 128;

/// The characters an id may use, as error messages say them.
pub const ID_CHARS: &str = "A-Z a-z 0-9 _ - .";

/// The longest cooldown or affinity TTL the stores take (30 days): a longer one is a mistake
/// (a cooldown's length can come from a worker's `retry_after`), refused rather than kept.
pub const MAX_ROUTING_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Milli-credits per credit: balances are integers of 1/1000 credit.
pub const MILLI_CREDITS: i64 = 1000;

/// The largest balance a store holds, in milli-credits (a trillion credits): far below 2^53,
/// so the stores' floating-point arithmetic stays exact.
pub const MAX_BALANCE: i64 = 1_000_000_000_000_000;

/// The largest amount of credits the config takes (a grant, a request's cost): the largest
/// balance, in credits.
#[expect(
    clippy::cast_precision_loss,
    reason = "MAX_BALANCE / MILLI_CREDITS is 1e12, exact in an f64"
)]
pub const MAX_CREDITS: f64 = (MAX_BALANCE / MILLI_CREDITS) as f64;

/// Why a string is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("has a character other than {ID_CHARS}")]
    BadChar,
}

/// Whether `id` can be an id the stores take: 1 to [`MAX_ID_LEN`] ASCII letters, digits, `_`,
/// `-` or `.` (it becomes part of a ValKey key, so no `:` and no spaces).
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        Err(IdError::Empty)
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Err(IdError::BadChar)
    } else if id.len() > MAX_ID_LEN {
        Err(IdError::TooLong)
    } else {
        Ok(())
    }
}

/// [`check_id`] as a yes or no.
pub fn valid_id(id: &str) -> bool {
    check_id(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_fit_in_a_store_key() {
        assert!(valid_id("key_0123456789abcdef"));
        assert!(valid_id("static-1.a"));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id("a:b"), Err(IdError::BadChar));
        assert_eq!(check_id("a b"), Err(IdError::BadChar));
        assert_eq!(check_id("ключ"), Err(IdError::BadChar));
        assert_eq!(check_id(&"a".repeat(MAX_ID_LEN + 1)), Err(IdError::TooLong));
        assert!(valid_id(&"a".repeat(MAX_ID_LEN)));
    }
}
