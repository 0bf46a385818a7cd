//! The gateway's stores in one process ([`KeyStore`], [`RateLimiter`], [`UsageStore`]), for
//! the single-node binary and for a gateway without `redis.url`.
//!
//! Every read is served from memory. With a data file ([`EmbeddedGatewayStore::open`]) what
//! must survive a restart is persisted in it:
//!
//! - key changes (create, update, revoke) are written through: the call returns once the change
//!   is durable, and readers see it from then on;
//! - usage (ledger rows, spent totals) and last uses are written behind, in one transaction at
//!   most every [`FLUSH_INTERVAL`], when the scope's shutdown begins, and on
//!   [`EmbeddedGatewayStore::close`] (or when the store is dropped). A crash (power loss,
//!   SIGKILL) loses at most the usage and last uses of the last [`FLUSH_INTERVAL`]; an
//!   acknowledged key change is never lost.
//!
//! It is also the single-node engine's [`CreditStore`]: the account balances live in memory
//! ([`EmbeddedCredits`]) and are written behind like usage.
//!
//! Ledger days are dropped (from memory and the file) [`USAGE_RETENTION_DAYS`] after their
//! last write, like ValKey's day hashes, so a long-running node's ledger stays bounded.
//!
//! Rate-limit windows and quota reservations are in memory only: a restart forgets them.
//! Time (the windows, reservation TTLs, "today" of a usage query) comes from the store's clock,
//! the system clock unless [`EmbeddedGatewayStore::with_clock`] gives another.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use drawbridge_core::day;
use drawbridge_core::limits::{in_window, quota_admits, sliding_window};
use drawbridge_runtime::Shutdown;
use tokio::sync::{mpsc, oneshot};

use crate::clock::{Clock, millis, system_ms};
use crate::credits::{Charge, CreditStore, Grant};
use crate::data_file::{Batch, Contents, DataFile};
use crate::embedded_credits::EmbeddedCredits;
use crate::error::StateError;
use crate::gateway::{
    ApiKeyRecord, CHARGE_DEDUP_WINDOW, KeyLimits, KeyStore, Quota, QuotaDecision, RateDecision,
    RateLimiter, RowKey, RowTotals, Spent, USAGE_RETENTION_DAYS, UsageEntry, UsageFilter, UsageRow,
    UsageStore, check_entry, check_hit, check_limits, check_record, check_reserve, day_range,
    select_rows,
};
use crate::registry::StateFuture;

/// How long usage and last uses may wait in memory before they are written to the data file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the ledger is checked for days past their retention.
const PRUNE_EVERY_MS: u64 = 3_600_000;
/// The rate-limit windows are swept of idle subjects once per this many hits.
const SWEEP_EVERY: u32 = 1024;

/// The gateway's stores of one process, optionally backed by a data file.
pub struct EmbeddedGatewayStore {
    shared: Arc<Shared>,
    clock: Clock,
    /// The data file's writer; `None` for a store in memory only.
    file: Option<FileHandle>,
    /// Key changes one at a time, so each is persisted before the next one reads memory.
    key_writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EmbeddedGatewayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedGatewayStore")
            .field("file", &self.file.as_ref().map(|file| &file.path))
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shared {
    data: Mutex<Data>,
    windows: Mutex<Windows>,
    /// The single-node engine's account balances. When both are locked, `data` is first
    /// (a write behind snapshots the balances under it, and a change is made under it).
    credits: EmbeddedCredits,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn windows(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keys, usage and reservations.
#[derive(Default)]
struct Data {
    keys: HashMap<String, ApiKeyRecord>,
    by_hash: HashMap<String, String>,
    spent: HashMap<String, Spent>,
    rows: BTreeMap<RowKey, RowTotals>,
    /// Per key: request id → reservation. Not persisted.
    reservations: HashMap<String, HashMap<String, Reservation>>,
    /// The request ids charged in the last [`CHARGE_DEDUP_WINDOW`], oldest first, with when.
    /// Not persisted: a retried charge does not outlive the process that retries it.
    charged: Charged,
    /// Per ledger day: when a row of it was last written (ms). A day's rows are dropped
    /// [`USAGE_RETENTION_DAYS`] after that, as ValKey expires a day's hash.
    day_written: HashMap<String, u64>,
    /// When the ledger is next checked for expired days (ms).
    next_prune_ms: u64,
    /// What changed since the last write behind.
    dirty: Dirty,
    /// Set with the last write behind of a close: a change after it would never be written, so
    /// it is refused (checked under this lock, so no change slips in after that write).
    closed: bool,
}

#[derive(Default)]
struct Dirty {
    last_used: HashSet<String>,
    spent: HashSet<String>,
    rows: HashSet<RowKey>,
    credits: bool,
    expired_days: HashSet<String>,
}

#[derive(Default)]
struct Charged {
    ids: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

impl Charged {
    /// Remember `id` as charged at `now_ms`; false if it was charged within the window.
    fn first_time(&mut self, id: &str, now_ms: u64) -> bool {
        let window = millis(CHARGE_DEDUP_WINDOW);
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < window {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back((now_ms, id.to_owned()));
        true
    }
}

#[derive(Clone, Copy)]
struct Reservation {
    expires_at_ms: u64,
    amount: f64,
}

impl Data {
    fn load(contents: Contents) -> Data {
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
    fn prune(&mut self, now: u64) {
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
    fn take_dirty(&mut self, credits: &EmbeddedCredits) -> Batch {
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
    fn restore_dirty(&mut self, batch: &Batch) {
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

/// The rate-limit windows: per subject, the times of its counted requests, ascending.
#[derive(Default)]
struct Windows {
    subjects: HashMap<String, Window>,
    hits_since_sweep: u32,
}

struct Window {
    window_ms: u64,
    counted: VecDeque<u64>,
}

impl Windows {
    fn hit(&mut self, subject: &str, limit: u32, window_ms: u64, now: u64) -> RateDecision {
        self.hits_since_sweep += 1;
        if self.hits_since_sweep >= SWEEP_EVERY {
            self.hits_since_sweep = 0;
            self.subjects.retain(|_, window| {
                window
                    .counted
                    .back()
                    .is_some_and(|&last| in_window(last, now, window.window_ms))
            });
        }
        let window = self
            .subjects
            .entry(subject.to_owned())
            .or_insert_with(|| Window {
                window_ms,
                counted: VecDeque::new(),
            });
        window.window_ms = window_ms;
        while window
            .counted
            .front()
            .is_some_and(|&at| !in_window(at, now, window_ms))
        {
            window.counted.pop_front();
        }
        let decision = sliding_window(window.counted.make_contiguous(), now, limit, window_ms);
        if decision.allowed {
            // Kept ascending even if the clock steps back.
            let at = window.counted.back().map_or(now, |&last| last.max(now));
            window.counted.push_back(at);
        }
        decision
    }
}

/// The connection to the data file's writer task.
struct FileHandle {
    commands: mpsc::UnboundedSender<Command>,
    path: String,
}

enum Command {
    /// Write these records now; answer when durable.
    Keys(Vec<ApiKeyRecord>, oneshot::Sender<Result<(), StateError>>),
    /// Write what is waiting now.
    Flush(oneshot::Sender<Result<(), StateError>>),
    /// Write what is waiting, close the file, stop.
    Close(oneshot::Sender<Result<(), StateError>>),
}

impl FileHandle {
    fn closed(&self) -> StateError {
        StateError::Unavailable(format!("data file {} is closed", self.path))
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), StateError>>) -> Command,
    ) -> Result<(), StateError> {
        let (answer, answered) = oneshot::channel();
        self.commands
            .send(command(answer))
            .map_err(|_| self.closed())?;
        answered.await.map_err(|_| self.closed())?
    }
}

impl EmbeddedGatewayStore {
    /// A store in memory only (tests; nothing survives the process).
    pub fn in_memory() -> Self {
        EmbeddedGatewayStore {
            shared: Arc::default(),
            clock: Arc::new(system_ms),
            file: None,
            key_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Open the data file at `path` (created with its parent directories if missing) and load
    /// it. Its writer task runs on `shutdown`'s tracker: it writes what is waiting when the
    /// shutdown begins, and keeps writing behind until [`EmbeddedGatewayStore::close`] or until
    /// the store is dropped (so usage recorded while the requests in flight finish is kept).
    /// A file another process has open is refused with [`StateError::Config`] naming it.
    pub async fn open(path: impl AsRef<Path>, shutdown: &Shutdown) -> Result<Self, StateError> {
        let path = path.as_ref().to_owned();
        let (file, contents) = tokio::task::spawn_blocking(move || DataFile::open(&path))
            .await
            .map_err(|error| StateError::Backend(format!("opening the data file: {error}")))??;
        let shown = file.path().display().to_string();
        tracing::info!(
            file = %shown,
            keys = contents.keys.len(),
            usage_rows = contents.rows.len(),
            "gateway data file opened"
        );
        let credits = contents
            .credits
            .clone()
            .map(EmbeddedCredits::restore)
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            data: Mutex::new(Data::load(contents)),
            windows: Mutex::default(),
            credits,
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            file: Some(Arc::new(file)),
            path: shown.clone(),
        };
        shutdown.spawn(writer.run(receiver, shutdown.clone()));
        Ok(EmbeddedGatewayStore {
            shared,
            clock: Arc::new(system_ms),
            file: Some(FileHandle {
                commands,
                path: shown,
            }),
            key_writes: tokio::sync::Mutex::new(()),
        })
    }

    /// The same store on another clock (ms since the epoch): tests control time with it.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Write what is waiting (usage, last uses) to the data file now. Nothing to do in memory.
    pub async fn flush(&self) -> Result<(), StateError> {
        match &self.file {
            Some(file) => file.ask(Command::Flush).await,
            None => Ok(()),
        }
    }

    /// Write what is waiting and close the data file, releasing it for the next process. After
    /// this, reads still answer from memory, but changes fail. Closing twice is fine.
    pub async fn close(&self) -> Result<(), StateError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        match file.ask(Command::Close).await {
            // Closed before: the writer is gone.
            Err(StateError::Unavailable(_)) if file.commands.is_closed() => Ok(()),
            result => result,
        }
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Fails once the data file is closed: what is recorded then would be lost.
    fn check_open(&self) -> Result<(), StateError> {
        match &self.file {
            Some(file) if file.commands.is_closed() => Err(file.closed()),
            _ => Ok(()),
        }
    }

    /// The data, locked, for a change to write behind; fails once the data file is closed.
    /// A change made under this guard is either in the close's last write or refused.
    fn data_to_change(&self) -> Result<MutexGuard<'_, Data>, StateError> {
        self.check_open()?;
        let data = self.shared.data();
        match &self.file {
            Some(file) if data.closed => Err(file.closed()),
            _ => Ok(data),
        }
    }

    /// Persist key records before they are visible (write-through).
    async fn persist_keys(&self, records: Vec<ApiKeyRecord>) -> Result<(), StateError> {
        match &self.file {
            Some(file) => file.ask(|answer| Command::Keys(records, answer)).await,
            None => Ok(()),
        }
    }

    /// Change one key: `change` computes the new record from the current one; it is persisted,
    /// then applied to memory by `apply` (field by field, so a concurrent touch is kept).
    async fn change_key(
        &self,
        id: &str,
        change: impl FnOnce(&ApiKeyRecord) -> ApiKeyRecord,
        apply: impl FnOnce(&mut ApiKeyRecord, &ApiKeyRecord),
    ) -> Result<Option<ApiKeyRecord>, StateError> {
        let _one_at_a_time = self.key_writes.lock().await;
        let Some(changed) = self.shared.data().keys.get(id).map(change) else {
            return Ok(None);
        };
        self.persist_keys(vec![changed.clone()]).await?;
        let mut data = self.shared.data();
        Ok(data.keys.get_mut(id).map(|record| {
            apply(record, &changed);
            record.clone()
        }))
    }
}

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

impl RateLimiter for EmbeddedGatewayStore {
    fn hit<'a>(
        &'a self,
        subject: &'a str,
        limit: u32,
        window: Duration,
    ) -> StateFuture<'a, RateDecision> {
        Box::pin(async move {
            let window_ms = check_hit(subject, limit, window)?;
            let now = self.now();
            Ok(self.shared.windows().hit(subject, limit, window_ms, now))
        })
    }
}

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

/// The task that owns the data file: writes key changes when asked, usage behind.
struct Writer {
    shared: Arc<Shared>,
    /// `None` once closed.
    file: Option<Arc<DataFile>>,
    path: String,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Keys(records, answer)) => {
                        let batch = Batch { keys: records, ..Batch::default() };
                        let _ = answer.send(self.write(batch).await);
                    }
                    Some(Command::Flush(answer)) => {
                        let _ = answer.send(self.flush().await);
                    }
                    Some(Command::Close(answer)) => {
                        let _ = answer.send(self.close().await);
                        return;
                    }
                    // The store was dropped without close.
                    None => {
                        if let Err(error) = self.close().await {
                            tracing::warn!(file = %self.path, %error, "closing the gateway data file failed");
                        }
                        return;
                    }
                },
                _ = tick.tick() => self.flush_or_warn().await,
                () = shutdown.cancelled(), if !shutting_down => {
                    // Write what is waiting now, and keep going: the requests still in flight
                    // record their usage until the store is closed or dropped.
                    shutting_down = true;
                    self.flush_or_warn().await;
                }
            }
        }
    }

    async fn flush_or_warn(&mut self) {
        if let Err(error) = self.flush().await {
            tracing::warn!(file = %self.path, %error, "writing usage to the gateway data file failed; retrying");
        }
    }

    /// Write what changed since the last write behind; on failure it stays to be written.
    async fn flush(&mut self) -> Result<(), StateError> {
        let batch = self.shared.data().take_dirty(&self.shared.credits);
        self.write_behind(batch).await
    }

    /// Write `batch`, taken from the dirty set; on failure it goes back to it.
    async fn write_behind(&mut self, batch: Batch) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.write(batch.clone()).await;
        if result.is_err() {
            self.shared.data().restore_dirty(&batch);
        }
        result
    }

    async fn write(&mut self, batch: Batch) -> Result<(), StateError> {
        let Some(file) = self.file.clone() else {
            return Err(StateError::Unavailable(format!(
                "data file {} is closed",
                self.path
            )));
        };
        tokio::task::spawn_blocking(move || file.write(&batch))
            .await
            .map_err(|error| StateError::Backend(format!("writing the data file: {error}")))?
    }

    async fn close(&mut self) -> Result<(), StateError> {
        // The last write behind: changes are refused from the moment it is taken.
        let batch = {
            let mut data = self.shared.data();
            data.closed = true;
            data.take_dirty(&self.shared.credits)
        };
        let flushed = self.write_behind(batch).await;
        let Some(file) = self.file.take() else {
            return flushed;
        };
        // Every write has finished (they are awaited), so this is the only reference.
        let closed = match Arc::try_unwrap(file) {
            Ok(file) => tokio::task::spawn_blocking(move || file.close())
                .await
                .map_err(|error| StateError::Backend(format!("closing the data file: {error}")))?,
            Err(_) => Err(StateError::Backend(format!(
                "data file {} is still in use",
                self.path
            ))),
        };
        if closed.is_ok() {
            tracing::info!(file = %self.path, "gateway data file closed");
        }
        flushed.and(closed)
    }
}

/// The single-node engine's credits, kept in the data file with the gateway's records: every
/// change is written behind (within [`FLUSH_INTERVAL`], and at shutdown), so a restart keeps the
/// balances (a crash may forget the last second of charges).
impl CreditStore for EmbeddedGatewayStore {
    fn apply_grants<'a>(&'a self, grants: &'a [Grant]) -> StateFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            let applied = self.shared.credits.apply_grants_now(grants)?;
            if !applied.is_empty() {
                data.dirty.credits = true;
            }
            Ok(applied)
        })
    }

    fn balances<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<i64>>> {
        self.shared.credits.balances(accounts)
    }

    fn charge<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, Option<Charge>> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            let charge = self.shared.credits.charge_now(account, amount)?;
            if charge.is_some_and(|c| c.charged > 0) {
                data.dirty.credits = true;
            }
            Ok(charge)
        })
    }

    fn top_up<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, i64> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            let balance = self.shared.credits.top_up_now(account, amount)?;
            data.dirty.credits = true;
            Ok(balance)
        })
    }

    fn set_balance<'a>(&'a self, account: &'a str, balance: Option<i64>) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            self.shared.credits.set_balance_now(account, balance)?;
            data.dirty.credits = true;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_subjects_are_swept() {
        let mut windows = Windows::default();
        windows.hit("old", 5, 1_000, 10_000);
        for i in 0..SWEEP_EVERY {
            windows.hit("busy", u32::MAX, 1_000, 20_000 + u64::from(i));
        }
        assert!(!windows.subjects.contains_key("old"));
        assert!(windows.subjects.contains_key("busy"));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_window_ordered() {
        let mut windows = Windows::default();
        windows.hit("s", 5, 1_000, 10_000);
        windows.hit("s", 5, 1_000, 9_000);
        let counted: Vec<u64> = windows.subjects["s"].counted.iter().copied().collect();
        assert_eq!(counted, [10_000, 10_000]);
    }
}
