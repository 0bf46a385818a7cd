//! The stores an engine shares with the others.

use std::sync::Arc;

use drawbridge_state::{
    AffinityStore, BreakerStore, CooldownStore, CreditStore, EmbeddedCredits, EmbeddedRouting,
};

/// The state an engine shares with the others: on ValKey in a cluster, in process otherwise.
#[derive(Clone)]
pub struct EngineState {
    pub credits: Arc<dyn CreditStore>,
    pub breakers: Arc<dyn BreakerStore>,
    pub cooldowns: Arc<dyn CooldownStore>,
    pub affinity: Arc<dyn AffinityStore>,
}

impl EngineState {
    /// State of this process only (the single-node binary, an engine without `redis.url`).
    pub fn embedded() -> Self {
        let routing = Arc::new(EmbeddedRouting::new());
        EngineState {
            credits: Arc::new(EmbeddedCredits::new()),
            breakers: routing.clone(),
            cooldowns: routing.clone(),
            affinity: routing,
        }
    }

    /// State shared through `store` with every engine on the same ValKey.
    pub fn shared(store: Arc<drawbridge_state::ValkeyRegistry>) -> Self {
        EngineState {
            credits: store.clone(),
            breakers: store.clone(),
            cooldowns: store.clone(),
            affinity: store,
        }
    }
}
