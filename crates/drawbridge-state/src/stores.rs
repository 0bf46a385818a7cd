//! Every store a process uses, opened once: [`Stores::open`] chooses ValKey (`redis.url`), the
//! local data file, or memory, and hands each layer the traits it needs. The layers never see
//! which backing they run on, and a store shared by two layers of one process (the single-node
//! binary's data file holds the gateway's keys and usage *and* the engine's credits) is shared
//! here, not by one layer lending its store to another.

use std::path::PathBuf;
use std::sync::Arc;

use drawbridge_runtime::Shutdown;

use crate::{
    AffinityStore, BreakerStore, CooldownStore, CreditStore, EmbeddedCredits, EmbeddedGatewayStore,
    EmbeddedResponses, EmbeddedRouting, KeyStore, RateLimiter, ResponseStore, StateError,
    UsageStore, ValkeyRegistry, redact_url,
};

/// Where a process keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Shared with every node through ValKey (any Redis-compatible server) at this URL.
    Valkey { url: String },
    /// This process only; keys, usage and credits survive a restart in this redb file.
    DataFile(PathBuf),
    /// This process only, nothing kept (an engine without ValKey; tests).
    Memory,
}

impl Backing {
    /// ValKey when a URL is set, else the data file when the process keeps one, else memory.
    pub fn choose(redis_url: Option<&str>, data_file: Option<PathBuf>) -> Backing {
        match (redis_url, data_file) {
            (Some(url), _) => Backing::Valkey {
                url: url.to_owned(),
            },
            (None, Some(path)) => Backing::DataFile(path),
            (None, None) => Backing::Memory,
        }
    }
}

/// The stores of one process, by what they are for.
#[derive(Clone)]
pub struct Stores {
    /// The gateway's API keys, rate-limit windows and usage ledger.
    pub keys: Arc<dyn KeyStore>,
    pub limiter: Arc<dyn RateLimiter>,
    pub usage: Arc<dyn UsageStore>,
    /// The accounts' balances.
    pub credits: Arc<dyn CreditStore>,
    /// What the schedulers share: breakers, rate-limit rests, session affinity.
    pub breakers: Arc<dyn BreakerStore>,
    pub cooldowns: Arc<dyn CooldownStore>,
    pub affinity: Arc<dyn AffinityStore>,
    /// The Responses API's stored responses (in memory without ValKey: they live an hour or
    /// so, and a restart only loses the chaining of the last ones).
    pub responses: Arc<dyn ResponseStore>,
    /// The ValKey connection itself, for the cluster's registry, lease and desired accounts
    /// (absent on a single node).
    pub valkey: Option<Arc<ValkeyRegistry>>,
    file: Option<Arc<EmbeddedGatewayStore>>,
}

impl Stores {
    /// Open the stores on `backing`. The data file's writer runs on `scope`, which must be
    /// drained after [`Stores::close`] (or the file is written once more when it is dropped).
    /// A data file another process holds is refused, naming the file.
    pub async fn open(backing: &Backing, scope: &Shutdown) -> Result<Stores, StateError> {
        match backing {
            Backing::Valkey { url } => {
                let valkey = Arc::new(ValkeyRegistry::connect(url).await?);
                tracing::info!(url = redact_url(url), "state in ValKey");
                Ok(Stores::on_valkey(valkey))
            }
            Backing::DataFile(path) => {
                let file = Arc::new(EmbeddedGatewayStore::open(path, scope).await?);
                tracing::info!(file = %path.display(), "state in the local data file");
                let routing = Arc::new(EmbeddedRouting::new());
                Ok(Stores {
                    keys: file.clone(),
                    limiter: file.clone(),
                    usage: file.clone(),
                    credits: file.clone(),
                    breakers: routing.clone(),
                    cooldowns: routing.clone(),
                    affinity: routing,
                    responses: Arc::new(EmbeddedResponses::new()),
                    valkey: None,
                    file: Some(file),
                })
            }
            Backing::Memory => Ok(Stores::in_memory()),
        }
    }

    /// Every store on one ValKey connection.
    pub fn on_valkey(valkey: Arc<ValkeyRegistry>) -> Stores {
        Stores {
            keys: valkey.clone(),
            limiter: valkey.clone(),
            usage: valkey.clone(),
            credits: valkey.clone(),
            breakers: valkey.clone(),
            cooldowns: valkey.clone(),
            affinity: valkey.clone(),
            responses: valkey.clone(),
            valkey: Some(valkey),
            file: None,
        }
    }

    /// Every store in this process's memory; nothing survives it.
    pub fn in_memory() -> Stores {
        let gateway = Arc::new(EmbeddedGatewayStore::in_memory());
        let routing = Arc::new(EmbeddedRouting::new());
        Stores {
            keys: gateway.clone(),
            limiter: gateway.clone(),
            usage: gateway,
            credits: Arc::new(EmbeddedCredits::new()),
            breakers: routing.clone(),
            cooldowns: routing.clone(),
            affinity: routing,
            responses: Arc::new(EmbeddedResponses::new()),
            valkey: None,
            file: None,
        }
    }

    /// Flush and close: the data file is complete on disk afterwards, the ValKey connections
    /// are closed. Call it after the last write (the drain's last step); closing twice is fine.
    pub async fn close(&self) {
        if let Some(valkey) = &self.valkey {
            valkey.close().await;
        }
        if let Some(file) = &self.file
            && let Err(error) = file.close().await
        {
            tracing::error!(%error, "cannot flush the data file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_wins_then_the_data_file_then_memory() {
        let file = PathBuf::from("state.redb");
        assert_eq!(
            Backing::choose(Some("redis://127.0.0.1:6379"), Some(file.clone())),
            Backing::Valkey {
                url: "redis://127.0.0.1:6379".into()
            }
        );
        assert_eq!(
            Backing::choose(None, Some(file.clone())),
            Backing::DataFile(file)
        );
        assert_eq!(Backing::choose(None, None), Backing::Memory);
    }

    #[tokio::test]
    async fn the_data_file_holds_the_credits_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let backing = Backing::DataFile(dir.path().join("state.redb"));
        let scope = Shutdown::new();
        let stores = Stores::open(&backing, &scope).await.unwrap();
        stores
            .credits
            .set_balance("acct-1", Some(5_000))
            .await
            .unwrap();
        stores.close().await;
        scope.drain(std::time::Duration::from_secs(5)).await;

        let scope = Shutdown::new();
        let stores = Stores::open(&backing, &scope).await.unwrap();
        let accounts = ["acct-1".to_owned()];
        let balances = stores.credits.balances(&accounts).await.unwrap();
        assert_eq!(balances, [Some(5_000)]);
        stores.close().await;
        scope.drain(std::time::Duration::from_secs(5)).await;
    }
}
