//! The embedded gateway store's data file: one redb database (pure Rust, ACID, copy-on-write
//! B-trees, one file, locked against a second process). Only [`crate::EmbeddedGatewayStore`]
//! uses it: it loads everything at open, then writes batches (every commit is durable when it
//! returns). Calls here block: run them off the async runtime.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"schema"` | the layout's version ([`SCHEMA`]) |
//! | `api_keys` | key id | the record as JSON ([`ApiKeyRecord`], `last_used_at_ms` as of its last change) |
//! | `key_last_used` | key id | the key's last use, ms since the epoch (written behind) |
//! | `key_spent` | key id | what the key has spent, JSON ([`Spent`]) |
//! | `usage` | (day, key id, account, model) | the ledger row's counters, JSON |
//! | `credits` | `"snapshot"` | the single-node engine's account balances and grants, JSON ([`CreditSnapshot`]) |

use std::path::{Path, PathBuf};

use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::credits::CreditSnapshot;
use crate::error::StateError;
use crate::gateway::{ApiKeyRecord, RowKey, RowTotals, Spent};

/// The version of the layout above; a file of another version is refused, not misread.
const SCHEMA: u64 = 1;
/// redb's page cache. Everything is also held in memory by the store, so the cache only has to
/// serve the writes.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const API_KEYS: TableDefinition<&str, &str> = TableDefinition::new("api_keys");
const LAST_USED: TableDefinition<&str, u64> = TableDefinition::new("key_last_used");
const SPENT: TableDefinition<&str, &str> = TableDefinition::new("key_spent");
const USAGE: TableDefinition<(&str, &str, &str, &str), &str> = TableDefinition::new("usage");
const CREDITS: TableDefinition<&str, &str> = TableDefinition::new("credits");
const CREDITS_ROW: &str = "snapshot";

/// Everything the file holds, as loaded at open.
#[derive(Debug, Default)]
pub(crate) struct Contents {
    pub keys: Vec<ApiKeyRecord>,
    pub last_used: Vec<(String, u64)>,
    pub spent: Vec<(String, Spent)>,
    pub rows: Vec<(RowKey, RowTotals)>,
    pub credits: Option<CreditSnapshot>,
}

/// What one commit writes (each item replaces the stored one).
#[derive(Debug, Default, Clone)]
pub(crate) struct Batch {
    pub keys: Vec<ApiKeyRecord>,
    pub last_used: Vec<(String, u64)>,
    pub spent: Vec<(String, Spent)>,
    pub rows: Vec<(RowKey, RowTotals)>,
    pub credits: Option<CreditSnapshot>,
    /// Days whose ledger rows are past their retention: deleted.
    pub expired_days: Vec<String>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.last_used.is_empty()
            && self.spent.is_empty()
            && self.rows.is_empty()
            && self.credits.is_none()
            && self.expired_days.is_empty()
    }
}

#[derive(Debug)]
pub(crate) struct DataFile {
    db: Database,
    path: PathBuf,
}

impl DataFile {
    /// Open (or create, with its parent directories) the file at `path` and read it whole.
    pub(crate) fn open(path: &Path) -> Result<(DataFile, Contents), StateError> {
        let shown = path.display();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| {
                StateError::Config(format!(
                    "data file {shown}: cannot create its directory: {error}"
                ))
            })?;
        }
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|error| fail(path, "open", error.into()))?;
        let file = DataFile {
            db,
            path: path.to_owned(),
        };
        file.prepare()?;
        let contents = file.read()?;
        Ok((file, contents))
    }

    /// Create the tables of a new file, and check the schema of an old one.
    fn prepare(&self) -> Result<(), StateError> {
        let failed = |error: redb::Error| fail(&self.path, "prepare", error);
        let txn = self.db.begin_write().map_err(|e| failed(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| failed(e.into()))?;
            let stored = meta
                .get("schema")
                .map_err(|e| failed(e.into()))?
                .map(|v| v.value());
            match stored {
                Some(version) if version != SCHEMA => {
                    return Err(StateError::Corrupt(format!(
                        "data file {}: layout version {version}, this build reads {SCHEMA}",
                        self.path.display()
                    )));
                }
                Some(_) => {}
                None => {
                    meta.insert("schema", SCHEMA)
                        .map_err(|e| failed(e.into()))?;
                }
            }
            txn.open_table(API_KEYS).map_err(|e| failed(e.into()))?;
            txn.open_table(LAST_USED).map_err(|e| failed(e.into()))?;
            txn.open_table(SPENT).map_err(|e| failed(e.into()))?;
            txn.open_table(USAGE).map_err(|e| failed(e.into()))?;
            txn.open_table(CREDITS).map_err(|e| failed(e.into()))?;
        }
        txn.commit().map_err(|e| failed(e.into()))
    }

    fn read(&self) -> Result<Contents, StateError> {
        let failed = |error: redb::Error| fail(&self.path, "read", error);
        let corrupt = |what: &str, error: serde_json::Error| {
            StateError::Corrupt(format!(
                "data file {}: {what}: {error}",
                self.path.display()
            ))
        };
        let txn = self.db.begin_read().map_err(|e| failed(e.into()))?;
        let mut contents = Contents::default();
        let table = txn.open_table(API_KEYS).map_err(|e| failed(e.into()))?;
        for entry in table.iter().map_err(|e| failed(e.into()))? {
            let (_, json) = entry.map_err(|e| failed(e.into()))?;
            contents
                .keys
                .push(serde_json::from_str(json.value()).map_err(|e| corrupt("api key", e))?);
        }
        let table = txn.open_table(LAST_USED).map_err(|e| failed(e.into()))?;
        for entry in table.iter().map_err(|e| failed(e.into()))? {
            let (id, at) = entry.map_err(|e| failed(e.into()))?;
            contents.last_used.push((id.value().to_owned(), at.value()));
        }
        let table = txn.open_table(SPENT).map_err(|e| failed(e.into()))?;
        for entry in table.iter().map_err(|e| failed(e.into()))? {
            let (id, json) = entry.map_err(|e| failed(e.into()))?;
            let spent = serde_json::from_str(json.value()).map_err(|e| corrupt("spent", e))?;
            contents.spent.push((id.value().to_owned(), spent));
        }
        let table = txn.open_table(USAGE).map_err(|e| failed(e.into()))?;
        for entry in table.iter().map_err(|e| failed(e.into()))? {
            let (key, json) = entry.map_err(|e| failed(e.into()))?;
            let (day, key_id, account, model) = key.value();
            let totals = serde_json::from_str(json.value()).map_err(|e| corrupt("usage", e))?;
            let key = RowKey {
                day: day.to_owned(),
                key_id: key_id.to_owned(),
                account: account.to_owned(),
                model: model.to_owned(),
            };
            contents.rows.push((key, totals));
        }
        let table = txn.open_table(CREDITS).map_err(|e| failed(e.into()))?;
        if let Some(json) = table.get(CREDITS_ROW).map_err(|e| failed(e.into()))? {
            contents.credits =
                Some(serde_json::from_str(json.value()).map_err(|e| corrupt("credits", e))?);
        }
        Ok(contents)
    }

    /// Write `batch` in one transaction, durable when this returns.
    pub(crate) fn write(&self, batch: &Batch) -> Result<(), StateError> {
        let failed = |error: redb::Error| fail(&self.path, "write", error);
        let json = |what: &str, result: serde_json::Result<String>| {
            result.map_err(|error| StateError::Invalid(format!("{what}: {error}")))
        };
        let txn = self.db.begin_write().map_err(|e| failed(e.into()))?;
        {
            let mut table = txn.open_table(API_KEYS).map_err(|e| failed(e.into()))?;
            for record in &batch.keys {
                let body = json("api key", serde_json::to_string(record))?;
                table
                    .insert(record.id.as_str(), body.as_str())
                    .map_err(|e| failed(e.into()))?;
            }
            let mut table = txn.open_table(LAST_USED).map_err(|e| failed(e.into()))?;
            for (id, at) in &batch.last_used {
                table
                    .insert(id.as_str(), *at)
                    .map_err(|e| failed(e.into()))?;
            }
            let mut table = txn.open_table(SPENT).map_err(|e| failed(e.into()))?;
            for (id, spent) in &batch.spent {
                let body = json("spent", serde_json::to_string(spent))?;
                table
                    .insert(id.as_str(), body.as_str())
                    .map_err(|e| failed(e.into()))?;
            }
            let mut table = txn.open_table(USAGE).map_err(|e| failed(e.into()))?;
            for (key, totals) in &batch.rows {
                let body = json("usage", serde_json::to_string(totals))?;
                let key = (
                    key.day.as_str(),
                    key.key_id.as_str(),
                    key.account.as_str(),
                    key.model.as_str(),
                );
                table
                    .insert(key, body.as_str())
                    .map_err(|e| failed(e.into()))?;
            }
            if !batch.expired_days.is_empty() {
                table
                    .retain(|(day, ..), _| !batch.expired_days.iter().any(|d| d == day))
                    .map_err(|e| failed(e.into()))?;
            }
            if let Some(credits) = &batch.credits {
                let body = json("credits", serde_json::to_string(credits))?;
                txn.open_table(CREDITS)
                    .map_err(|e| failed(e.into()))?
                    .insert(CREDITS_ROW, body.as_str())
                    .map_err(|e| failed(e.into()))?;
            }
        }
        txn.commit().map_err(|e| failed(e.into()))
    }

    /// Close the file (releasing its lock), reporting what dropping it would ignore.
    pub(crate) fn close(self) -> Result<(), StateError> {
        let path = self.path;
        self.db
            .close()
            .map_err(|error| fail(&path, "close", error.into()))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A redb error as ours, naming the file.
fn fail(path: &Path, op: &str, error: redb::Error) -> StateError {
    let shown = path.display();
    match error {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StateError::Config(format!(
                "data file {shown} is already open in another process (one process per data file)"
            ))
        }
        redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => {
            StateError::Corrupt(format!("data file {shown}: {op}: {error}"))
        }
        other => StateError::Unavailable(format!("data file {shown}: {op}: {other}")),
    }
}
