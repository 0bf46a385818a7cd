//! The gateway's stores in one process ([`KeyStore`](crate::gateway::KeyStore),
//! [`RateLimiter`](crate::gateway::RateLimiter), [`UsageStore`](crate::gateway::UsageStore)), for
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
//! It is also the single-node engine's [`CreditStore`](crate::credits::CreditStore): the account
//! balances live in memory ([`EmbeddedCredits`]) and are written behind like usage.
//!
//! Ledger days are dropped (from memory and the file)
//! [`USAGE_RETENTION_DAYS`](crate::gateway::USAGE_RETENTION_DAYS) after their last write, like
//! ValKey's day hashes, so a long-running node's ledger stays bounded.
//!
//! Rate-limit windows, quota reservations and the charged request ids are in memory only: a
//! restart forgets them. The charged ids are bounded by time and by count
//! ([`CHARGE_DEDUP_WINDOW`](crate::gateway::CHARGE_DEDUP_WINDOW),
//! [`EmbeddedGatewayStore::CHARGE_MEMORY`]), so memory stays flat under sustained load.
//! Time (the windows, reservation TTLs, "today" of a usage query) comes from the store's clock,
//! the system clock unless [`EmbeddedGatewayStore::with_clock`] gives another.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use drawbridge_runtime::Shutdown;
use tokio::sync::mpsc;

use crate::clock::{Clock, system_ms};
use crate::data_file::DataFile;
use crate::embedded_credits::EmbeddedCredits;
use crate::error::StateError;
use crate::gateway::{ApiKeyRecord, CHARGE_DEDUP_MAX_IDS};

mod credits;
mod data;
mod keys;
mod usage;
mod windows;
mod writer;

use data::Data;
use windows::Windows;
use writer::{Command, FileHandle, Writer};

/// How long usage and last uses may wait in memory before they are written to the data file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

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

    /// The most charged request ids the store remembers to recognise a retried charge
    /// ([`UsageStore::record_usage`](crate::gateway::UsageStore::record_usage)), unless [`EmbeddedGatewayStore::with_charge_memory`]
    /// sets another bound: the same bound the ValKey store keeps.
    pub const CHARGE_MEMORY: usize = CHARGE_DEDUP_MAX_IDS;

    /// The same store remembering at most `ids` charged request ids (at least one; the oldest
    /// is forgotten first): tests reach the bound with it.
    pub fn with_charge_memory(self, ids: usize) -> Self {
        self.shared.data().charged.set_limit(ids);
        self
    }

    /// How many charged request ids the store remembers now (never more than its bound).
    pub fn charged_ids(&self) -> usize {
        self.shared.data().charged.len()
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
