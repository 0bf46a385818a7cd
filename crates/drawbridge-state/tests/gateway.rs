//! The conformance suite of the gateway's stores ([`KeyStore`], [`RateLimiter`],
//! [`UsageStore`]): every scenario in `suite` runs against the embedded store in memory and with
//! a data file (on a clock the test moves), and against ValKey (two clients, "two gateway
//! nodes", on a real `redis-server`, on ValKey's clock: short windows and TTLs, polled). Then
//! what only one implementation has: the ValKey key layout (and that no secret is in it), the
//! ValKey touch throttle, the embedded window arithmetic to the millisecond, and the data file:
//! restart, lock, write-behind, close.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drawbridge_runtime::Shutdown;
use drawbridge_state::{
    ApiKeyRecord, CHARGE_DEDUP_WINDOW, CreditStore, EmbeddedGatewayStore, KeyLimits, KeyStore,
    Quota, QuotaUnit, RateLimiter, Spent, StateError, USAGE_RETENTION_DAYS, UsageEntry,
    UsageFilter, UsageRow, UsageStore, ValkeyRegistry,
};
use test_support::redis::RedisServer;
use test_support::state::{Cleanup, valkey_pair, wall_ms};
use test_support::{PATIENCE, eventually};

/// How long a test waits for something that should happen.
const MINUTE: Duration = Duration::from_secs(60);
/// How far apart two clocks of this machine (ValKey's `TIME`, the test's) may be read.
const CLOCK_SLACK_MS: u64 = 2_000;

/// The three stores as one object (each implementation is all three).
trait Stores: KeyStore + RateLimiter + UsageStore {}
impl<T: KeyStore + RateLimiter + UsageStore> Stores for T {}

/// The stores of two gateway nodes of one deployment (embedded: one store, both the same),
/// and the clock their time-based behaviour follows.
struct Nodes {
    a: Arc<dyn Stores>,
    b: Arc<dyn Stores>,
    time: Time,
}

enum Time {
    /// The embedded store's clock, moved by the test.
    Manual(Arc<AtomicU64>),
    /// ValKey's clock: real time passes.
    Real,
}

impl Nodes {
    /// Now on the stores' clock (for ValKey: this machine's, which its `TIME` reads too).
    fn now_ms(&self) -> u64 {
        match &self.time {
            Time::Manual(clock) => clock.load(Ordering::SeqCst),
            Time::Real => wall_ms(),
        }
    }

    /// Let `duration` pass: at once on a manual clock; on real time the polls that follow wait.
    fn advance(&self, duration: Duration) {
        if let Time::Manual(clock) = &self.time {
            clock.fetch_add(
                u64::try_from(duration.as_millis()).unwrap(),
                Ordering::SeqCst,
            );
        }
    }
}

/// Poll `attempt` until it yields something, for at most [`PATIENCE`].
/// A stand-in for the gateway's SHA-256 of a secret: 64 lowercase hex digits that depend on
/// every byte of it (the store only checks the shape).
fn hash_of(secret: &str) -> String {
    (0..4u64)
        .map(|lane| {
            let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ lane;
            for byte in secret.bytes() {
                h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

fn secret(id: &str) -> String {
    format!("db-{id}-0123456789abcdefghijklmnopqrstuv")
}

fn record(id: &str, created_at_ms: u64) -> ApiKeyRecord {
    let secret = secret(id);
    ApiKeyRecord {
        id: id.to_owned(),
        name: format!("{id} for tests"),
        prefix: secret[..10].to_owned(),
        hash: hash_of(&secret),
        created_at_ms,
        expires_at_ms: None,
        revoked_at_ms: None,
        last_used_at_ms: None,
        limits: KeyLimits::default(),
    }
}

fn credits(limit: f64) -> Quota {
    Quota {
        unit: QuotaUnit::Credits,
        limit,
    }
}

fn entry(request_id: &str, key_id: &str, account: &str, model: &str, at_ms: u64) -> UsageEntry {
    UsageEntry {
        request_id: request_id.to_owned(),
        key_id: key_id.to_owned(),
        account: account.to_owned(),
        model: model.to_owned(),
        at_ms,
        prompt_tokens: 10,
        completion_tokens: 20,
        credits: 0.5,
        tokens_estimated: false,
    }
}

/// `YYYY-MM-DD` at `hh:mm:ss.mmm` UTC, in ms since the epoch.
fn at(day: &str, time_of_day_ms: u64) -> u64 {
    let days = drawbridge_core::day::parse_day(day).unwrap();
    u64::try_from(days).unwrap() * drawbridge_core::day::DAY_MS + time_of_day_ms
}

fn invalid<T: std::fmt::Debug>(result: Result<T, StateError>) -> String {
    match result {
        Err(StateError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

mod suite {
    use super::*;

    pub async fn keys_are_stored_found_and_listed(n: Nodes) {
        let now = n.now_ms();
        let newer = record("key_b", now + 10);
        let older = record("key_a", now);
        n.a.create_key(&newer).await.unwrap();
        n.a.create_key(&older).await.unwrap();
        // Read on the other node.
        assert_eq!(n.b.key("key_a").await.unwrap(), Some(older.clone()));
        assert_eq!(
            n.b.key_by_hash(&newer.hash).await.unwrap(),
            Some(newer.clone())
        );
        assert_eq!(n.b.keys().await.unwrap(), vec![older.clone(), newer]);
        assert_eq!(n.b.key("key_missing").await.unwrap(), None);
        assert_eq!(n.b.key("not:an:id").await.unwrap(), None);
        assert_eq!(n.b.key_by_hash(&hash_of("db-unknown")).await.unwrap(), None);
        assert_eq!(n.b.key_by_hash("not a hash").await.unwrap(), None);

        // Everything a record holds comes back as it went in.
        let full = ApiKeyRecord {
            expires_at_ms: Some(now + 86_400_000),
            last_used_at_ms: Some(now - 5),
            limits: KeyLimits {
                rpm: Some(0),
                quota: Some(Quota {
                    unit: QuotaUnit::Tokens,
                    limit: 1_000_000.0,
                }),
                models: vec!["kiro".into(), "vendor/model:v1".into()],
            },
            ..record("key_c", now + 20)
        };
        n.a.create_key(&full).await.unwrap();
        assert_eq!(n.b.key("key_c").await.unwrap(), Some(full.clone()));
        assert_eq!(n.b.keys().await.unwrap()[2], full);
    }

    pub async fn keys_are_updated_revoked_and_touched(n: Nodes) {
        let now = n.now_ms();
        let key = record("key_1", now);
        n.a.create_key(&key).await.unwrap();

        let limits = KeyLimits {
            rpm: Some(5),
            quota: Some(credits(12.5)),
            models: vec!["kiro".into()],
        };
        let updated = n.a.update_key("key_1", &limits, Some(now + 1_000)).await;
        let expected = ApiKeyRecord {
            limits: limits.clone(),
            expires_at_ms: Some(now + 1_000),
            ..key.clone()
        };
        assert_eq!(updated.unwrap(), Some(expected.clone()));
        assert_eq!(n.b.key("key_1").await.unwrap(), Some(expected.clone()));
        // Expiry can be taken away again.
        let no_expiry = n.b.update_key("key_1", &limits, None).await.unwrap();
        assert_eq!(no_expiry.unwrap().expires_at_ms, None);
        assert_eq!(
            n.a.update_key("key_missing", &limits, None).await.unwrap(),
            None
        );
        let nan = KeyLimits {
            quota: Some(credits(f64::NAN)),
            ..KeyLimits::default()
        };
        invalid(n.a.update_key("key_1", &nan, None).await);

        // Last use: forward only; unknown keys are not created.
        n.a.touch_key("key_1", now + 2_000).await.unwrap();
        assert_eq!(
            n.b.key("key_1").await.unwrap().unwrap().last_used_at_ms,
            Some(now + 2_000)
        );
        n.b.touch_key("key_1", now - 5_000).await.unwrap();
        n.a.touch_key("key_1", now + 7_000).await.unwrap();
        assert_eq!(
            n.b.key("key_1").await.unwrap().unwrap().last_used_at_ms,
            Some(now + 7_000)
        );
        n.a.touch_key("key_missing", now).await.unwrap();
        assert_eq!(n.b.key("key_missing").await.unwrap(), None);
        // A change of limits keeps the last use.
        let kept = n.a.update_key("key_1", &limits, None).await.unwrap();
        assert_eq!(kept.unwrap().last_used_at_ms, Some(now + 7_000));

        // Revocation: seen by the other node at once, first time kept, still found by hash.
        let revoked = n.a.revoke_key("key_1", now + 3_000).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at_ms, Some(now + 3_000));
        assert_eq!(
            n.b.key("key_1").await.unwrap().unwrap().revoked_at_ms,
            Some(now + 3_000)
        );
        let again = n.b.revoke_key("key_1", now + 9_000).await.unwrap().unwrap();
        assert_eq!(again.revoked_at_ms, Some(now + 3_000));
        let by_hash = n.b.key_by_hash(&key.hash).await.unwrap().unwrap();
        assert_eq!(by_hash.revoked_at_ms, Some(now + 3_000));
        assert_eq!(by_hash.limits, limits);
        assert_eq!(n.a.revoke_key("key_missing", now).await.unwrap(), None);
    }

    pub async fn duplicates_and_bad_records_are_refused(n: Nodes) {
        let now = n.now_ms();
        let first = record("key_1", now);
        n.a.create_key(&first).await.unwrap();

        let same_id = record("key_1", now + 1);
        let same_id = ApiKeyRecord {
            hash: hash_of("db-another-secret"),
            ..same_id
        };
        let message = invalid(n.b.create_key(&same_id).await);
        assert!(message.contains("key_1"), "{message}");

        let same_hash = ApiKeyRecord {
            id: "key_2".into(),
            ..first.clone()
        };
        let message = invalid(n.b.create_key(&same_hash).await);
        assert!(
            !message.contains(&first.hash),
            "an error names no hash: {message}"
        );
        assert_eq!(n.a.keys().await.unwrap(), vec![first.clone()]);
        assert_eq!(n.a.key_by_hash(&first.hash).await.unwrap(), Some(first));

        let bad_id = record("key:3", now);
        invalid(n.a.create_key(&bad_id).await);
        // Anything but a hash where the hash goes, a secret above all, is refused.
        let secret_as_hash = ApiKeyRecord {
            hash: secret("key_4"),
            ..record("key_4", now)
        };
        let message = invalid(n.a.create_key(&secret_as_hash).await);
        assert!(!message.contains(&secret("key_4")), "{message}");
        let upper = ApiKeyRecord {
            hash: hash_of("x").to_uppercase(),
            ..record("key_5", now)
        };
        invalid(n.a.create_key(&upper).await);
        let negative_quota = ApiKeyRecord {
            limits: KeyLimits {
                quota: Some(credits(-1.0)),
                ..KeyLimits::default()
            },
            ..record("key_6", now)
        };
        invalid(n.a.create_key(&negative_quota).await);
        assert_eq!(n.b.keys().await.unwrap().len(), 1);
    }

    pub async fn the_limit_passes_then_refuses_on_every_node(n: Nodes) {
        let before = n.now_ms();
        let mut decisions = Vec::new();
        for i in 0..5 {
            let node = if i % 2 == 0 { &n.a } else { &n.b };
            decisions.push(node.hit("key_1", 5, MINUTE).await.unwrap());
        }
        let first_reset = decisions[0].reset_at_ms;
        assert!(
            first_reset + CLOCK_SLACK_MS >= before + 60_000
                && first_reset <= n.now_ms() + 60_000 + CLOCK_SLACK_MS,
            "reset {first_reset} is a minute after the first request ({before})"
        );
        for (i, decision) in decisions.iter().enumerate() {
            assert!(decision.allowed, "request {i}: {decision:?}");
            assert_eq!(decision.limit, 5);
            assert_eq!(decision.remaining, 4 - u32::try_from(i).unwrap());
            assert_eq!(decision.reset_at_ms, first_reset, "the first leaves first");
            assert_eq!(decision.retry_after_ms, 0);
        }

        let refused = n.b.hit("key_1", 5, MINUTE).await.unwrap();
        assert!(!refused.allowed, "{refused:?}");
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_at_ms, first_reset);
        assert!(
            refused.retry_after_ms >= 1 && refused.retry_after_ms <= 60_000,
            "{refused:?}"
        );
        // Retry-After points at the reset: it was measured from the store's now.
        let asked_at = refused.reset_at_ms - refused.retry_after_ms;
        assert!(
            asked_at + CLOCK_SLACK_MS >= before && asked_at <= n.now_ms() + CLOCK_SLACK_MS,
            "{refused:?} asked at {asked_at}, test clock {before}..{}",
            n.now_ms()
        );
        // Refused requests are not counted: still refused the same way, reset unmoved.
        let again = n.a.hit("key_1", 5, MINUTE).await.unwrap();
        assert!(!again.allowed);
        assert_eq!(again.reset_at_ms, first_reset);

        // Another subject has its own window.
        let other = n.a.hit("key_2", 5, MINUTE).await.unwrap();
        assert!(other.allowed);
        assert_eq!(other.remaining, 4);

        invalid(n.a.hit("key_1", 0, MINUTE).await);
        invalid(n.a.hit("key_1", 5, Duration::from_micros(10)).await);
        invalid(n.a.hit("", 5, MINUTE).await);
    }

    pub async fn the_window_slides(n: Nodes) {
        let window = Duration::from_secs(1);
        assert!(n.a.hit("key_1", 2, window).await.unwrap().allowed);
        assert!(n.b.hit("key_1", 2, window).await.unwrap().allowed);
        let refused = n.a.hit("key_1", 2, window).await.unwrap();
        let refused_at = n.now_ms();
        assert!(!refused.allowed);
        assert!(
            refused.retry_after_ms >= 1 && refused.retry_after_ms <= 1_000,
            "{refused:?}"
        );

        n.advance(window);
        let passed = eventually("the window slides", || async {
            let decision = n.b.hit("key_1", 2, window).await.unwrap();
            decision.allowed.then_some(decision)
        })
        .await;
        let waited = n.now_ms() - refused_at;
        assert!(
            waited + 50 >= refused.retry_after_ms,
            "passed after {waited} ms; Retry-After said {} ms",
            refused.retry_after_ms
        );
        assert!(passed.reset_at_ms + 50 >= refused.reset_at_ms, "{passed:?}");
    }

    pub async fn concurrent_reserves_admit_what_the_rule_allows(n: Nodes) {
        // 50 requests of one key at once, on two nodes: a budget of 100 credits with 10
        // reserved each admits exactly 10 of them.
        let admitted = reserve_at_once(&n, "key_1", credits(100.0), 10.0, 50).await;
        assert_eq!(admitted, 10);
        // A request larger than the budget gets in alone.
        let admitted = reserve_at_once(&n, "key_2", credits(100.0), 150.0, 50).await;
        assert_eq!(admitted, 1);
        // Reservations are not spending.
        assert_eq!(n.a.spent("key_1").await.unwrap(), Spent::default());
    }

    async fn reserve_at_once(n: &Nodes, key: &str, quota: Quota, amount: f64, count: u32) -> u32 {
        let scope = Shutdown::new();
        let start = Arc::new(tokio::sync::Barrier::new(usize::try_from(count).unwrap()));
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let store = Arc::clone(if i % 2 == 0 { &n.a } else { &n.b });
                let (key, quota, start) = (key.to_owned(), quota.clone(), Arc::clone(&start));
                scope.spawn(async move {
                    start.wait().await;
                    let request = format!("req-{i}");
                    store
                        .reserve(&key, &request, &quota, amount, MINUTE)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            let decision = task.await.unwrap();
            if decision.allowed {
                admitted += 1;
                // What was admitted fits the rule it was admitted under.
                assert!(
                    decision.in_flight == 0
                        || decision.spent + decision.reserved + amount <= quota.limit,
                    "{decision:?}"
                );
            }
        }
        admitted
    }

    pub async fn a_charge_recorded_twice_counts_once(n: Nodes) {
        let budget = credits(100.0);
        assert!(
            n.a.reserve("key_1", "r1", &budget, 10.0, MINUTE)
                .await
                .unwrap()
                .allowed
        );
        let mut used = entry("r1", "key_1", "acct-a", "kiro", n.now_ms());
        used.credits = 3.0;
        // The first call's outcome was unclear to its caller, who records it again, elsewhere.
        n.a.record_usage(&used).await.unwrap();
        n.b.record_usage(&used).await.unwrap();
        n.a.record_usage(&used).await.unwrap();
        let once = Spent {
            tokens: 30,
            credits: 3.0,
            requests: 1,
        };
        assert_eq!(n.b.spent("key_1").await.unwrap(), once);
        let rows = n.a.usage(&UsageFilter::default()).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].requests, rows[0].credits), (1, 3.0), "{rows:?}");
        // Another request of the same key is charged, of course.
        n.b.record_usage(&entry("r2", "key_1", "acct-a", "kiro", n.now_ms()))
            .await
            .unwrap();
        assert_eq!(n.a.spent("key_1").await.unwrap().requests, 2);
    }

    pub async fn a_retry_after_other_charges_counts_once(n: Nodes) {
        // A charge whose answer was lost lands; thousands of other requests are charged, on
        // both nodes; then its retry comes: it counts once (well inside both bounds).
        n.a.record_usage(&entry("lost", "key_1", "acct-a", "kiro", n.now_ms()))
            .await
            .unwrap();
        charge_many(&n, "other", "key_2", 2_000).await;
        n.advance(CHARGE_DEDUP_WINDOW / 2);
        n.b.record_usage(&entry("lost", "key_1", "acct-a", "kiro", n.now_ms()))
            .await
            .unwrap();
        assert_eq!(n.a.spent("key_1").await.unwrap().requests, 1);
        assert_eq!(n.b.spent("key_2").await.unwrap().requests, 2_000);
        // Each of the others is remembered too.
        charge_many(&n, "other", "key_2", 2_000).await;
        assert_eq!(n.a.spent("key_2").await.unwrap().requests, 2_000);
    }

    pub async fn a_released_reservation_frees_the_budget_and_charges_nothing(n: Nodes) {
        let budget = credits(100.0);
        assert!(
            n.a.reserve("key_1", "r1", &budget, 60.0, MINUTE)
                .await
                .unwrap()
                .allowed
        );
        let refused =
            n.b.reserve("key_1", "r2", &budget, 60.0, MINUTE)
                .await
                .unwrap();
        assert!(!refused.allowed, "r1 holds 60 of 100");
        n.b.release("key_1", "r1").await.unwrap();
        let after =
            n.a.reserve("key_1", "r2", &budget, 60.0, MINUTE)
                .await
                .unwrap();
        assert!(after.allowed, "r1 gave its share back: {after:?}");
        assert_eq!(
            (after.spent, after.reserved, after.in_flight),
            (0.0, 0.0, 0)
        );
        assert_eq!(n.a.spent("key_1").await.unwrap(), Spent::default());
        // Releasing what is not reserved (twice, or an unknown key) is harmless.
        n.a.release("key_1", "r1").await.unwrap();
        n.a.release("key_2", "nothing").await.unwrap();
        let rows = n.a.usage(&UsageFilter::default()).await.unwrap();
        assert!(rows.is_empty(), "a release writes no ledger row: {rows:?}");
    }

    pub async fn recorded_usage_frees_the_reservation_and_counts(n: Nodes) {
        let budget = credits(100.0);
        let first = n.a.reserve("key_1", "r1", &budget, 60.0, MINUTE).await;
        let first = first.unwrap();
        assert!(first.allowed);
        assert_eq!(
            (first.spent, first.reserved, first.in_flight),
            (0.0, 0.0, 0)
        );
        let second = n.b.reserve("key_1", "r2", &budget, 60.0, MINUTE).await;
        let second = second.unwrap();
        assert!(!second.allowed, "0 + 60 + 60 > 100 with one in flight");
        assert_eq!((second.reserved, second.in_flight), (60.0, 1));

        let mut used = entry("r1", "key_1", "acct-a", "kiro", n.now_ms());
        used.credits = 30.0;
        n.b.record_usage(&used).await.unwrap();
        assert_eq!(
            n.a.spent("key_1").await.unwrap(),
            Spent {
                tokens: 30,
                credits: 30.0,
                requests: 1
            }
        );
        // r1's reservation is gone: r2 is now alone, and budget is left.
        let second = n.a.reserve("key_1", "r2", &budget, 60.0, MINUTE).await;
        let second = second.unwrap();
        assert!(second.allowed, "{second:?}");
        assert_eq!(
            (second.spent, second.reserved, second.in_flight),
            (30.0, 0.0, 0)
        );
        // It uses more than it reserved: the budget is overspent by that, and then closed.
        let mut used = entry("r2", "key_1", "acct-a", "kiro", n.now_ms());
        used.credits = 80.0;
        n.a.record_usage(&used).await.unwrap();
        let third = n.b.reserve("key_1", "r3", &budget, 0.0, MINUTE).await;
        let third = third.unwrap();
        assert!(!third.allowed);
        assert_eq!((third.spent, third.in_flight), (110.0, 0));

        // A token budget counts prompt plus completion tokens.
        let tokens = Quota {
            unit: QuotaUnit::Tokens,
            limit: 50.0,
        };
        let decision = n.a.reserve("key_1", "r4", &tokens, 10.0, MINUTE).await;
        let decision = decision.unwrap();
        assert!(!decision.allowed, "60 tokens spent of 50: {decision:?}");
        assert_eq!(decision.spent, 60.0);
        let spent = n.b.spent("key_1").await.unwrap();
        assert_eq!(
            spent,
            Spent {
                tokens: 60,
                credits: 110.0,
                requests: 2
            }
        );
        // Usage without a reservation (a key without quota) counts all the same.
        n.a.record_usage(&entry("r9", "key_2", "acct-a", "kiro", n.now_ms()))
            .await
            .unwrap();
        assert_eq!(n.b.spent("key_2").await.unwrap().requests, 1);
        assert_eq!(n.b.spent("key_unused").await.unwrap(), Spent::default());

        invalid(
            n.a.reserve("key_1", "r5", &credits(f64::INFINITY), 1.0, MINUTE)
                .await,
        );
        invalid(n.a.reserve("key_1", "r5", &budget, -1.0, MINUTE).await);
        invalid(n.a.reserve("key:1", "r5", &budget, 1.0, MINUTE).await);
        invalid(n.a.reserve("key_1", "", &budget, 1.0, MINUTE).await);
        invalid(
            n.a.reserve("key_1", "r5", &budget, 1.0, Duration::ZERO)
                .await,
        );
        let mut bad = entry("r6", "key_1", "acct-a", "kiro", n.now_ms());
        bad.credits = f64::NAN;
        invalid(n.a.record_usage(&bad).await);
    }

    pub async fn expired_reservations_stop_counting(n: Nodes) {
        let budget = credits(100.0);
        let ttl = Duration::from_millis(300);
        // A long reservation beside the short one: the short one must expire on its own, not
        // with everything the key holds.
        let long =
            n.a.reserve("key_1", "r0", &budget, 5.0, MINUTE)
                .await
                .unwrap();
        assert!(long.allowed);
        let held =
            n.a.reserve("key_1", "r1", &budget, 90.0, ttl)
                .await
                .unwrap();
        assert!(held.allowed, "{held:?}");
        let reserved_at = n.now_ms();
        let refused = n.b.reserve("key_1", "r2", &budget, 20.0, MINUTE).await;
        let refused = refused.unwrap();
        assert!(!refused.allowed);
        assert_eq!((refused.reserved, refused.in_flight), (95.0, 2));

        n.advance(ttl);
        let admitted = eventually("the reservation expires", || async {
            let decision = n.b.reserve("key_1", "r2", &budget, 20.0, MINUTE).await;
            let decision = decision.unwrap();
            decision.allowed.then_some(decision)
        })
        .await;
        assert!(
            n.now_ms() - reserved_at + 50 >= 300,
            "expired before its TTL"
        );
        assert_eq!((admitted.reserved, admitted.in_flight), (5.0, 1));
        // The late request's record is still charged.
        n.a.record_usage(&entry("r1", "key_1", "acct-a", "kiro", n.now_ms()))
            .await
            .unwrap();
        assert_eq!(n.b.spent("key_1").await.unwrap().requests, 1);
    }

    pub async fn usage_rows_aggregate_and_filter(n: Nodes) {
        let day1 = "2026-03-01";
        let day2 = "2026-03-02";
        let mut e1 = entry("r1", "key_1", "acct-a", "kiro", at(day1, 36_000_000));
        e1.credits = 0.5;
        let mut e2 = entry("r2", "key_1", "acct-a", "kiro", at(day1, 86_399_999));
        (e2.prompt_tokens, e2.completion_tokens) = (1, 2);
        e2.credits = 0.25;
        e2.tokens_estimated = true;
        let e3 = entry("r3", "key_1", "acct:b", "kiro", at(day1, 0));
        let e4 = entry("r4", "key_2", "acct-a", "vendor/model:v1", at(day2, 0));
        let e5 = entry("r5", "key_1", "acct-a", "kiro", at(day2, 1));
        for (i, e) in [&e1, &e2, &e3, &e4, &e5].into_iter().enumerate() {
            let node = if i % 2 == 0 { &n.a } else { &n.b };
            node.record_usage(e).await.unwrap();
        }
        let row = |day: &str, key: &str, account: &str, model: &str| UsageRow {
            day: day.into(),
            key_id: key.into(),
            account: account.into(),
            model: model.into(),
            requests: 1,
            prompt_tokens: 10,
            completion_tokens: 20,
            credits: 0.5,
            estimated_requests: 0,
        };
        let all = vec![
            UsageRow {
                requests: 2,
                prompt_tokens: 11,
                completion_tokens: 22,
                credits: 0.75,
                estimated_requests: 1,
                ..row(day1, "key_1", "acct-a", "kiro")
            },
            row(day1, "key_1", "acct:b", "kiro"),
            row(day2, "key_1", "acct-a", "kiro"),
            row(day2, "key_2", "acct-a", "vendor/model:v1"),
        ];
        let days = UsageFilter {
            from_day: Some(day1.into()),
            to_day: Some(day2.into()),
            ..UsageFilter::default()
        };
        assert_eq!(n.b.usage(&days).await.unwrap(), all);

        let only = |filter: UsageFilter| {
            let n = &n;
            async move { n.a.usage(&filter).await.unwrap() }
        };
        let key_2 = UsageFilter {
            key_id: Some("key_2".into()),
            ..days.clone()
        };
        assert_eq!(only(key_2).await, vec![all[3].clone()]);
        let account = UsageFilter {
            account: Some("acct:b".into()),
            ..days.clone()
        };
        assert_eq!(only(account).await, vec![all[1].clone()]);
        let model = UsageFilter {
            model: Some("kiro".into()),
            ..days.clone()
        };
        assert_eq!(only(model).await, all[..3].to_vec());
        let second_day = UsageFilter {
            from_day: Some(day2.into()),
            ..days.clone()
        };
        assert_eq!(only(second_day).await, all[2..].to_vec());
        let first_day = UsageFilter {
            to_day: Some(day1.into()),
            ..days.clone()
        };
        assert_eq!(only(first_day).await, all[..2].to_vec());
        let before = UsageFilter {
            from_day: Some("2026-02-01".into()),
            to_day: Some("2026-02-28".into()),
            ..UsageFilter::default()
        };
        assert!(only(before).await.is_empty());
        let backwards = UsageFilter {
            from_day: Some(day2.into()),
            to_day: Some(day1.into()),
            ..UsageFilter::default()
        };
        assert!(only(backwards).await.is_empty());

        // Without days: the last 31, today included.
        let now = n.now_ms();
        n.a.record_usage(&entry("r6", "key_3", "acct-a", "kiro", now))
            .await
            .unwrap();
        let old = now - 40 * drawbridge_core::day::DAY_MS;
        n.a.record_usage(&entry("r7", "key_3", "acct-a", "kiro", old))
            .await
            .unwrap();
        let key_3 = UsageFilter {
            key_id: Some("key_3".into()),
            ..UsageFilter::default()
        };
        let recent = n.b.usage(&key_3).await.unwrap();
        assert_eq!(recent.len(), 1, "{recent:?}");
        assert_eq!(recent[0].day, drawbridge_core::day::utc_day(now));

        let bad_day = UsageFilter {
            from_day: Some("2026-3-1".into()),
            ..UsageFilter::default()
        };
        invalid(n.a.usage(&bad_day).await);
        let too_long = UsageFilter {
            from_day: Some("2025-01-01".into()),
            to_day: Some("2026-03-01".into()),
            ..UsageFilter::default()
        };
        invalid(n.a.usage(&too_long).await);
    }
}

/// Charge `count` requests `{prefix}-{i}` of `key` at once, 16 at a time, half on each node.
async fn charge_many(n: &Nodes, prefix: &str, key: &str, count: u32) {
    const LANES: u32 = 16;
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let store = Arc::clone(if lane % 2 == 0 { &n.a } else { &n.b });
        let (prefix, key, now) = (prefix.to_owned(), key.to_owned(), n.now_ms());
        lanes.spawn(async move {
            for i in (lane..count).step_by(LANES as usize) {
                let id = format!("{prefix}-{i}");
                store
                    .record_usage(&entry(&id, &key, "acct-a", "kiro", now))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(lane) = lanes.join_next().await {
        lane.unwrap();
    }
}

/// The embedded store on a clock the test moves.
fn manual_clock(store: EmbeddedGatewayStore) -> (EmbeddedGatewayStore, Time) {
    let clock = Arc::new(AtomicU64::new(wall_ms()));
    let reader = Arc::clone(&clock);
    let store = store.with_clock(Arc::new(move || reader.load(Ordering::SeqCst)));
    (store, Time::Manual(clock))
}

async fn open_embedded() -> (Nodes, Cleanup) {
    let (store, time) = manual_clock(EmbeddedGatewayStore::in_memory());
    let store: Arc<dyn Stores> = Arc::new(store);
    let nodes = Nodes {
        a: Arc::clone(&store),
        b: store,
        time,
    };
    (nodes, Cleanup::default())
}

async fn open_embedded_file() -> (Nodes, Cleanup) {
    let dir = tempfile::tempdir().unwrap();
    let scope = Shutdown::new();
    let (store, time) = manual_clock(
        EmbeddedGatewayStore::open(dir.path().join("gateway.redb"), &scope)
            .await
            .unwrap(),
    );
    let store = Arc::new(store);
    let mut cleanup = Cleanup::default();
    let closing = Arc::clone(&store);
    cleanup.then(async move {
        closing.close().await.unwrap();
        assert!(scope.drain(PATIENCE).await, "the writer task ends");
    });
    cleanup.keep(dir);
    let both: Arc<dyn Stores> = store;
    let nodes = Nodes {
        a: Arc::clone(&both),
        b: both,
        time,
    };
    (nodes, cleanup)
}

async fn open_valkey() -> (Nodes, Cleanup) {
    let (a, b, cleanup) = valkey_pair().await;
    (
        Nodes {
            a,
            b,
            time: Time::Real,
        },
        cleanup,
    )
}

test_support::conformance! {
    scenarios: [
        keys_are_stored_found_and_listed,
        keys_are_updated_revoked_and_touched,
        duplicates_and_bad_records_are_refused,
        the_limit_passes_then_refuses_on_every_node,
        the_window_slides,
        concurrent_reserves_admit_what_the_rule_allows,
        recorded_usage_frees_the_reservation_and_counts,
        a_charge_recorded_twice_counts_once,
        a_retry_after_other_charges_counts_once,
        a_released_reservation_frees_the_budget_and_charges_nothing,
        expired_reservations_stop_counting,
        usage_rows_aggregate_and_filter,
    ],
    embedded(flavor = "multi_thread", worker_threads = 2) => open_embedded,
    embedded_file(flavor = "multi_thread", worker_threads = 2) => open_embedded_file,
    valkey(flavor = "multi_thread", worker_threads = 2) => open_valkey,
}

/// A charged request id is remembered for the dedup window and forgotten after it (the
/// embedded store's memory stays bounded).
#[tokio::test]
async fn embedded_charged_ids_are_forgotten_after_the_window() {
    let t0 = at("2026-01-01", 0);
    let clock = Arc::new(AtomicU64::new(t0));
    let reader = Arc::clone(&clock);
    let store = EmbeddedGatewayStore::in_memory()
        .with_clock(Arc::new(move || reader.load(Ordering::SeqCst)));
    let window = CHARGE_DEDUP_WINDOW.as_millis() as u64;
    let record_at = |ms: u64, id: &str| {
        clock.store(t0 + ms, Ordering::SeqCst);
        let entry = entry(id, "key_1", "acct-a", "kiro", t0 + ms);
        let store = &store;
        async move { store.record_usage(&entry).await.unwrap() }
    };
    record_at(0, "r1").await;
    record_at(window - 1, "r1").await;
    assert_eq!(store.spent("key_1").await.unwrap().requests, 1);
    record_at(window, "r1").await;
    assert_eq!(store.spent("key_1").await.unwrap().requests, 2);
}

/// The embedded store remembers at most its bound of charged ids, however many requests are
/// charged within the window: past it the oldest is forgotten first, so a retry of a charge
/// that many newer charges have pushed out counts again (the documented behaviour at the
/// bound), while a retry of one still remembered counts once.
#[tokio::test]
async fn embedded_charged_ids_never_exceed_the_bound() {
    let bound = EmbeddedGatewayStore::CHARGE_MEMORY;
    let t0 = at("2026-01-01", 0);
    let clock = Arc::new(AtomicU64::new(t0));
    let reader = Arc::clone(&clock);
    let store = EmbeddedGatewayStore::in_memory()
        .with_clock(Arc::new(move || reader.load(Ordering::SeqCst)));
    let total = bound + bound / 2;
    let mut most = 0;
    for i in 0..total {
        // One charge a millisecond: all within the window.
        clock.store(t0 + i as u64, Ordering::SeqCst);
        store
            .record_usage(&entry(&format!("r{i}"), "key_1", "acct-a", "kiro", t0))
            .await
            .unwrap();
        most = most.max(store.charged_ids());
    }
    assert!((total as u64) < CHARGE_DEDUP_WINDOW.as_millis() as u64);
    assert_eq!(most, bound, "never more than the bound, and it is reached");
    assert_eq!(store.charged_ids(), bound);
    let charged = store.spent("key_1").await.unwrap().requests;
    assert_eq!(charged, total as u64);
    // The newest `bound` ids are remembered: their retries charge nothing.
    for i in [total - bound, total - 1] {
        store
            .record_usage(&entry(&format!("r{i}"), "key_1", "acct-a", "kiro", t0))
            .await
            .unwrap();
    }
    assert_eq!(store.spent("key_1").await.unwrap().requests, charged);
    // An older one was forgotten early: its retry is charged again.
    store
        .record_usage(&entry("r0", "key_1", "acct-a", "kiro", t0))
        .await
        .unwrap();
    assert_eq!(store.spent("key_1").await.unwrap().requests, charged + 1);
    assert_eq!(store.charged_ids(), bound);
    // Once the window has passed, one more charge forgets them all.
    clock.store(
        t0 + total as u64 + CHARGE_DEDUP_WINDOW.as_millis() as u64,
        Ordering::SeqCst,
    );
    store
        .record_usage(&entry("late", "key_1", "acct-a", "kiro", t0))
        .await
        .unwrap();
    assert_eq!(store.charged_ids(), 1);
}

/// The bound to the id, on a small one: the oldest goes first, one at a time.
#[tokio::test]
async fn embedded_charge_memory_forgets_the_oldest_first() {
    let store = EmbeddedGatewayStore::in_memory().with_charge_memory(3);
    let now = wall_ms();
    let record = |id: &str| {
        let entry = entry(id, "key_1", "acct-a", "kiro", now);
        let store = &store;
        async move { store.record_usage(&entry).await.unwrap() }
    };
    for id in ["r1", "r2", "r3", "r4"] {
        record(id).await;
    }
    assert_eq!(store.charged_ids(), 3);
    // r2..r4 are remembered; r1 was pushed out.
    for id in ["r2", "r3", "r4"] {
        record(id).await;
    }
    assert_eq!(store.spent("key_1").await.unwrap().requests, 4);
    record("r1").await;
    assert_eq!(store.spent("key_1").await.unwrap().requests, 5);
    // Remembering r1 again pushed out r2, the oldest.
    record("r3").await;
    record("r2").await;
    assert_eq!(store.spent("key_1").await.unwrap().requests, 6);
    assert_eq!(store.charged_ids(), 3);
    // A lower bound takes effect at once.
    let store = store.with_charge_memory(1);
    assert_eq!(store.charged_ids(), 1);
}

/// The embedded window to the millisecond, on a clock the test sets.
#[tokio::test]
async fn embedded_window_arithmetic_on_a_controlled_clock() {
    let t0 = at("2026-01-01", 0);
    let clock = Arc::new(AtomicU64::new(t0));
    let reader = Arc::clone(&clock);
    let store = EmbeddedGatewayStore::in_memory()
        .with_clock(Arc::new(move || reader.load(Ordering::SeqCst)));
    let window = Duration::from_secs(1);
    let hit_at = |ms: u64| {
        clock.store(t0 + ms, Ordering::SeqCst);
        store.hit("key_1", 2, window)
    };
    let first = hit_at(0).await.unwrap();
    assert_eq!(
        (first.allowed, first.remaining, first.reset_at_ms),
        (true, 1, t0 + 1_000)
    );
    assert!(hit_at(400).await.unwrap().allowed);
    let refused = hit_at(600).await.unwrap();
    assert_eq!(
        (refused.allowed, refused.retry_after_ms, refused.reset_at_ms),
        (false, 400, t0 + 1_000)
    );
    assert_eq!(hit_at(999).await.unwrap().retry_after_ms, 1);
    // At t0 + 1000 the first request leaves: one passes, the second is now the oldest.
    let passed = hit_at(1_000).await.unwrap();
    assert_eq!(
        (passed.allowed, passed.remaining, passed.reset_at_ms),
        (true, 0, t0 + 1_400)
    );
    let refused = hit_at(1_001).await.unwrap();
    assert_eq!((refused.allowed, refused.retry_after_ms), (false, 399));
}

/// ValKey keeps one hash per key, indexes, windows, quotas and ledgers under their prefixes,
/// with the TTLs documented in `keys.rs`, and no secret anywhere.
#[tokio::test]
async fn valkey_gateway_key_layout() {
    use fred::prelude::{
        Builder, ClientLike, Config, HashesInterface, KeysInterface, SortedSetsInterface,
    };
    use std::collections::HashMap;
    let server = RedisServer::start();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let raw = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();

    let now = wall_ms();
    let key = ApiKeyRecord {
        limits: KeyLimits {
            rpm: Some(30),
            quota: Some(credits(10.0)),
            models: Vec::new(),
        },
        ..record("key_0123456789abcdef", now)
    };
    store.create_key(&key).await.unwrap();
    store.touch_key(&key.id, now + 1).await.unwrap();
    store.hit(&key.id, 30, MINUTE).await.unwrap();
    let quota = key.limits.quota.clone().unwrap();
    store
        .reserve(&key.id, "req-1", &quota, 1.0, MINUTE)
        .await
        .unwrap();
    store
        .reserve(&key.id, "req-2", &quota, 2.0, MINUTE)
        .await
        .unwrap();
    let mut used = entry("req-1", &key.id, "acct-a", "kiro", now);
    used.tokens_estimated = true;
    store.record_usage(&used).await.unwrap();

    let fields: HashMap<String, String> = raw.hgetall("apikey:key_0123456789abcdef").await.unwrap();
    assert_eq!(fields["hash"], key.hash);
    assert_eq!(fields["prefix"], key.prefix);
    assert_eq!(fields["created_at_ms"], now.to_string());
    assert_eq!(fields["last_used_at_ms"], (now + 1).to_string());
    assert_eq!(
        serde_json::from_str::<KeyLimits>(&fields["limits"]).unwrap(),
        key.limits
    );
    assert!(!fields.contains_key("revoked_at_ms"));
    let ids: Vec<(String, f64)> = raw
        .zrange("apikeys", 0, -1, None, false, None, true)
        .await
        .unwrap();
    assert_eq!(ids, vec![(key.id.clone(), now as f64)]);
    let by_hash: Option<String> = raw.hget("apikeys:hash", &key.hash).await.unwrap();
    assert_eq!(by_hash.as_deref(), Some(key.id.as_str()));

    let counted: u64 = raw.zcard("ratelimit:key_0123456789abcdef").await.unwrap();
    assert_eq!(counted, 1);
    // A refused request is not counted.
    assert!(store.hit("full", 1, MINUTE).await.unwrap().allowed);
    for _ in 0..3 {
        assert!(!store.hit("full", 1, MINUTE).await.unwrap().allowed);
    }
    let counted: u64 = raw.zcard("ratelimit:full").await.unwrap();
    assert_eq!(counted, 1);
    let pttl: i64 = raw.pttl("ratelimit:key_0123456789abcdef").await.unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");

    let spent: HashMap<String, String> = raw.hgetall("quota:key_0123456789abcdef").await.unwrap();
    assert_eq!(spent["tokens"], "30");
    assert_eq!(spent["requests"], "1");
    assert_eq!(spent["credits"].parse::<f64>().unwrap(), 0.5);
    let reserved: HashMap<String, String> = raw
        .hgetall("quota:key_0123456789abcdef:reserved")
        .await
        .unwrap();
    assert_eq!(
        reserved.keys().collect::<Vec<_>>(),
        ["req-2"],
        "req-1 was recorded"
    );
    let (expires, amount) = reserved["req-2"].split_once(':').unwrap();
    assert!(expires.parse::<u64>().unwrap() > now);
    assert_eq!(amount, "2");
    let pttl: i64 = raw
        .pttl("quota:key_0123456789abcdef:reserved")
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");

    let day = format!("usage:{}", drawbridge_core::day::utc_day(now));
    let ledger: HashMap<String, String> = raw.hgetall(&day).await.unwrap();
    let identity = r#"["key_0123456789abcdef","acct-a","kiro"]"#;
    assert_eq!(ledger[&format!("requests:{identity}")], "1");
    assert_eq!(ledger[&format!("prompt_tokens:{identity}")], "10");
    assert_eq!(ledger[&format!("completion_tokens:{identity}")], "20");
    assert_eq!(ledger[&format!("estimated_requests:{identity}")], "1");
    let ttl: i64 = raw.ttl(&day).await.unwrap();
    let retention = 400 * 86_400;
    assert!(ttl > retention - 60 && ttl <= retention, "{ttl}");
    // The charged request is remembered in the one charged set, scored by when, and the set
    // goes once the dedup window has passed without a charge.
    let charged: Vec<(String, f64)> = raw
        .zrange("charged", 0, -1, None, false, None, true)
        .await
        .unwrap();
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert_eq!(charged[0].0, used.request_id);
    assert!(
        (charged[0].1 as u64).abs_diff(now) <= CLOCK_SLACK_MS,
        "{charged:?}"
    );
    let pttl: i64 = raw.pttl("charged").await.unwrap();
    let window = CHARGE_DEDUP_WINDOW.as_millis() as i64;
    assert!(pttl > window - 60_000 && pttl <= window, "charged: {pttl}");

    // No stored value, anywhere, holds the secret.
    let secret = secret("key_0123456789abcdef");
    let names: Vec<String> = raw.custom(fred::cmd!("KEYS"), vec!["*"]).await.unwrap();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let kind: String = raw
            .custom(fred::cmd!("TYPE"), vec![name.clone()])
            .await
            .unwrap();
        let dump: Vec<String> = match kind.as_str() {
            "hash" => {
                let map: HashMap<String, String> = raw.hgetall(&name).await.unwrap();
                map.into_iter().flat_map(|(k, v)| [k, v]).collect()
            }
            "zset" => raw
                .zrange(&name, 0, -1, None, false, None, false)
                .await
                .unwrap(),
            "string" => vec![raw.get::<String, _>(&name).await.unwrap()],
            other => panic!("unexpected {other} at {name}"),
        };
        assert!(!name.contains(&secret));
        for value in dump {
            assert!(!value.contains(&secret), "{name} holds the secret");
        }
    }
    store.close().await;
}

/// The names of ValKey's keys matching `pattern`.
async fn key_names(raw: &fred::clients::Client, pattern: &str) -> Vec<String> {
    use fred::prelude::ClientLike;
    raw.custom(fred::cmd!("KEYS"), vec![pattern]).await.unwrap()
}

/// Serving requests adds no ValKey keys: 10,000 charges of one key, model and account on two
/// nodes leave as many keys as one charge did (one charged set, under the bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_key_count_does_not_grow_with_charges() {
    use fred::prelude::{Builder, ClientLike, Config, SortedSetsInterface};
    let server = RedisServer::start();
    let a = Arc::new(ValkeyRegistry::connect(&server.url()).await.unwrap());
    let b = Arc::new(ValkeyRegistry::connect(&server.url()).await.unwrap());
    let n = Nodes {
        a: Arc::clone(&a) as Arc<dyn Stores>,
        b: Arc::clone(&b) as Arc<dyn Stores>,
        time: Time::Real,
    };
    let raw = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();

    charge_many(&n, "first", "key_1", 1).await;
    let before = key_names(&raw, "*").await;
    assert_eq!(key_names(&raw, "charged*").await, ["charged"]);
    charge_many(&n, "many", "key_1", 10_000).await;
    assert_eq!(n.a.spent("key_1").await.unwrap().requests, 10_001);
    let mut after = key_names(&raw, "*").await;
    after.sort();
    let mut expected = before.clone();
    expected.sort();
    assert_eq!(after, expected, "no key was added by 10,000 charges");
    assert_eq!(key_names(&raw, "charged*").await, ["charged"]);
    let remembered: u64 = raw.zcard("charged").await.unwrap();
    assert_eq!(remembered, 10_001);
    a.close().await;
    b.close().await;
}

/// ValKey's charged set at its bound: it stays at the bound, the oldest id goes first (its
/// retry counts again), the newer ones are still recognised: as the embedded store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_charged_set_keeps_the_bound_oldest_first() {
    use fred::prelude::{Builder, ClientLike, Config, SortedSetsInterface};
    let bound = EmbeddedGatewayStore::CHARGE_MEMORY;
    let server = RedisServer::start();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let raw = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();
    let record = |id: &str| {
        let entry = entry(id, "key_1", "acct-a", "kiro", wall_ms());
        let store = &store;
        async move { store.record_usage(&entry).await.unwrap() }
    };
    record("oldest").await;
    // Fill the set to the bound with ids charged a little later (what other requests would
    // leave), without the time 100,000 charges take.
    let later = (wall_ms() + 1_000) as f64;
    let filler: Vec<(f64, String)> = (1..bound).map(|i| (later, format!("f{i:06}"))).collect();
    for chunk in filler.chunks(10_000) {
        let _: i64 = raw
            .zadd("charged", None, None, false, false, chunk.to_vec())
            .await
            .unwrap();
    }
    let remembered: usize = raw.zcard("charged").await.unwrap();
    assert_eq!(remembered, bound);

    record("newest").await;
    let remembered: usize = raw.zcard("charged").await.unwrap();
    assert_eq!(remembered, bound, "the set stays at the bound");
    let oldest: Option<f64> = raw.zscore("charged", "oldest").await.unwrap();
    assert_eq!(oldest, None, "the oldest id went first");
    // The newest is recognised; the oldest, forgotten early, is charged again.
    record("newest").await;
    assert_eq!(store.spent("key_1").await.unwrap().requests, 2);
    record("oldest").await;
    assert_eq!(store.spent("key_1").await.unwrap().requests, 3);
    let remembered: usize = raw.zcard("charged").await.unwrap();
    assert_eq!(remembered, bound);
    store.close().await;
}

/// One process writes a key's last use at most once a second; another process has its own.
#[tokio::test]
async fn valkey_touch_is_written_at_most_once_a_second_per_process() {
    let server = RedisServer::start();
    let a = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let b = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let t = wall_ms();
    a.create_key(&record("key_1", t)).await.unwrap();
    let last_used = || async { b.key("key_1").await.unwrap().unwrap().last_used_at_ms };
    a.touch_key("key_1", t).await.unwrap();
    assert_eq!(last_used().await, Some(t));
    a.touch_key("key_1", t + 500).await.unwrap();
    assert_eq!(
        last_used().await,
        Some(t),
        "within a second of the last write"
    );
    b.touch_key("key_1", t + 600).await.unwrap();
    assert_eq!(last_used().await, Some(t + 600), "another process writes");
    a.touch_key("key_1", t + 1_000).await.unwrap();
    assert_eq!(last_used().await, Some(t + 1_000));
    a.close().await;
    b.close().await;
}

async fn open(path: &Path, scope: &Shutdown) -> EmbeddedGatewayStore {
    EmbeddedGatewayStore::open(path, scope).await.unwrap()
}

/// Keys (with their last use) and usage are in the data file after a restart; reservations
/// and windows are not.
#[tokio::test]
async fn embedded_keys_and_usage_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Parent directories are made.
    let path = dir.path().join("state").join("gateway.redb");
    let now = wall_ms();
    let scope = Shutdown::new();
    let store = open(&path, &scope).await;
    store.create_key(&record("key_1", now)).await.unwrap();
    store.create_key(&record("key_2", now + 1)).await.unwrap();
    let limits = KeyLimits {
        rpm: Some(7),
        quota: Some(credits(5.0)),
        models: vec!["kiro".into()],
    };
    store
        .update_key("key_1", &limits, Some(now + 60_000))
        .await
        .unwrap();
    store.revoke_key("key_2", now + 2).await.unwrap();
    store.touch_key("key_1", now + 3).await.unwrap();
    let quota = credits(5.0);
    assert!(
        store
            .reserve("key_1", "r1", &quota, 4.0, MINUTE)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        store
            .reserve("key_1", "r2", &quota, 1.0, MINUTE)
            .await
            .unwrap()
            .allowed
    );
    store
        .record_usage(&entry("r1", "key_1", "acct-a", "kiro", now))
        .await
        .unwrap();
    store
        .record_usage(&entry("r3", "key_2", "acct-b", "kiro", now))
        .await
        .unwrap();
    assert!(store.hit("key_1", 1, MINUTE).await.unwrap().allowed);
    assert!(!store.hit("key_1", 1, MINUTE).await.unwrap().allowed);
    let keys = store.keys().await.unwrap();
    let all_days = UsageFilter::default();
    let rows = store.usage(&all_days).await.unwrap();
    let spent = store.spent("key_1").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].last_used_at_ms, Some(now + 3));
    assert_eq!(rows.len(), 2);
    store.close().await.unwrap();
    assert!(scope.drain(PATIENCE).await);
    drop(store);

    let scope = Shutdown::new();
    let reopened = open(&path, &scope).await;
    assert_eq!(reopened.keys().await.unwrap(), keys);
    assert_eq!(
        reopened.key_by_hash(&keys[1].hash).await.unwrap(),
        Some(keys[1].clone())
    );
    assert_eq!(reopened.usage(&all_days).await.unwrap(), rows);
    assert_eq!(reopened.spent("key_1").await.unwrap(), spent);
    // r2's reservation was in memory only: a new request is alone again.
    let decision = reopened
        .reserve("key_1", "r4", &quota, 4.0, MINUTE)
        .await
        .unwrap();
    assert_eq!((decision.in_flight, decision.reserved), (0, 0.0));
    // The window, too, started over.
    let hit = reopened.hit("key_1", 1, MINUTE).await.unwrap();
    assert!(hit.allowed);
    // And the reopened file takes new writes.
    reopened
        .record_usage(&entry("r4", "key_1", "acct-a", "kiro", now))
        .await
        .unwrap();
    reopened.close().await.unwrap();
    drop(reopened);
    let scope = Shutdown::new();
    let third = open(&path, &scope).await;
    assert_eq!(third.spent("key_1").await.unwrap().requests, 2);
    third.close().await.unwrap();
}

/// A data file is one process's: a second open is refused with an error naming the file, and
/// succeeds once the first has closed it.
#[tokio::test]
async fn embedded_a_second_open_of_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let scope = Shutdown::new();
    let first = open(&path, &scope).await;
    let second = EmbeddedGatewayStore::open(&path, &scope).await;
    match second {
        Err(StateError::Config(message)) => {
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("already open"), "{message}");
        }
        other => panic!("a second open must fail: {other:?}"),
    }
    first.close().await.unwrap();
    let second = open(&path, &scope).await;
    second.close().await.unwrap();
    assert!(scope.drain(PATIENCE).await);
}

/// Usage is written behind without a close: the file changes within the flush interval.
#[tokio::test]
async fn embedded_usage_is_written_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let scope = Shutdown::new();
    let store = open(&path, &scope).await;
    let modified = || std::fs::metadata(&path).unwrap().modified().unwrap();
    let before = modified();
    store
        .record_usage(&entry("r1", "key_1", "acct-a", "kiro", wall_ms()))
        .await
        .unwrap();
    eventually("the usage reaches the file", || async {
        (modified() != before).then_some(())
    })
    .await;
    store.close().await.unwrap();
}

/// A ledger day is dropped, in memory and in the file, once it was last written
/// `USAGE_RETENTION_DAYS` ago (as ValKey expires a day's hash); younger days stay.
#[tokio::test]
async fn embedded_ledger_days_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let scope = Shutdown::new();
    let t0 = at("2026-01-01", 0);
    let clock = Arc::new(AtomicU64::new(t0));
    let reader = Arc::clone(&clock);
    let store = open(&path, &scope)
        .await
        .with_clock(Arc::new(move || reader.load(Ordering::SeqCst)));
    let record_at = |ms: u64, id: &str| {
        clock.store(ms, Ordering::SeqCst);
        let entry = entry(id, "key_1", "acct-a", "kiro", ms);
        let store = &store;
        async move { store.record_usage(&entry).await.unwrap() }
    };
    let day = drawbridge_core::day::DAY_MS;
    let retention = USAGE_RETENTION_DAYS as u64 * day;
    record_at(t0, "r1").await;
    record_at(t0 + 10 * day, "r2").await;
    let january = UsageFilter {
        from_day: Some("2026-01-01".into()),
        to_day: Some("2026-01-11".into()),
        ..UsageFilter::default()
    };
    let days = |rows: Vec<UsageRow>| rows.into_iter().map(|r| r.day).collect::<Vec<_>>();
    // A millisecond before the first day's retention ends, both days are there.
    record_at(t0 + retention - 1, "r3").await;
    assert_eq!(
        days(store.usage(&january).await.unwrap()),
        ["2026-01-01", "2026-01-11"]
    );
    // An hour later (the ledger is checked at most hourly), the first day is gone.
    record_at(t0 + retention + 3_600_000, "r4").await;
    assert_eq!(days(store.usage(&january).await.unwrap()), ["2026-01-11"]);
    // From the file too.
    store.close().await.unwrap();
    let reopened = open(&path, &scope).await;
    assert_eq!(
        days(reopened.usage(&january).await.unwrap()),
        ["2026-01-11"]
    );
    reopened.close().await.unwrap();
}

/// Dropping the store (no close) after shutdown began still writes what waits, and lets the
/// writer task end, so a drain completes; what was recorded during the drain is kept.
#[tokio::test]
async fn embedded_shutdown_and_drop_keep_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let scope = Shutdown::new();
    let store = Arc::new(open(&path, &scope).await);
    store
        .record_usage(&entry("r1", "key_1", "acct-a", "kiro", wall_ms()))
        .await
        .unwrap();
    scope.cancel();
    // A request still in flight ends during the drain.
    store
        .record_usage(&entry("r2", "key_1", "acct-a", "kiro", wall_ms()))
        .await
        .unwrap();
    drop(store);
    assert!(
        scope.drain(PATIENCE).await,
        "the writer ends once the store is gone"
    );

    let scope = Shutdown::new();
    let reopened = open(&path, &scope).await;
    assert_eq!(reopened.spent("key_1").await.unwrap().requests, 2);
    reopened.close().await.unwrap();
}

/// After close, reads still answer from memory; changes fail instead of being lost.
#[tokio::test]
async fn embedded_changes_after_close_fail() {
    let dir = tempfile::tempdir().unwrap();
    let scope = Shutdown::new();
    let store = open(&dir.path().join("gateway.redb"), &scope).await;
    let now = wall_ms();
    store.create_key(&record("key_1", now)).await.unwrap();
    store.top_up("acct-a", 10).await.unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    assert!(store.key("key_1").await.unwrap().is_some());
    let refused = store.create_key(&record("key_2", now)).await;
    assert!(
        matches!(refused, Err(StateError::Unavailable(_))),
        "{refused:?}"
    );
    let refused = store.revoke_key("key_1", now).await;
    assert!(
        matches!(refused, Err(StateError::Unavailable(_))),
        "{refused:?}"
    );
    let refused = store
        .record_usage(&entry("r1", "key_1", "acct-a", "kiro", now))
        .await;
    assert!(
        matches!(refused, Err(StateError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(store.spent("key_1").await.unwrap(), Spent::default());
    // The credits, too: every change is refused, and the balance is what was written.
    let grants = [("acct-a".to_owned(), Some(5))];
    for refused in [
        store.charge("acct-a", 1).await.map(|_| ()),
        store.top_up("acct-a", 1).await.map(|_| ()),
        store.set_balance("acct-a", Some(1)).await,
        store.apply_grants(&grants).await.map(|_| ()),
    ] {
        assert!(
            matches!(refused, Err(StateError::Unavailable(_))),
            "{refused:?}"
        );
    }
    let account = ["acct-a".to_owned()];
    assert_eq!(store.balances(&account).await.unwrap(), [Some(10)]);
    assert!(scope.drain(PATIENCE).await);
}

/// Keep making one change until the store refuses it as closed: how many were acknowledged.
async fn change_until_closed<F, Fut>(mut change: F) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), StateError>>,
{
    let mut acknowledged = 0;
    loop {
        match change(acknowledged).await {
            Ok(()) => acknowledged += 1,
            Err(StateError::Unavailable(_)) => return acknowledged,
            Err(other) => panic!("a change failed otherwise: {other:?}"),
        }
        tokio::task::yield_now().await;
    }
}

/// Changes racing a close are kept or refused, never acknowledged and then lost: usage and
/// credits keep changing while the store closes, and the reopened file holds exactly what was
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_changes_racing_a_close_are_kept_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let scope = Shutdown::new();
    let store = Arc::new(open(&path, &scope).await);
    let account = vec!["acct-a".to_owned()];
    let usage = scope.spawn({
        let store = Arc::clone(&store);
        change_until_closed(move |i| {
            let store = Arc::clone(&store);
            async move {
                let entry = entry(&format!("r{i}"), "key_1", "acct-a", "kiro", wall_ms());
                store.record_usage(&entry).await
            }
        })
    });
    let credits = scope.spawn({
        let store = Arc::clone(&store);
        change_until_closed(move |_| {
            let store = Arc::clone(&store);
            async move { store.top_up("acct-a", 1).await.map(|_| ()) }
        })
    });
    eventually("both changes are under way", || async {
        let recorded = store.spent("key_1").await.unwrap().requests > 0;
        let topped_up = store.balances(&account).await.unwrap()[0].is_some();
        (recorded && topped_up).then_some(())
    })
    .await;
    store.close().await.unwrap();
    let recorded = usage.await.unwrap();
    let topped_up = credits.await.unwrap();
    assert_eq!(store.spent("key_1").await.unwrap().requests, recorded);
    let balance = |n: u64| vec![Some(i64::try_from(n).unwrap())];
    assert_eq!(store.balances(&account).await.unwrap(), balance(topped_up));
    drop(store);
    assert!(scope.drain(PATIENCE).await);

    let scope = Shutdown::new();
    let reopened = open(&path, &scope).await;
    assert_eq!(
        reopened.spent("key_1").await.unwrap().requests,
        recorded,
        "every acknowledged usage is in the file"
    );
    assert_eq!(
        reopened.balances(&account).await.unwrap(),
        balance(topped_up),
        "every acknowledged top-up is in the file"
    );
    reopened.close().await.unwrap();
}
