//! The active set on disk: which generation each adapter name serves, in
//! `<work_dir>/active.json`, so that a restart (even after kill -9) serves what was active.
//!
//! The file is replaced atomically (written beside, fsynced, renamed over, folder fsynced): a
//! crash leaves the old set or the new one, never a mix. It is written after a change is made
//! and before the change is acknowledged, so every acknowledged activation survives.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// The file's format version; a different one is refused rather than misread.
pub const ACTIVE_SET_VERSION: u32 = 1;

/// One adapter name's active generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveEntry {
    /// The generation id: its merged folder is `<work_dir>/<generation>`.
    pub generation: String,
    pub rank: usize,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveSet {
    pub version: u32,
    pub adapters: BTreeMap<String, ActiveEntry>,
}

/// Where the active set of a work folder lives.
pub fn active_set_path(work_dir: &Path) -> PathBuf {
    work_dir.join("active.json")
}

impl ActiveSet {
    /// The set saved in `work_dir`, empty when none was saved yet.
    pub fn read(work_dir: &Path) -> Result<Self> {
        let path = active_set_path(work_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(EngineError::Load(format!("{}: {e}", path.display()))),
        };
        let set: Self = serde_json::from_str(&text)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        if set.version != ACTIVE_SET_VERSION {
            return Err(EngineError::Load(format!(
                "{}: version {} (this server reads {ACTIVE_SET_VERSION})",
                path.display(),
                set.version
            )));
        }
        Ok(set)
    }

    /// Replaces the saved set atomically.
    pub fn write(&self, work_dir: &Path) -> Result<()> {
        let path = active_set_path(work_dir);
        let tmp = work_dir.join(".active.json.tmp");
        let io = |e: std::io::Error| EngineError::Load(format!("{}: {e}", path.display()));
        let mut set = self.clone();
        set.version = ACTIVE_SET_VERSION;
        let bytes = serde_json::to_vec_pretty(&set).expect("serializable");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(work_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: &str) -> ActiveEntry {
        ActiveEntry {
            generation: generation.into(),
            rank: 8,
            loaded_at: 1_700_000_000,
        }
    }

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ActiveSet::read(dir.path()).unwrap(), ActiveSet::default());
        let mut set = ActiveSet::default();
        set.adapters.insert("fmt".into(), entry("aaa"));
        set.write(dir.path()).unwrap();
        set.adapters.insert("fmt".into(), entry("bbb"));
        set.write(dir.path()).unwrap();
        let read = ActiveSet::read(dir.path()).unwrap();
        assert_eq!(read.adapters["fmt"].generation, "bbb");
        assert_eq!(read.version, ACTIVE_SET_VERSION);
        assert!(!dir.path().join(".active.json.tmp").exists());
    }

    /// The on-disk format is a compatibility surface: a file written by this version must
    /// keep reading.
    #[test]
    fn reads_the_version_1_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            active_set_path(dir.path()),
            r#"{"version":1,"adapters":{"fmt":{"generation":"abc","rank":8,"loaded_at":1}}}"#,
        )
        .unwrap();
        let set = ActiveSet::read(dir.path()).unwrap();
        assert_eq!(set.adapters["fmt"].generation, "abc");
    }

    #[test]
    fn refuses_another_version_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            active_set_path(dir.path()),
            r#"{"version":2,"adapters":{}}"#,
        )
        .unwrap();
        assert!(ActiveSet::read(dir.path()).is_err());
        std::fs::write(active_set_path(dir.path()), "{\"version\":1,").unwrap();
        assert!(ActiveSet::read(dir.path()).is_err());
    }
}
