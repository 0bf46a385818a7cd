//! The completions dialect's endpoint (filled in by its adapter's commit).
