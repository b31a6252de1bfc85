//! Shared server state: configuration, the engine once it is loaded, and admission control.

use std::sync::{Arc, RwLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use adapters::Backend;

use crate::config::Config;
use crate::error::{ApiError, Result};

/// Where the model is in its life.
enum EngineStatus {
    Loading,
    Ready(Arc<dyn Backend>),
    Failed(String),
}

struct Inner {
    config: Config,
    engine: RwLock<EngineStatus>,
    in_flight: Arc<Semaphore>,
}

/// Cheap-to-clone handle on the server state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Held for as long as a generation runs; dropping it frees the slot.
pub type GenerationSlot = OwnedSemaphorePermit;

impl AppState {
    pub fn new(config: Config) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
        Self(Arc::new(Inner {
            config,
            engine: RwLock::new(EngineStatus::Loading),
            in_flight,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn set_ready(&self, backend: Arc<dyn Backend>) {
        *self.0.engine.write().expect("engine lock") = EngineStatus::Ready(backend);
    }

    pub fn set_failed(&self, reason: String) {
        *self.0.engine.write().expect("engine lock") = EngineStatus::Failed(reason);
    }

    /// The engine, or why there is none.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        match &*self.0.engine.read().expect("engine lock") {
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
