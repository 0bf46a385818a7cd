//! The responses dialect's endpoint (filled in by its adapter's commit).
