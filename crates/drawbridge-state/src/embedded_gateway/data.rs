//! What the store keeps in memory besides the rate-limit windows: keys, spent totals, the
//! usage ledger, quota reservations, charged request ids, and what changed since the last
//! write behind.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use drawbridge_core::day;

use crate::clock::millis;
use crate::data_file::{Batch, Contents};
use crate::embedded_credits::EmbeddedCredits;
use crate::gateway::{
    ApiKeyRecord, CHARGE_DEDUP_MAX_IDS, CHARGE_DEDUP_WINDOW, RowKey, RowTotals, Spent,
    USAGE_RETENTION_DAYS,
};

/// How often the ledger is checked for days past their retention.
const PRUNE_EVERY_MS: u64 = 3_600_000;

/// Keys, usage and reservations.
#[derive(Default)]
pub(super) struct Data {
    pub(super) keys: HashMap<String, ApiKeyRecord>,
    pub(super) by_hash: HashMap<String, String>,
    pub(super) spent: HashMap<String, Spent>,
    pub(super) rows: BTreeMap<RowKey, RowTotals>,
    /// Per key: request id → reservation. Not persisted.
    pub(super) reservations: HashMap<String, HashMap<String, Reservation>>,
    /// The request ids charged in the last [`CHARGE_DEDUP_WINDOW`] (at most
    /// [`CHARGE_DEDUP_MAX_IDS`]), oldest first, with when. Not persisted: a retried charge does not outlive the process that retries it.
    pub(super) charged: Charged,
    /// Per ledger day: when a row of it was last written (ms). A day's rows are dropped
    /// [`USAGE_RETENTION_DAYS`] after that, as ValKey expires a day's hash.
    pub(super) day_written: HashMap<String, u64>,
    /// When the ledger is next checked for expired days (ms).
    pub(super) next_prune_ms: u64,
    /// What changed since the last write behind.
    pub(super) dirty: Dirty,
    /// Set with the last write behind of a close: a change after it would never be written, so
    /// it is refused (checked under this lock, so no change slips in after that write).
    pub(super) closed: bool,
}

#[derive(Default)]
pub(super) struct Dirty {
    pub(super) last_used: HashSet<String>,
    pub(super) spent: HashSet<String>,
    pub(super) rows: HashSet<RowKey>,
    pub(super) credits: bool,
    pub(super) expired_days: HashSet<String>,
}

/// The request ids charged in the last [`CHARGE_DEDUP_WINDOW`], at most `limit` of them
/// ([`CHARGE_DEDUP_MAX_IDS`]): past the limit the oldest is forgotten first, as ValKey's
/// `charged` sorted set is trimmed. Each id is kept once, shared by the set and the queue.
pub(super) struct Charged {
    ids: HashSet<Arc<str>>,
    /// Oldest first, with when it was charged (the store's clock).
    order: VecDeque<(u64, Arc<str>)>,
    limit: usize,
}

impl Default for Charged {
    fn default() -> Self {
        Charged {
            ids: HashSet::new(),
            order: VecDeque::new(),
            limit: CHARGE_DEDUP_MAX_IDS,
        }
    }
}

impl Charged {
    /// Remember `id` as charged at `now_ms`; false if it is remembered already (charged within
    /// the window, and not pushed out by `limit` newer ones).
    pub(super) fn first_time(&mut self, id: &str, now_ms: u64) -> bool {
        let window = millis(CHARGE_DEDUP_WINDOW);
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < window {
                break;
            }
            self.forget_oldest();
        }
        if self.ids.contains(id) {
            return false;
        }
        let id: Arc<str> = Arc::from(id);
        self.ids.insert(Arc::clone(&id));
        self.order.push_back((now_ms, id));
        while self.order.len() > self.limit {
            self.forget_oldest();
        }
        // What a burst grew is given back once the ids are forgotten.
        if self.ids.capacity() > 4 * self.ids.len().max(1024) {
            self.ids.shrink_to_fit();
            self.order.shrink_to_fit();
        }
        true
    }

    fn forget_oldest(&mut self) {
        if let Some((_, old)) = self.order.pop_front() {
            self.ids.remove(&old);
        }
    }

    /// How many ids are remembered.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// Remember at most `limit` ids (at least one), forgetting the oldest beyond it now.
    pub(super) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
        while self.order.len() > self.limit {
            self.forget_oldest();
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Reservation {
    pub(super) expires_at_ms: u64,
    pub(super) amount: f64,
}

impl Data {
    pub(super) fn load(contents: Contents) -> Data {
        let mut data = Data::default();
        for record in contents.keys {
            data.by_hash.insert(record.hash.clone(), record.id.clone());
            data.keys.insert(record.id.clone(), record);
        }
        for (id, at) in contents.last_used {
            if let Some(record) = data.keys.get_mut(&id) {
                record.last_used_at_ms = record.last_used_at_ms.max(Some(at));
            }
        }
        data.spent = contents.spent.into_iter().collect();
        data.rows = contents.rows.into_iter().collect();
        // When each day was last written is not stored: the end of the day stands for it.
        for key in data.rows.keys() {
            if let Some(day) = day::parse_day(&key.day) {
                let end = u64::try_from(day + 1).unwrap_or(0) * day::DAY_MS;
                data.day_written.insert(key.day.clone(), end);
            }
        }
        data
    }

    /// Drop the ledger days last written [`USAGE_RETENTION_DAYS`] or more before `now` (at most
    /// once an hour).
    pub(super) fn prune(&mut self, now: u64) {
        if now < self.next_prune_ms {
            return;
        }
        self.next_prune_ms = now.saturating_add(PRUNE_EVERY_MS);
        let retention = u64::try_from(USAGE_RETENTION_DAYS).unwrap_or(0) * day::DAY_MS;
        let expired: HashSet<String> = self
            .day_written
            .iter()
            .filter(|(_, written)| written.saturating_add(retention) <= now)
            .map(|(day, _)| day.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        self.rows.retain(|key, _| !expired.contains(&key.day));
        self.dirty.rows.retain(|key| !expired.contains(&key.day));
        self.day_written.retain(|day, _| !expired.contains(day));
        self.dirty.expired_days.extend(expired);
    }

    /// What changed since the last call, to write behind.
    pub(super) fn take_dirty(&mut self, credits: &EmbeddedCredits) -> Batch {
        let dirty = std::mem::take(&mut self.dirty);
        Batch {
            credits: dirty.credits.then(|| credits.snapshot()),
            keys: Vec::new(),
            last_used: dirty
                .last_used
                .into_iter()
                .filter_map(|id| {
                    let at = self.keys.get(&id)?.last_used_at_ms?;
                    Some((id, at))
                })
                .collect(),
            spent: dirty
                .spent
                .into_iter()
                .filter_map(|id| Some((id.clone(), *self.spent.get(&id)?)))
                .collect(),
            rows: dirty
                .rows
                .into_iter()
                .filter_map(|key| {
                    let totals = *self.rows.get(&key)?;
                    Some((key, totals))
                })
                .collect(),
            expired_days: dirty.expired_days.into_iter().collect(),
        }
    }

    /// A write behind failed: its items are still to be written.
    pub(super) fn restore_dirty(&mut self, batch: &Batch) {
        self.dirty.credits |= batch.credits.is_some();
        self.dirty
            .last_used
            .extend(batch.last_used.iter().map(|(id, _)| id.clone()));
        self.dirty
            .spent
            .extend(batch.spent.iter().map(|(id, _)| id.clone()));
        self.dirty
            .rows
            .extend(batch.rows.iter().map(|(key, _)| key.clone()));
        self.dirty
            .expired_days
            .extend(batch.expired_days.iter().cloned());
    }
}
