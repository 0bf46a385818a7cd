//! The completions dialect's translation (filled in by its adapter's commit).
