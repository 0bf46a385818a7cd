//! The admin API: behind one token check, keys and usage.
