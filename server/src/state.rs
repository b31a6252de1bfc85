//! Shared server state: configuration, the engine, the embedder, the router and the document
//! index once each is loaded, metrics, and admission control. The router and the index share
//! the embedder but not their fate: either may fail to load while the other serves.

use std::sync::Arc;

use parking_lot::RwLock;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use adapters::Backend;
use retrieval::Embedder;

use crate::config::Config;
use crate::error::{ApiError, Result};
use crate::index::Retrieval;
use crate::metrics::Metrics;
use crate::rate_limit::{Rate, RateLimiter};
use crate::routing::SharedRouter;

/// Where the model is in its life.
enum EngineStatus {
    Loading,
    Ready(Arc<dyn Backend>),
    Failed(String),
}

/// Where a part that loads in the background (embedder, router, index) is in its life.
enum Part<T> {
    /// Off by configuration (or, for the router, none in `router_dir`).
    Disabled,
    Loading,
    Ready(T),
    Failed(String),
}

impl<T: Clone> Part<T> {
    fn new(enabled: bool) -> RwLock<Self> {
        RwLock::new(if enabled {
            Part::Loading
        } else {
            Part::Disabled
        })
    }

    /// `Ok(None)` when disabled, `Ok(Some)` when ready, else the reason it is not.
    fn get(&self) -> std::result::Result<Option<T>, String> {
        match self {
            Part::Disabled => Ok(None),
            Part::Ready(part) => Ok(Some(part.clone())),
            Part::Loading => Err("still loading".into()),
            Part::Failed(reason) => Err(reason.clone()),
        }
    }
}

struct Inner {
    adapters: Option<Arc<adapters::AdapterRegistry>>,
    keys: Option<crate::auth::KeyStore>,
    config: Config,
    engine: RwLock<EngineStatus>,
    embedder: RwLock<Part<Arc<Embedder>>>,
    router: RwLock<Part<SharedRouter>>,
    index: RwLock<Part<Arc<Retrieval>>>,
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
        let rate_limiter = RateLimiter::new(Rate {
            per_second: config.rate_limit_per_second,
            burst: config.rate_limit_burst,
        });
        let metrics = Metrics::new(config.engine.as_str());
        Self(Arc::new(Inner {
            adapters: None,
            keys: None,
            rate_limiter,
            engine: RwLock::new(EngineStatus::Loading),
            embedder: Part::new(config.retrieval_enabled || config.router_enabled),
            router: Part::new(config.router_enabled),
            index: Part::new(config.retrieval_enabled),
            config,
            in_flight,
            metrics,
        }))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn set_index_ready(&self, retrieval: Arc<Retrieval>) {
        self.0.metrics.set_index_stats(retrieval.store().stats());
        *self.0.index.write() = Part::Ready(retrieval);
    }

    pub fn set_index_failed(&self, reason: String) {
        *self.0.index.write() = Part::Failed(reason);
    }

    /// The document index, or why there is none.
    pub fn retrieval(&self) -> Result<Arc<Retrieval>> {
        match self.0.index.read().get() {
            Ok(Some(retrieval)) => Ok(retrieval),
            Ok(None) => Err(ApiError::IndexUnavailable(
                "retrieval is disabled on this server (retrieval_enabled = false)".into(),
            )),
            Err(reason) => Err(ApiError::IndexUnavailable(reason)),
        }
    }

    /// `None` when retrieval is disabled, else whether the index is ready (or why not).
    pub fn index_readiness(&self) -> Option<Result<()>> {
        match self.0.index.read().get() {
            Ok(None) => None,
            Ok(Some(_)) => Some(Ok(())),
            Err(reason) => Some(Err(ApiError::IndexUnavailable(reason))),
        }
    }

    pub fn set_embedder_ready(&self, embedder: Arc<Embedder>) {
        *self.0.embedder.write() = Part::Ready(embedder);
    }

    pub fn set_embedder_failed(&self, reason: String) {
        *self.0.embedder.write() = Part::Failed(reason);
    }

    /// The embedding model shared by routing, retrieval and `/v1/embeddings`, or why there is
    /// none.
    pub fn embedder(&self) -> Result<Arc<Embedder>> {
        match self.0.embedder.read().get() {
            Ok(Some(embedder)) => Ok(embedder),
            Ok(None) => Err(ApiError::Embedder(
                "no embedding model on this server (retrieval_enabled and router_enabled are false)"
                    .into(),
            )),
            Err(reason) => Err(ApiError::Embedder(reason)),
        }
    }

    /// `router`: the loaded router; `None`: routing is off or none was trained.
    pub fn set_router(&self, router: Option<SharedRouter>) {
        *self.0.router.write() = match router {
            Some(router) => Part::Ready(router),
            None => Part::Disabled,
        };
    }

    pub fn set_router_failed(&self, reason: String) {
        *self.0.router.write() = Part::Failed(reason);
    }

    /// `None` when no router is configured or trained, else the router once it is loaded (or
    /// why it is not).
    pub fn router_readiness(&self) -> Result<Option<SharedRouter>> {
        self.0
            .router
            .read()
            .get()
            .map_err(ApiError::RouterUnavailable)
    }

    /// The router with the embedder it classifies with: `Ok(None)` when routing is off, none
    /// was trained or it is still loading; an error when it failed to load.
    pub fn router(&self) -> Result<Option<(Arc<Embedder>, SharedRouter)>> {
        match &*self.0.router.read() {
            Part::Ready(router) => Ok(self.embedder().ok().map(|e| (e, router.clone()))),
            Part::Disabled | Part::Loading => Ok(None),
            Part::Failed(reason) => Err(ApiError::RouterUnavailable(reason.clone())),
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
