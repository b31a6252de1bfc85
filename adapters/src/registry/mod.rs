//! The adapter registry: named LoRA adapters, each loaded file set a *generation* (sha256 of
//! its files), hot-swapped at runtime.
//!
//! Loading validates the adapter against the base, has the [`AdapterHost`] write the
//! generation's folder (a GGUF LoRA for llama.cpp, a merged model for mistral.rs) and serve
//! it, all in the background; only then does the name switch to the new generation,
//! atomically. A request takes an `Arc` of the generation's backend when it starts (its
//! lease), so requests in flight finish on the generation they started with, and what a
//! generation holds is freed when the registry has evicted it and its last request ends.
//! Every name's active generation stays loaded; inactive ones stay while the loaded total is
//! at most `max_resident`, the least recently used evicted first (so with more names than
//! `max_resident`, exactly the active ones are loaded). An evicted generation's folder is
//! deleted, unless another name serves the same files (names share a generation's folder,
//! which goes when no name uses it). Loads are serialised; a second concurrent load is
//! refused.
//!
//! Each change of what is active is saved (`active_set`) before it is acknowledged, and a
//! generation's folder only appears, by rename, once complete: after a crash,
//! [`AdapterRegistry::recover`] brings back the last acknowledged active set, under the load
//! lock, keeping (listed with their error, saved, retried at the next start) the names that
//! do not come back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

mod active_set;
mod host;

use crate::backend::Backend;
use crate::error::{EngineError, Result};
use crate::lora::{load_adapter, resolve_in_root};
use active_set::{ActiveEntry, ActiveSet};
pub use host::{AdapterHost, BaseShapes};

/// Where adapters come from and what bounds them.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Adapter paths must resolve inside this folder.
    pub adapter_root: PathBuf,
    /// Where generations' folders are written (and the saved active set).
    pub work_dir: PathBuf,
    pub max_rank: usize,
    /// Generations kept loaded.
    pub max_resident: usize,
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("adapter `{0}` is not loaded")]
    NotFound(String),
    #[error("adapter `{name}` has no generation {generation}")]
    UnknownGeneration { name: String, generation: String },
    #[error("adapter `{name}` is at generation {actual}, not the expected {expected}")]
    Conflict {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("another adapter load is in progress; retry when it finishes")]
    Busy,
    #[error("{0}")]
    Engine(String),
}

impl From<EngineError> for RegistryError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidRequest(message) => RegistryError::Invalid(message),
            other => RegistryError::Engine(other.to_string()),
        }
    }
}

/// A generation of an adapter, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationInfo {
    pub generation: String,
    pub rank: usize,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
    /// True while it is loaded and can serve.
    pub resident: bool,
    pub resident_bytes: u64,
    /// Why the generation is not serving, when it failed to come back at start. It stays
    /// listed and in the saved active set, so the next start tries it again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An adapter name, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub active_generation: String,
    pub generations: Vec<GenerationInfo>,
}

struct Generation {
    info: GenerationInfo,
    dir: PathBuf,
    engine: Option<Arc<dyn Backend>>,
    last_used: Instant,
}

#[derive(Default)]
struct State {
    /// name → (active generation, generations by id)
    adapters: HashMap<String, (String, HashMap<String, Generation>)>,
}

/// Named adapters and their generations.
pub struct AdapterRegistry {
    config: RegistryConfig,
    host: Arc<dyn AdapterHost>,
    state: Mutex<State>,
    loading: tokio::sync::Mutex<()>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Whether any generation still loaded, or active, under any name lives in `dir`.
fn dir_in_use(state: &State, dir: &Path) -> bool {
    state.adapters.values().any(|(active, generations)| {
        generations
            .iter()
            .any(|(id, g)| g.dir == dir && (g.engine.is_some() || id == active))
    })
}

impl AdapterRegistry {
    /// Opens a registry whose generations `host` serves.
    pub fn new(config: RegistryConfig, host: Arc<dyn AdapterHost>) -> Result<Self> {
        // Both folders are the server's own: made when missing, so that a load is never refused
        // for a folder nobody created.
        for dir in [&config.work_dir, &config.adapter_root] {
            std::fs::create_dir_all(dir)
                .map_err(|e| EngineError::Load(format!("{}: {e}", dir.display())))?;
        }
        Ok(Self {
            config,
            host,
            state: Mutex::new(State::default()),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    /// Loads the adapter at `path` (inside the adapter root) as `name`'s new active
    /// generation. Nothing changes unless it validates and loads.
    pub async fn load(
        &self,
        name: &str,
        path: &Path,
    ) -> std::result::Result<GenerationInfo, RegistryError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(RegistryError::Invalid(
                "lora_name must be 1-64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let _loading = self.loading.try_lock().map_err(|_| RegistryError::Busy)?;
        let dir = resolve_in_root(&self.config.adapter_root, path)?;
        let shapes = self.host.shapes().await?;
        let max_rank = self.config.max_rank;
        // Reading and checking every value is blocking work: off the async runtime.
        let adapter = tokio::task::spawn_blocking(move || load_adapter(&dir, &shapes, max_rank))
            .await
            .map_err(|e| RegistryError::Engine(e.to_string()))??;
        let generation = adapter.generation.clone();
        let rank = adapter.config.r;
        if let Some(info) = self.activate_existing(name, &generation) {
            return Ok(info);
        }
        let out = self.config.work_dir.join(&generation);
        let final_dir = out.clone();
        // Written beside, then renamed into place: a folder named after a generation is whole.
        let partial = self.config.work_dir.join(format!(".partial-{generation}"));
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || -> std::result::Result<(), RegistryError> {
            let _ = std::fs::remove_dir_all(&partial);
            std::fs::create_dir_all(&partial)
                .map_err(|e| RegistryError::Engine(format!("{}: {e}", partial.display())))?;
            host.prepare(&adapter, &partial)?;
            let _ = std::fs::remove_dir_all(&final_dir);
            std::fs::rename(&partial, &final_dir)
                .map_err(|e| RegistryError::Engine(format!("{}: {e}", final_dir.display())))
        })
        .await
        .map_err(|e| RegistryError::Engine(e.to_string()))??;
        let engine = self.host.serve(&out, name).await?;
        let info = GenerationInfo {
            generation: generation.clone(),
            rank,
            loaded_at: now(),
            resident: true,
            resident_bytes: dir_bytes(&out),
            error: None,
        };
        let mut state = self.state.lock();
        let previous = state.adapters.get(name).map(|(active, _)| active.clone());
        let entry = state
            .adapters
            .entry(name.to_string())
            .or_insert_with(|| (generation.clone(), HashMap::new()));
        entry.0 = generation.clone();
        entry.1.insert(
            generation.clone(),
            Generation {
                info: info.clone(),
                dir: out,
                engine: Some(engine),
                last_used: Instant::now(),
            },
        );
        if let Err(err) = self.save(&state) {
            match previous {
                Some(previous) => {
                    let entry = state.adapters.get_mut(name).expect("just inserted");
                    entry.0 = previous;
                    entry.1.remove(&generation);
                }
                None => {
                    state.adapters.remove(name);
                }
            }
            return Err(err);
        }
        let evicted = self.evict(&mut state);
        drop(state);
        remove_dirs(&evicted);
        Ok(info)
    }

    /// A generation already known under `name`: make it active (reloading is then a no-op).
    fn activate_existing(&self, name: &str, generation: &str) -> Option<GenerationInfo> {
        let mut state = self.state.lock();
        let entry = state.adapters.get_mut(name)?;
        let known = entry.1.get(generation)?;
        // An evicted generation is rebuilt by a full load.
        known.engine.as_ref()?;
        let info = known.info.clone();
        let previous = std::mem::replace(&mut entry.0, generation.to_string());
        if self.save(&state).is_err() {
            // Not saved, so not switched: a full load reports the error.
            state.adapters.get_mut(name).expect("present").0 = previous;
            return None;
        }
        Some(info)
    }

    /// Saves which generation each name serves (before the change is acknowledged).
    fn save(&self, state: &State) -> std::result::Result<(), RegistryError> {
        let set = ActiveSet {
            version: active_set::ACTIVE_SET_VERSION,
            adapters: state
                .adapters
                .iter()
                .filter_map(|(name, (active, generations))| {
                    let info = &generations.get(active)?.info;
                    Some((
                        name.clone(),
                        ActiveEntry {
                            generation: active.clone(),
                            rank: info.rank,
                            loaded_at: info.loaded_at,
                        },
                    ))
                })
                .collect(),
        };
        set.write(&self.config.work_dir)
            .map_err(|e| RegistryError::Engine(format!("could not save the active adapters: {e}")))
    }

    /// Brings back the saved active set: each name's generation is served from its folder.
    /// Returns each name with its outcome. Runs under the load lock (a load meanwhile is
    /// `Busy`), and every saved name is in the registry from the start, so an admin change
    /// made meanwhile saves the whole set; a name that fails stays listed with its error and
    /// saved, and the next start tries it again.
    pub async fn recover(
        &self,
    ) -> Vec<(String, std::result::Result<GenerationInfo, RegistryError>)> {
        let _loading = self.loading.lock().await;
        let set = match ActiveSet::read(&self.config.work_dir) {
            Ok(set) => set,
            Err(err) => return vec![("(active set)".to_string(), Err(err.into()))],
        };
        {
            let mut state = self.state.lock();
            for (name, entry) in &set.adapters {
                let info = GenerationInfo {
                    generation: entry.generation.clone(),
                    rank: entry.rank,
                    loaded_at: entry.loaded_at,
                    resident: false,
                    resident_bytes: 0,
                    error: Some("being recovered".into()),
                };
                let generation = Generation {
                    info,
                    dir: self.config.work_dir.join(&entry.generation),
                    engine: None,
                    last_used: Instant::now(),
                };
                state
                    .adapters
                    .entry(name.clone())
                    .or_insert_with(|| (entry.generation.clone(), HashMap::new()))
                    .1
                    .entry(entry.generation.clone())
                    .or_insert(generation);
            }
        }
        let mut outcomes = Vec::new();
        for (name, entry) in set.adapters {
            let dir = self.config.work_dir.join(&entry.generation);
            let served = self.host.serve(&dir, &name).await;
            let mut state = self.state.lock();
            // Unloaded meanwhile: nothing to bring back.
            let Some(generation) = state
                .adapters
                .get_mut(&name)
                .and_then(|(_, gens)| gens.get_mut(&entry.generation))
            else {
                continue;
            };
            let outcome = match served {
                Ok(engine) => {
                    generation.engine = Some(engine);
                    generation.info.resident = true;
                    generation.info.resident_bytes = dir_bytes(&dir);
                    generation.info.error = None;
                    Ok(generation.info.clone())
                }
                Err(err) => {
                    generation.info.error = Some(err.to_string());
                    Err(RegistryError::from(err))
                }
            };
            outcomes.push((name, outcome));
        }
        outcomes
    }

    /// Switches `name` to one of its resident generations, if it is still at `expected`.
    pub fn activate(
        &self,
        name: &str,
        generation: &str,
        expected: Option<&str>,
    ) -> std::result::Result<GenerationInfo, RegistryError> {
        let mut state = self.state.lock();
        let entry = state
            .adapters
            .get_mut(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        if let Some(expected) = expected {
            if entry.0 != expected {
                return Err(RegistryError::Conflict {
                    name: name.to_string(),
                    expected: expected.to_string(),
                    actual: entry.0.clone(),
                });
            }
        }
        let target = entry
            .1
            .get_mut(generation)
            .filter(|g| g.engine.is_some())
            .ok_or_else(|| RegistryError::UnknownGeneration {
                name: name.to_string(),
                generation: generation.to_string(),
            })?;
        target.last_used = Instant::now();
        let info = target.info.clone();
        let previous = std::mem::replace(&mut entry.0, generation.to_string());
        if let Err(err) = self.save(&state) {
            state.adapters.get_mut(name).expect("present").0 = previous;
            return Err(err);
        }
        Ok(info)
    }

    /// Removes `name` and all its generations; requests in flight finish on their instance.
    pub fn unload(&self, name: &str) -> std::result::Result<(), RegistryError> {
        let mut state = self.state.lock();
        let removed = state
            .adapters
            .remove(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        if let Err(err) = self.save(&state) {
            state.adapters.insert(name.to_string(), removed);
            return Err(err);
        }
        // The same files loaded under another name share the folder.
        let unused: Vec<PathBuf> = removed
            .1
            .into_values()
            .map(|g| g.dir)
            .filter(|dir| !dir_in_use(&state, dir))
            .collect();
        // Deleted outside the lock every request's lookup takes (a merged model is large).
        drop(state);
        remove_dirs(&unused);
        Ok(())
    }

    /// The active generation's engine for `name` (the caller's lease) and its id.
    pub fn engine(&self, name: &str) -> Option<(Arc<dyn Backend>, String)> {
        let mut state = self.state.lock();
        let entry = state.adapters.get_mut(name)?;
        let active = entry.0.clone();
        let generation = entry.1.get_mut(&active)?;
        generation.last_used = Instant::now();
        let engine = generation.engine.clone()?;
        Some((engine, active))
    }

    /// Every adapter with its generations.
    pub fn list(&self) -> Vec<AdapterInfo> {
        let state = self.state.lock();
        let mut out: Vec<AdapterInfo> = state
            .adapters
            .iter()
            .map(|(name, (active, generations))| {
                let mut generations: Vec<GenerationInfo> =
                    generations.values().map(|g| g.info.clone()).collect();
                generations.sort_by_key(|g| g.loaded_at);
                AdapterInfo {
                    name: name.clone(),
                    active_generation: active.clone(),
                    generations,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Drops the engines of the least recently used inactive generations beyond the budget.
    /// Returns the folders no longer needed, for the caller to delete outside the lock.
    fn evict(&self, state: &mut State) -> Vec<PathBuf> {
        let mut unused = Vec::new();
        loop {
            let resident: Vec<(String, String, Instant, bool)> = state
                .adapters
                .iter()
                .flat_map(|(name, (active, generations))| {
                    generations
                        .iter()
                        .filter(|(_, g)| g.engine.is_some())
                        .map(move |(id, g)| (name.clone(), id.clone(), g.last_used, id == active))
                })
                .collect();
            if resident.len() <= self.config.max_resident.max(1) {
                return unused;
            }
            let Some((name, id, _, _)) = resident
                .into_iter()
                .filter(|(_, _, _, active)| !active)
                .min_by_key(|(_, _, used, _)| *used)
            else {
                return unused;
            };
            if let Some(generation) = state
                .adapters
                .get_mut(&name)
                .and_then(|(_, gens)| gens.get_mut(&id))
            {
                generation.engine = None;
                generation.info.resident = false;
                generation.info.resident_bytes = 0;
                // Never served again (a load of the same files rebuilds it): its files go,
                // unless another name serves the same generation.
                let dir = generation.dir.clone();
                if !dir_in_use(state, &dir) {
                    unused.push(dir);
                }
                tracing::info!(
                    adapter = name,
                    generation = id,
                    "evicted an inactive generation"
                );
            }
        }
    }
}
