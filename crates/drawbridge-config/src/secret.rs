//! [`Secret`]: a string that never prints.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string (API key, token): usable, but never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use crate::tests::GOOD;

    #[test]
    fn secrets_do_not_print() {
        let config = Config::from_yaml(GOOD).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("db-demo-key-123"), "{debug}");
    }
}
