//! Usage and quotas: reservations, the ledger and spent totals.

use std::time::Duration;

use drawbridge_core::day;
use drawbridge_core::limits::quota_admits;

use super::EmbeddedGatewayStore;
use super::data::Reservation;
use crate::gateway::{
    Quota, QuotaDecision, RowKey, Spent, UsageEntry, UsageFilter, UsageRow, UsageStore,
    check_entry, check_reserve, day_range, select_rows,
};
use crate::registry::StateFuture;

impl UsageStore for EmbeddedGatewayStore {
    fn reserve<'a>(
        &'a self,
        key_id: &'a str,
        request_id: &'a str,
        quota: &'a Quota,
        amount: f64,
        ttl: Duration,
    ) -> StateFuture<'a, QuotaDecision> {
        Box::pin(async move {
            let ttl_ms = check_reserve(key_id, request_id, quota, amount, ttl)?;
            let now = self.now();
            let mut data = self.shared.data();
            let spent = data
                .spent
                .get(key_id)
                .map_or(0.0, |spent| spent.in_unit(quota.unit));
            let reservations = data.reservations.entry(key_id.to_owned()).or_default();
            reservations.retain(|_, reservation| reservation.expires_at_ms > now);
            let (reserved, in_flight) = reservations
                .iter()
                .filter(|(request, _)| request.as_str() != request_id)
                .fold((0.0, 0u32), |(sum, count), (_, reservation)| {
                    (sum + reservation.amount, count + 1)
                });
            let allowed = quota_admits(quota.limit, spent, reserved, in_flight, amount);
            if allowed {
                reservations.insert(
                    request_id.to_owned(),
                    Reservation {
                        expires_at_ms: now.saturating_add(ttl_ms),
                        amount,
                    },
                );
            } else {
                reservations.remove(request_id);
            }
            if reservations.is_empty() {
                data.reservations.remove(key_id);
            }
            Ok(QuotaDecision {
                allowed,
                spent,
                reserved,
                in_flight,
            })
        })
    }

    fn record_usage<'a>(&'a self, entry: &'a UsageEntry) -> StateFuture<'a, ()> {
        Box::pin(async move {
            check_entry(entry)?;
            let row = RowKey::of(entry);
            let now = self.now();
            let mut data = self.data_to_change()?;
            if !data.charged.first_time(&entry.request_id, now) {
                return Ok(());
            }
            if let Some(reservations) = data.reservations.get_mut(&entry.key_id) {
                reservations.remove(&entry.request_id);
                if reservations.is_empty() {
                    data.reservations.remove(&entry.key_id);
                }
            }
            data.spent
                .entry(entry.key_id.clone())
                .or_default()
                .add(entry);
            data.rows.entry(row.clone()).or_default().add(entry);
            data.dirty.spent.insert(entry.key_id.clone());
            let written = data.day_written.entry(row.day.clone()).or_default();
            *written = (*written).max(now);
            data.dirty.rows.insert(row);
            data.prune(now);
            Ok(())
        })
    }

    fn release<'a>(&'a self, key_id: &'a str, request_id: &'a str) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut data = self.shared.data();
            if let Some(reservations) = data.reservations.get_mut(key_id) {
                reservations.remove(request_id);
                if reservations.is_empty() {
                    data.reservations.remove(key_id);
                }
            }
            Ok(())
        })
    }

    fn spent<'a>(&'a self, key_id: &'a str) -> StateFuture<'a, Spent> {
        Box::pin(async move {
            Ok(self
                .shared
                .data()
                .spent
                .get(key_id)
                .copied()
                .unwrap_or_default())
        })
    }

    fn usage<'a>(&'a self, filter: &'a UsageFilter) -> StateFuture<'a, Vec<UsageRow>> {
        Box::pin(async move {
            let range = day_range(filter, day::day_number(self.now()))?;
            let data = self.shared.data();
            Ok(select_rows(&data.rows, filter, range))
        })
    }
}
