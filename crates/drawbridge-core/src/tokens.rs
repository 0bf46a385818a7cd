//! Token estimates. Kiro reports credits, not tokens, so usage is estimated (about four
//! characters per token, the rule of thumb for English text with BPE tokenizers) and the
//! estimate is never zero for non-empty text.

/// Estimated tokens in `text`: `ceil(chars / 4)`.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_and_counts_chars_not_bytes() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("ééééé"), 2);
    }
}
