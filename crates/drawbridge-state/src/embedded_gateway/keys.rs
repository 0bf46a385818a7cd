//! API keys: created, updated and revoked write-through; last uses written behind.

use super::EmbeddedGatewayStore;
use crate::error::StateError;
use crate::gateway::{ApiKeyRecord, KeyLimits, KeyStore, check_limits, check_record};
use crate::registry::StateFuture;

impl KeyStore for EmbeddedGatewayStore {
    fn create_key<'a>(&'a self, record: &'a ApiKeyRecord) -> StateFuture<'a, ()> {
        Box::pin(async move {
            check_record(record)?;
            let _one_at_a_time = self.key_writes.lock().await;
            {
                let data = self.shared.data();
                if data.keys.contains_key(&record.id) {
                    return Err(StateError::Invalid(format!(
                        "a key with id {} already exists",
                        record.id
                    )));
                }
                if data.by_hash.contains_key(&record.hash) {
                    return Err(StateError::Invalid(format!(
                        "key {}: another key has the same secret hash",
                        record.id
                    )));
                }
            }
            self.persist_keys(vec![record.clone()]).await?;
            let mut data = self.shared.data();
            data.by_hash.insert(record.hash.clone(), record.id.clone());
            data.keys.insert(record.id.clone(), record.clone());
            Ok(())
        })
    }

    fn key<'a>(&'a self, id: &'a str) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move { Ok(self.shared.data().keys.get(id).cloned()) })
    }

    fn key_by_hash<'a>(&'a self, hash: &'a str) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            let data = self.shared.data();
            Ok(data
                .by_hash
                .get(hash)
                .and_then(|id| data.keys.get(id))
                .cloned())
        })
    }

    fn keys(&self) -> StateFuture<'_, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let mut keys: Vec<ApiKeyRecord> = self.shared.data().keys.values().cloned().collect();
            keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
            Ok(keys)
        })
    }

    fn update_key<'a>(
        &'a self,
        id: &'a str,
        limits: &'a KeyLimits,
        expires_at_ms: Option<u64>,
    ) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            check_limits(limits)?;
            self.change_key(
                id,
                |current| ApiKeyRecord {
                    limits: limits.clone(),
                    expires_at_ms,
                    ..current.clone()
                },
                |record, changed| {
                    record.limits = changed.limits.clone();
                    record.expires_at_ms = changed.expires_at_ms;
                },
            )
            .await
        })
    }

    fn revoke_key<'a>(&'a self, id: &'a str, at_ms: u64) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            self.change_key(
                id,
                |current| ApiKeyRecord {
                    revoked_at_ms: current.revoked_at_ms.or(Some(at_ms)),
                    ..current.clone()
                },
                |record, changed| record.revoked_at_ms = changed.revoked_at_ms,
            )
            .await
        })
    }

    fn touch_key<'a>(&'a self, id: &'a str, at_ms: u64) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut data = self.shared.data();
            let Some(record) = data.keys.get_mut(id) else {
                return Ok(());
            };
            if record.last_used_at_ms.is_some_and(|last| last >= at_ms) {
                return Ok(());
            }
            record.last_used_at_ms = Some(at_ms);
            data.dirty.last_used.insert(id.to_owned());
            Ok(())
        })
    }
}
