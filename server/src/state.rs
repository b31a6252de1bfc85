//! Shared server state: configuration, the engine and the document index once they are
//! loaded, metrics, and admission control.

use std::sync::Arc;

use parking_lot::RwLock;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use adapters::Backend;

use crate::config::Config;
use crate::error::{ApiError, Result};
use crate::index::Retrieval;
use crate::metrics::Metrics;
use crate::rate_limit::{Rate, RateLimiter};

/// Where the model is in its life.
enum EngineStatus {
    Loading,
    Ready(Arc<dyn Backend>),
    Failed(String),
}

/// Where the document index is in its life.
enum IndexStatus {
    Disabled,
    Loading,
    Ready(Arc<Retrieval>),
    Failed(String),
}

struct Inner {
    adapters: Option<Arc<adapters::AdapterRegistry>>,
    keys: Option<crate::auth::KeyStore>,
    config: Config,
    engine: RwLock<EngineStatus>,
    index: RwLock<IndexStatus>,
    in_flight: Arc<Semaphore>,
    rate_limiter: Option<RateLimiter>,
    metrics: Metrics,
}

/// Cheap-to-clone handle on the server state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Held for as long as a generation runs; dropping it frees the slot.
pub type GenerationSlot = OwnedSemaphorePermit;

impl AppState {
    /// State with an adapter registry (or none when adapters are off).
    pub fn with_adapters(config: Config, registry: Option<Arc<adapters::AdapterRegistry>>) -> Self {
        let state = Self::new(config);
        let inner = Arc::try_unwrap(state.0).ok().expect("fresh state");
        Self(Arc::new(Inner {
            adapters: registry,
            ..inner
        }))
    }

    /// The same state checking API keys (`None`: auth is off).
    pub fn with_keys(self, keys: Option<crate::auth::KeyStore>) -> Self {
        let inner = Arc::try_unwrap(self.0).ok().expect("fresh state");
        Self(Arc::new(Inner { keys, ..inner }))
    }

    /// The API keys, or `None` when auth is off.
    pub fn keys(&self) -> Option<&crate::auth::KeyStore> {
        self.0.keys.as_ref()
    }

    /// Per-key rate limits, when `rate_limit_per_second` is set.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.0.rate_limiter.as_ref()
    }

    /// The adapter registry, when adapters are on.
    pub fn adapters(&self) -> Result<&Arc<adapters::AdapterRegistry>> {
        self.0.adapters.as_ref().ok_or(ApiError::AdaptersDisabled)
    }

    pub fn new(config: Config) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
        let index = if config.retrieval_enabled {
            IndexStatus::Loading
        } else {
            IndexStatus::Disabled
        };
        let rate_limiter = RateLimiter::new(Rate {
            per_second: config.rate_limit_per_second,
            burst: config.rate_limit_burst,
        });
        let metrics = Metrics::new(config.engine.as_str());
        Self(Arc::new(Inner {
            adapters: None,
            keys: None,
            rate_limiter,
            config,
            engine: RwLock::new(EngineStatus::Loading),
            index: RwLock::new(index),
            in_flight,
            metrics,
        }))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn set_index_ready(&self, retrieval: Arc<Retrieval>) {
        self.0.metrics.set_index_stats(retrieval.store().stats());
        *self.0.index.write() = IndexStatus::Ready(retrieval);
    }

    pub fn set_index_failed(&self, reason: String) {
        *self.0.index.write() = IndexStatus::Failed(reason);
    }

    /// The document index, or why there is none.
    pub fn retrieval(&self) -> Result<Arc<Retrieval>> {
        match &*self.0.index.read() {
            IndexStatus::Ready(retrieval) => Ok(retrieval.clone()),
            IndexStatus::Loading => Err(ApiError::IndexUnavailable("still loading".into())),
            IndexStatus::Disabled => Err(ApiError::IndexUnavailable(
                "retrieval is disabled on this server (retrieval_enabled = false)".into(),
            )),
            IndexStatus::Failed(reason) => Err(ApiError::IndexUnavailable(reason.clone())),
        }
    }

    /// `None` when retrieval is disabled, else whether the index is ready (or why not).
    pub fn index_readiness(&self) -> Option<Result<()>> {
        match &*self.0.index.read() {
            IndexStatus::Disabled => None,
            IndexStatus::Ready(_) => Some(Ok(())),
            IndexStatus::Loading => Some(Err(ApiError::IndexUnavailable("still loading".into()))),
            IndexStatus::Failed(reason) => Some(Err(ApiError::IndexUnavailable(reason.clone()))),
        }
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn set_ready(&self, backend: Arc<dyn Backend>) {
        *self.0.engine.write() = EngineStatus::Ready(backend);
    }

    pub fn set_failed(&self, reason: String) {
        *self.0.engine.write() = EngineStatus::Failed(reason);
    }

    /// The engine, or why there is none.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        match &*self.0.engine.read() {
            EngineStatus::Ready(backend) => Ok(backend.clone()),
            EngineStatus::Loading => Err(ApiError::NotReady),
            EngineStatus::Failed(reason) => Err(ApiError::ModelUnavailable(reason.clone())),
        }
    }

    /// Admits one more generation, or refuses with 429 when `max_in_flight` are running.
    pub fn admit(&self) -> Result<GenerationSlot> {
        self.0
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded {
                limit: self.0.config.max_in_flight,
                retry_after_secs: 1,
            })
    }

    /// Generations currently admitted.
    pub fn in_flight(&self) -> usize {
        self.0.config.max_in_flight - self.0.in_flight.available_permits()
    }
}
