//! The anthropic dialect's translation (filled in by its adapter's commit).
