//! The stores an engine shares with the others.

use std::sync::Arc;

use drawbridge_state::{AffinityStore, BreakerStore, CooldownStore, CreditStore, Stores};

/// The state an engine shares with the others: on ValKey in a cluster, in process otherwise.
#[derive(Clone)]
pub struct EngineState {
    pub credits: Arc<dyn CreditStore>,
    pub breakers: Arc<dyn BreakerStore>,
    pub cooldowns: Arc<dyn CooldownStore>,
    pub affinity: Arc<dyn AffinityStore>,
}

impl EngineState {
    /// State of this process only (an engine without `redis.url`).
    pub fn embedded() -> Self {
        Self::from(&Stores::in_memory())
    }

    /// State shared through `store` with every engine on the same ValKey.
    pub fn shared(store: Arc<drawbridge_state::ValkeyRegistry>) -> Self {
        Self::from(&Stores::on_valkey(store))
    }
}

/// The engine's part of a process's stores (the single node's data file keeps its credits).
impl From<&Stores> for EngineState {
    fn from(stores: &Stores) -> Self {
        EngineState {
            credits: Arc::clone(&stores.credits),
            breakers: Arc::clone(&stores.breakers),
            cooldowns: Arc::clone(&stores.cooldowns),
            affinity: Arc::clone(&stores.affinity),
        }
    }
}
