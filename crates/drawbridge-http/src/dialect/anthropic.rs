//! The anthropic dialect's endpoint (filled in by its adapter's commit).
