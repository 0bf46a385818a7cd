//! What several test files of this crate share.

use fred::prelude::{Builder, Client, ClientLike, Config};
use test_support::redis::RedisServer;

/// A plain client of `server`, connected: for looking at (or changing) the raw key layout
/// behind a store.
#[expect(clippy::unwrap_used, reason = "a test helper")]
pub async fn raw_client(server: &RedisServer) -> Client {
    let raw = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();
    raw
}
