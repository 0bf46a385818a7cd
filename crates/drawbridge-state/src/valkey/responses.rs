//! [`ResponseStore`] on ValKey: `response:{id}:{tenant}`, a string with a TTL.

use std::time::Duration;

use fred::prelude::KeysInterface;
use fred::types::Expiration;

use super::{ValkeyRegistry, keys};
use crate::clock::millis;
use crate::registry::StateFuture;
use crate::responses::{ResponseStore, validate};
use crate::routing::validate_ttl;

impl ResponseStore for ValkeyRegistry {
    fn put_response<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate(tenant, id)?;
            validate_ttl("response TTL", ttl)?;
            let ms = i64::try_from(millis(ttl)).unwrap_or(i64::MAX);
            self.bounded(
                "put_response",
                self.client.set(
                    keys::response(tenant, id),
                    value,
                    Some(Expiration::PX(ms)),
                    None,
                    false,
                ),
            )
            .await
        })
    }

    fn response<'a>(&'a self, tenant: &'a str, id: &'a str) -> StateFuture<'a, Option<String>> {
        Box::pin(async move {
            validate(tenant, id)?;
            self.bounded("response", self.client.get(keys::response(tenant, id)))
                .await
        })
    }
}
