//! "An older read never undoes my own write": the one mechanism behind the engine's caches of
//! shared state (credits, circuit breakers, cooldowns).
//!
//! Each cache is re-read from its store with every refresh and also written by this engine
//! itself (a charge, a breaker transition, a rate limit met). A read takes a while; a local
//! write made while it was on its way must not be replaced by what the read brings back. So
//! every local write stamps its entry with a number from a counter the caches share, a read
//! notes the counter when it begins ([`Versioned::began`]), and when its result comes back an
//! entry written after that is kept ([`Versioned::refreshed`]).
//!
//! The shared counter also moves on every change, read or written: the routing view compares
//! it with the number it was built at to know whether it is still current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The counter the caches share: it moves on every change of any of them.
#[derive(Clone, Default)]
pub(crate) struct Changes(Arc<AtomicU64>);

impl Changes {
    /// The number of the last change.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Note a change (of something else the routing view is built from).
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// When a read of the store began (see [`Versioned::began`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadBegan(u64);

struct Entry<V> {
    value: V,
    /// The change number of this engine's last write of the entry; 0 for a value read.
    written: u64,
}

/// Values by account, read from a store and written locally.
pub(crate) struct Versioned<V> {
    entries: Mutex<HashMap<String, Entry<V>>>,
    changes: Changes,
}

impl<V: Clone> Versioned<V> {
    pub fn new(changes: Changes) -> Self {
        Versioned {
            entries: Mutex::new(HashMap::new()),
            changes,
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry<V>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, account: &str) -> Option<V> {
        self.entries().get(account).map(|e| e.value.clone())
    }

    /// Every entry, as one consistent copy.
    pub fn all(&self) -> HashMap<String, V> {
        self.entries()
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// A local write: no read that began before it undoes it.
    pub fn write(&self, account: &str, value: V) {
        self.update(account, |_| Some(value));
    }

    /// A local write computed from the entry as it is (`None`: absent); `f` returning `None`
    /// leaves it as it was.
    pub fn update(&self, account: &str, f: impl FnOnce(Option<&V>) -> Option<V>) {
        let mut entries = self.entries();
        if let Some(value) = f(entries.get(account).map(|e| &e.value)) {
            let written = self.changes.next();
            entries.insert(account.to_owned(), Entry { value, written });
        }
    }

    /// Note that a read of the store begins now.
    pub fn began(&self) -> ReadBegan {
        ReadBegan(self.changes.current())
    }

    /// What a read that began at `began` found. An entry this engine wrote after the read
    /// began stays as it is, and so does one for which `keep(current, read)` says so; entries
    /// the read did not cover stay too.
    pub fn refreshed(
        &self,
        began: ReadBegan,
        read: impl IntoIterator<Item = (String, V)>,
        keep: impl Fn(&V, &V) -> bool,
    ) {
        let mut entries = self.entries();
        for (account, value) in read {
            let kept = entries
                .get(&account)
                .is_some_and(|e| e.written > began.0 || keep(&e.value, &value));
            if !kept {
                entries.insert(account, Entry { value, written: 0 });
            }
        }
        self.changes.next();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn never(_: &i64, _: &i64) -> bool {
        false
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_began_before_a_local_write_does_not_undo_it() {
        let cell = Versioned::<i64>::new(Changes::default());
        cell.refreshed(cell.began(), [("a".to_owned(), 10)], never);
        // A read begins; while it is on its way this engine charges the account; then the
        // read comes back with the balance from before the charge.
        let began = cell.began();
        tokio::time::advance(Duration::from_millis(50)).await;
        cell.write("a", 7);
        tokio::time::advance(Duration::from_millis(50)).await;
        cell.refreshed(began, [("a".to_owned(), 10), ("b".to_owned(), 5)], never);
        assert_eq!(cell.get("a"), Some(7), "the older read is ignored for a");
        assert_eq!(cell.get("b"), Some(5), "and applied for the others");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_began_after_the_write_replaces_it() {
        let cell = Versioned::<i64>::new(Changes::default());
        cell.write("a", 7);
        tokio::time::advance(Duration::from_secs(1)).await;
        cell.refreshed(cell.began(), [("a".to_owned(), 3)], never);
        assert_eq!(cell.get("a"), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_decides_for_values_read_before() {
        let cell = Versioned::<i64>::new(Changes::default());
        cell.refreshed(cell.began(), [("a".to_owned(), 9)], never);
        // The later (larger) value wins, whoever wrote it.
        cell.refreshed(cell.began(), [("a".to_owned(), 4)], |old, new| old > new);
        assert_eq!(cell.get("a"), Some(9));
        cell.refreshed(cell.began(), [("a".to_owned(), 12)], |old, new| old > new);
        assert_eq!(cell.get("a"), Some(12));
    }

    #[tokio::test(start_paused = true)]
    async fn every_change_moves_the_shared_counter() {
        let changes = Changes::default();
        let one = Versioned::<i64>::new(changes.clone());
        let two = Versioned::<i64>::new(changes.clone());
        let start = changes.current();
        one.write("a", 1);
        let after_write = changes.current();
        assert!(after_write > start);
        two.refreshed(two.began(), [], never);
        assert!(changes.current() > after_write);
        // An update that declines to write changes nothing.
        let before = changes.current();
        one.update("a", |_| None);
        assert_eq!(changes.current(), before);
        assert_eq!(one.get("a"), Some(1));
    }
}
