//! The shared state on ValKey (or any Redis-compatible server) through fred: the registry here,
//! the controller's lease and accounts in `control.rs`, the gateway's stores in `gateway.rs`;
//! shared by every node.
//! Writes that touch several keys are Lua scripts (one round trip, atomic, stamped with the
//! server's `TIME`); pub/sub runs on a second connection opened on the first `subscribe`.

mod control;
mod credits;
mod gateway;
mod keys;
mod responses;
mod routing;

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientLike, Config, ErrorKind, EventInterface, FromValue, PubsubInterface,
    ReconnectPolicy,
};
use fred::types::scripts::Script;
use fred::types::{ConnectHandle, CustomCommand, Message};
use futures::StreamExt;
use tokio::sync::OnceCell;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::clock::millis;
use crate::error::StateError;
use crate::registry::{
    EventKind, PodRecord, Registry, StateFuture, TopologyEvent, TopologyStream, validate_heartbeat,
};

/// How many pub/sub messages a slow subscriber may fall behind before it gets a
/// [`TopologyEvent::Resync`] instead.
const EVENT_BUFFER: usize = 1024;

/// Timeouts and backoff of the connections to ValKey.
#[derive(Clone, Debug)]
pub struct ValkeyOptions {
    /// How long one operation may wait for the server (including while it is reconnecting)
    /// before it fails with [`StateError::Unavailable`].
    pub command_timeout: Duration,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
    /// The longest wait between reconnection attempts; they start at 100 ms and double.
    pub max_reconnect_delay: Duration,
}

impl Default for ValkeyOptions {
    fn default() -> Self {
        ValkeyOptions {
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(2),
        }
    }
}

/// The registry every node shares, on ValKey. Cheap to share behind an `Arc`; call
/// [`ValkeyRegistry::close`] at the end of the drain to close its connections.
pub struct ValkeyRegistry {
    client: Client,
    /// To open the subscriber connection with the same settings.
    builder: Builder,
    subscriber: OnceCell<Client>,
    options: ValkeyOptions,
    /// The server's address for messages, without credentials.
    target: String,
    scripts: Scripts,
    /// fred's connection tasks, awaited by `close`.
    connections: Mutex<Vec<ConnectHandle>>,
    /// The API keys' last uses this process wrote (see `gateway.rs`).
    touched: gateway::TouchThrottle,
}

struct Scripts {
    heartbeat: Script,
    deregister: Script,
    members: Script,
}

impl std::fmt::Debug for ValkeyRegistry {
    // By hand: fred's `Config` holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyRegistry")
            .field("target", &self.target)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ValkeyRegistry {
    /// Connect to `url` (`redis://[user:password@]host:port[/db]`, `valkey://…`) with the
    /// default options. Fails with [`StateError::Unavailable`] if the server cannot be reached
    /// within the connect timeout; once connected, the client reconnects on its own with
    /// exponential backoff.
    pub async fn connect(url: &str) -> Result<ValkeyRegistry, StateError> {
        Self::connect_with(url, ValkeyOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        options: ValkeyOptions,
    ) -> Result<ValkeyRegistry, StateError> {
        let target = redact_url(url);
        let config = Config::from_url(url).map_err(|error| {
            StateError::Config(format!("redis.url {target}: {}", error.details()))
        })?;
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(
                0, // attempts: unbounded
                100,
                u32::try_from(millis(options.max_reconnect_delay)).unwrap_or(u32::MAX),
                2,
            ))
            .with_connection_config(|connection| {
                connection.connection_timeout = options.connect_timeout;
                connection.internal_command_timeout = options.command_timeout;
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = options.command_timeout;
                performance.broadcast_channel_capacity = EVENT_BUFFER;
            });
        let client = builder
            .build()
            .map_err(|error| classify("configure", &target, &error))?;
        let registry = ValkeyRegistry {
            client,
            builder,
            subscriber: OnceCell::new(),
            options,
            target,
            scripts: Scripts {
                heartbeat: Script::from_lua(include_str!("heartbeat.lua")),
                deregister: Script::from_lua(include_str!("deregister.lua")),
                members: Script::from_lua(include_str!("members.lua")),
            },
            connections: Mutex::new(Vec::new()),
            touched: gateway::TouchThrottle::default(),
        };
        registry.start(&registry.client).await?;
        tracing::info!(store = %registry.target, "connected to the state store");
        if registry.persists().await == Some(false) {
            tracing::warn!(
                store = %registry.target,
                "the state store keeps no data across a restart (no AOF, no RDB save points): \
                 API keys, usage, credits and assignments are lost when it restarts; turn \
                 persistence on (e.g. appendonly yes, as the compose file runs it)"
            );
        }
        Ok(registry)
    }

    /// Whether the server keeps its data across a restart (AOF on, or RDB save points set);
    /// `None` when it does not say (`CONFIG` refused, as some managed services do).
    pub async fn persists(&self) -> Option<bool> {
        let get = |name: &'static str| async move {
            let reply: Result<Vec<String>, _> = tokio::time::timeout(
                self.options.command_timeout,
                self.client.custom(
                    CustomCommand::new_static("CONFIG", None::<u16>, false),
                    vec!["GET", name],
                ),
            )
            .await
            .ok()?;
            reply.ok()?.get(1).cloned()
        };
        let aof = get("appendonly").await?;
        let save = get("save").await?;
        Some(aof.eq_ignore_ascii_case("yes") || !save.trim().is_empty())
    }

    /// The server's address, without credentials: what to put in a log line.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Close the connections (after the last use: a closed registry answers nothing). Bounded
    /// by the command timeout per connection.
    pub async fn close(&self) {
        let limit = self.options.command_timeout;
        if let Some(subscriber) = self.subscriber.get() {
            let _ = tokio::time::timeout(limit, subscriber.quit()).await;
        }
        let _ = tokio::time::timeout(limit, self.client.quit()).await;
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for connection in connections {
            if tokio::time::timeout(limit, connection).await.is_err() {
                tracing::debug!(store = %self.target, "a state store connection outlived close");
            }
        }
    }

    /// Open `client`'s first connection, bounded.
    async fn start(&self, client: &Client) -> Result<(), StateError> {
        let limit = self.options.connect_timeout + self.options.command_timeout;
        match tokio::time::timeout(limit, client.init()).await {
            Ok(Ok(connection)) => {
                self.connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(connection);
                Ok(())
            }
            Ok(Err(error)) => Err(classify("connect", &self.target, &error)),
            Err(_) => Err(StateError::Unavailable(format!(
                "connect to {}: no connection within {limit:?}",
                self.target
            ))),
        }
    }

    /// Run one operation against the server, bounded by the command timeout.
    async fn bounded<T>(
        &self,
        op: &str,
        operation: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, StateError> {
        let limit = self.options.command_timeout;
        match tokio::time::timeout(limit, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(op, &self.target, &error)),
            Err(_) => Err(StateError::Unavailable(format!(
                "{op} on {}: no answer within {limit:?}",
                self.target
            ))),
        }
    }

    async fn run<R: FromValue>(
        &self,
        op: &str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, StateError> {
        self.bounded(op, script.evalsha_with_reload(&self.client, keys, args))
            .await
    }

    /// The live records of the pods in the index set `set`, pruning expired ids from it.
    async fn members(&self, op: &str, set: String) -> Result<Vec<PodRecord>, StateError> {
        let stored: Vec<String> = self
            .run(
                op,
                &self.scripts.members,
                vec![set],
                vec![keys::POD_PREFIX.to_owned()],
            )
            .await?;
        let mut records: Vec<PodRecord> = stored
            .iter()
            .filter_map(|text| match serde_json::from_str(text) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(store = %self.target, %error, "skipping an unreadable record");
                    None
                }
            })
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// The pub/sub connection, opened and subscribed on first use.
    async fn subscriber(&self) -> Result<&Client, StateError> {
        self.subscriber
            .get_or_try_init(|| async {
                let subscriber = self
                    .builder
                    .build()
                    .map_err(|error| classify("subscribe", &self.target, &error))?;
                self.start(&subscriber).await?;
                let subscribed = self
                    .bounded("subscribe", subscriber.subscribe(keys::TOPOLOGY_CHANNEL))
                    .await;
                if let Err(error) = subscribed {
                    let _ =
                        tokio::time::timeout(self.options.command_timeout, subscriber.quit()).await;
                    return Err(error);
                }
                Ok(subscriber)
            })
            .await
    }
}

impl Registry for ValkeyRegistry {
    fn heartbeat<'a>(&'a self, pod: &'a PodRecord, ttl: Duration) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate_heartbeat(pod, ttl)?;
            let body = record_without_stamp(pod)?;
            let mut script_keys = vec![keys::pod(&pod.id), keys::PODS.to_owned()];
            script_keys.extend(pod.models.iter().map(|m| keys::model_pods(m)));
            let mut args = vec![
                body,
                millis(ttl).to_string(),
                pod.id.clone(),
                keys::TOPOLOGY_CHANNEL.to_owned(),
                TopologyEvent::to_json(EventKind::Join, &pod.id),
                TopologyEvent::to_json(EventKind::Drain, &pod.id),
                TopologyEvent::to_json(EventKind::Update, &pod.id),
                keys::MODEL_PREFIX.to_owned(),
                keys::MODEL_SUFFIX.to_owned(),
            ];
            args.extend(pod.models.iter().cloned());
            let published: String = self
                .run("heartbeat", &self.scripts.heartbeat, script_keys, args)
                .await?;
            if !published.is_empty() {
                tracing::debug!(pod_id = %pod.id, event = %published, "topology event published");
            }
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, pod_id: &'a str) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let removed: i64 = self
                .run(
                    "deregister",
                    &self.scripts.deregister,
                    vec![keys::pod(pod_id), keys::PODS.to_owned()],
                    vec![
                        pod_id.to_owned(),
                        keys::TOPOLOGY_CHANNEL.to_owned(),
                        TopologyEvent::to_json(EventKind::Leave, pod_id),
                        keys::MODEL_PREFIX.to_owned(),
                        keys::MODEL_SUFFIX.to_owned(),
                    ],
                )
                .await?;
            tracing::debug!(%pod_id, removed = removed == 1, "pod deregistered");
            Ok(())
        })
    }

    fn pods(&self) -> StateFuture<'_, Vec<PodRecord>> {
        Box::pin(self.members("pods", keys::PODS.to_owned()))
    }

    fn pods_for_model<'a>(&'a self, model: &'a str) -> StateFuture<'a, Vec<PodRecord>> {
        Box::pin(async move {
            let mut records = self
                .members("pods_for_model", keys::model_pods(model))
                .await?;
            // The set is kept in line by the heartbeat script; the record has the last word.
            records.retain(|record| record.models.iter().any(|m| m == model));
            Ok(records)
        })
    }

    fn subscribe(&self) -> StateFuture<'_, TopologyStream> {
        Box::pin(async move {
            let subscriber = self.subscriber().await?;
            let subscription = Subscription {
                messages: subscriber.message_rx(),
                reconnects: subscriber.reconnect_rx(),
                client: subscriber.clone(),
                target: self.target.clone(),
            };
            Ok(futures::stream::unfold(subscription, Subscription::next).boxed())
        })
    }
}

/// One subscriber's view of the shared pub/sub connection.
struct Subscription {
    messages: Receiver<Message>,
    reconnects: Receiver<fred::types::config::Server>,
    client: Client,
    target: String,
}

impl Subscription {
    async fn next(mut self) -> Option<(TopologyEvent, Subscription)> {
        loop {
            let event = tokio::select! {
                biased;
                reconnect = self.reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => Some(self.resubscribe().await),
                    Err(RecvError::Closed) => return None,
                },
                message = self.messages.recv() => match message {
                    Ok(message) => self.event(&message),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "topology subscriber lagged; resynchronising");
                        Some(TopologyEvent::Resync)
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            if let Some(event) = event {
                return Some((event, self));
            }
        }
    }

    /// After a reconnect: the server forgot the subscription with the connection, and what was
    /// published meanwhile is lost. Subscribe again, then say so.
    async fn resubscribe(&self) -> TopologyEvent {
        if let Err(error) = self.client.subscribe(keys::TOPOLOGY_CHANNEL).await {
            tracing::warn!(
                store = %self.target,
                %error,
                "could not resubscribe to topology events after a reconnect"
            );
        }
        TopologyEvent::Resync
    }

    fn event(&self, message: &Message) -> Option<TopologyEvent> {
        if message.channel != keys::TOPOLOGY_CHANNEL {
            return None;
        }
        let event = message
            .value
            .as_str()
            .and_then(|text| TopologyEvent::from_json(&text));
        if event.is_none() {
            tracing::warn!(store = %self.target, "ignoring an unreadable topology event");
        }
        event
    }
}

/// The record as JSON without `updated_at_ms`, which the heartbeat script appends from the
/// server's clock.
fn record_without_stamp(pod: &PodRecord) -> Result<String, StateError> {
    let invalid = |error: serde_json::Error| {
        StateError::Invalid(format!("pod {} does not serialize: {error}", pod.id))
    };
    let mut value = serde_json::to_value(pod).map_err(invalid)?;
    if let Some(object) = value.as_object_mut() {
        object.remove("updated_at_ms");
    }
    // Never `{}`: the record always has its id, so the script can splice before the `}`.
    serde_json::to_string(&value).map_err(invalid)
}

/// Map a fred error to ours. `target` is already redacted; fred's messages carry no credentials.
fn classify(op: &str, target: &str, error: &fred::error::Error) -> StateError {
    let detail = format!("{op} on {target}: {error}");
    match error.kind() {
        ErrorKind::Config | ErrorKind::Url | ErrorKind::Auth => StateError::Config(detail),
        ErrorKind::Parse | ErrorKind::NotFound => StateError::Corrupt(detail),
        ErrorKind::InvalidArgument | ErrorKind::InvalidCommand => StateError::Backend(detail),
        ErrorKind::Unknown if !transient(error.details()) => StateError::Backend(detail),
        _ => StateError::Unavailable(detail),
    }
}

/// Server replies that mean "not now" rather than "no", and fred's own closed-client errors.
fn transient(details: &str) -> bool {
    const BUSY: [&str; 6] = [
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "BUSY",
        "TRYAGAIN",
        "CLUSTERDOWN",
    ];
    BUSY.iter().any(|prefix| details.starts_with(prefix))
        || details.contains("not initialized")
        || details.contains("router")
}

/// `url` without its credentials and query (which may carry a sentinel password), for logs and
/// error messages: `redis://:secret@host:6379/0?x=y` → `redis://***@host:6379/0`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable redis url>".to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***@{}{path}", &authority[at + 1..]),
        None => format!("{scheme}://{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://:s3cret@cache:6379/2"),
            "redis://***@cache:6379/2"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss@cache:6380"),
            "rediss://***@cache:6380"
        );
        assert_eq!(
            redact_url("redis-sentinel://h:26379?sentinelPassword=s3cret"),
            "redis-sentinel://h:26379"
        );
        assert_eq!(redact_url("redis://cache"), "redis://cache");
        assert_eq!(redact_url("s3cret"), "<unparsable redis url>");
    }

    #[test]
    fn a_record_is_stored_without_its_stamp() {
        let pod = PodRecord {
            id: "p".into(),
            address: "http://a".into(),
            http_address: "http://b".into(),
            accounts: Vec::new(),
            models: vec!["m".into()],
            status: crate::PodStatus::Healthy,
            assignable: false,
            updated_at_ms: 7,
        };
        let body = record_without_stamp(&pod).unwrap_or_default();
        assert!(
            body.ends_with('}') && !body.contains("updated_at_ms"),
            "{body}"
        );
        let stamped = format!("{},\"updated_at_ms\":9}}", &body[..body.len() - 1]);
        let back: Option<PodRecord> = serde_json::from_str(&stamped).ok();
        assert_eq!(
            back,
            Some(PodRecord {
                updated_at_ms: 9,
                ..pod
            })
        );
    }

    #[test]
    fn server_refusals_are_not_outages() {
        let script = fred::error::Error::new(ErrorKind::Unknown, "ERR user_script:1: oops");
        assert!(matches!(
            classify("x", "t", &script),
            StateError::Backend(_)
        ));
        let loading = fred::error::Error::new(ErrorKind::Unknown, "LOADING dataset");
        assert!(classify("x", "t", &loading).retryable());
        let io = fred::error::Error::new(ErrorKind::IO, "Connection reset");
        assert!(classify("x", "t", &io).retryable());
        let auth = fred::error::Error::new(ErrorKind::Auth, "WRONGPASS");
        assert!(!classify("x", "t", &auth).retryable());
    }
}
