//! The document catalog: which documents are indexed, at which content hash, cut into which
//! chunks; and a content-addressed copy of every indexed source.
//!
//! The catalog is the record of what was acknowledged. It is one JSON file rewritten
//! atomically (temporary file, fsync, rename, fsync of the folder), so after a crash it is
//! either the old or the new version. A change to the indexes is bracketed by two catalog
//! writes: the entry is first marked *pending* (remembering the previous version), the
//! indexes are changed, then the entry is committed. A pending entry found on open means a
//! change was cut short; recovery puts the previous version back into both indexes.
//!
//! Sources are kept under `sources/<sha256>` so that a citation's offsets can be checked
//! against the exact text that was chunked, and so the previous version of a document can be
//! re-indexed without the client sending it again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::{ChunkerConfig, DocFormat};
use crate::error::{Result, RetrievalError};

/// Version of the on-disk layout (catalog, sources, BM25 schema, vector payload).
pub const LAYOUT_VERSION: u32 = 1;

/// The hex sha256 of a document's text.
pub fn content_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A chunk's place in its source: character offsets (end exclusive) and its section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSpan {
    pub start: usize,
    pub end: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
}

/// One indexed version of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentVersion {
    pub title: String,
    pub format: DocFormat,
    /// sha256 of the text; names the source file.
    pub sha256: String,
    pub bytes: usize,
    pub chunker: ChunkerConfig,
    /// Chunk `i` has id `<doc_id>#<i>`.
    pub chunks: Vec<ChunkSpan>,
    /// Seconds since the Unix epoch.
    pub indexed_at: u64,
}

/// What a catalog entry is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// Both indexes hold `current`.
    Committed,
    /// A change to `current` (or a delete, when `deleting`) was started; `previous` is what
    /// the indexes held before it.
    Pending {
        previous: Option<DocumentVersion>,
        #[serde(default)]
        deleting: bool,
    },
}

/// A document in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub tenant: String,
    pub doc_id: String,
    pub current: DocumentVersion,
    #[serde(flatten)]
    pub state: EntryState,
}

impl CatalogEntry {
    /// The version clients were told about: `current` once committed; while a change is
    /// pending, the version before it (none for a document that was never acknowledged).
    pub fn acknowledged(&self) -> Option<&DocumentVersion> {
        match &self.state {
            EntryState::Committed => Some(&self.current),
            EntryState::Pending { previous, .. } => previous.as_ref(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    layout_version: u32,
    /// Keyed by `tenant` + NUL + `doc_id`.
    documents: BTreeMap<String, CatalogEntry>,
}

/// The key of a document: tenants have separate namespaces.
pub fn doc_key(tenant: &str, doc_id: &str) -> String {
    format!("{tenant}\0{doc_id}")
}

/// The catalog file and the source store under one index folder.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    sources: PathBuf,
    file: CatalogFile,
}

impl Catalog {
    /// Opens `dir/catalog.json` (an empty catalog when there is none).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("catalog.json");
        let sources = dir.join("sources");
        std::fs::create_dir_all(&sources)?;
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: CatalogFile = serde_json::from_slice(&bytes).map_err(|e| {
                    RetrievalError::IncompatibleIndex {
                        path: path.display().to_string(),
                        reason: format!("catalog does not parse: {e}"),
                    }
                })?;
                if file.layout_version != LAYOUT_VERSION {
                    return Err(RetrievalError::IncompatibleIndex {
                        path: path.display().to_string(),
                        reason: format!(
                            "layout version {} (this build reads {LAYOUT_VERSION})",
                            file.layout_version
                        ),
                    });
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogFile {
                layout_version: LAYOUT_VERSION,
                documents: BTreeMap::new(),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            path,
            sources,
            file,
        })
    }

    pub fn get(&self, tenant: &str, doc_id: &str) -> Option<&CatalogEntry> {
        self.file.documents.get(&doc_key(tenant, doc_id))
    }

    /// Every entry, ordered by tenant then document id.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.file.documents.values()
    }

    /// Entries whose change was cut short.
    pub fn pending(&self) -> Vec<CatalogEntry> {
        self.entries()
            .filter(|e| matches!(e.state, EntryState::Pending { .. }))
            .cloned()
            .collect()
    }

    /// Sets (or with `None` removes) an entry and writes the catalog durably.
    pub fn put(&mut self, tenant: &str, doc_id: &str, entry: Option<CatalogEntry>) -> Result<()> {
        let key = doc_key(tenant, doc_id);
        let old = match entry {
            Some(entry) => self.file.documents.insert(key.clone(), entry),
            None => self.file.documents.remove(&key),
        };
        if let Err(err) = self.write() {
            // Keep memory in line with disk.
            match old {
                Some(old) => self.file.documents.insert(key, old),
                None => self.file.documents.remove(&key),
            };
            return Err(err);
        }
        Ok(())
    }

    fn write(&self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.file).expect("catalog serialises");
        write_atomically(&self.path, &bytes)
    }

    /// Stores a source text under its hash (durably; a no-op when it is there).
    pub fn store_source(&self, sha256: &str, text: &str) -> Result<()> {
        let path = self.sources.join(sha256);
        if path.is_file() {
            return Ok(());
        }
        write_atomically(&path, text.as_bytes())
    }

    /// The source text with this hash.
    pub fn source(&self, sha256: &str) -> Result<String> {
        Ok(std::fs::read_to_string(self.sources.join(sha256))?)
    }

    /// Removes stored sources no entry refers to (as current or previous version).
    pub fn collect_garbage(&self) -> Result<()> {
        let mut live = std::collections::HashSet::new();
        for entry in self.entries() {
            live.insert(entry.current.sha256.as_str());
            if let EntryState::Pending {
                previous: Some(previous),
                ..
            } = &entry.state
            {
                live.insert(previous.sha256.as_str());
            }
        }
        for file in std::fs::read_dir(&self.sources)? {
            let file = file?;
            let name = file.file_name();
            let name = name.to_string_lossy();
            if !live.contains(name.as_ref()) {
                // A temporary file of a write cut short, or a source no longer used.
                std::fs::remove_file(file.path())?;
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` so that after a crash the file holds either its old content or
/// all of the new.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> DocumentVersion {
        DocumentVersion {
            title: "t".into(),
            format: DocFormat::Text,
            sha256: content_hash(text),
            bytes: text.len(),
            chunker: ChunkerConfig::default(),
            chunks: vec![ChunkSpan {
                start: 0,
                end: text.chars().count(),
                section: None,
            }],
            indexed_at: 1,
        }
    }

    #[test]
    fn entries_and_sources_survive_reopen_and_garbage_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut catalog = Catalog::open(dir.path()).unwrap();
            let v1 = version("one");
            catalog.store_source(&v1.sha256, "one").unwrap();
            catalog
                .store_source(&content_hash("orphan"), "orphan")
                .unwrap();
            catalog
                .put(
                    "acme",
                    "a.txt",
                    Some(CatalogEntry {
                        tenant: "acme".into(),
                        doc_id: "a.txt".into(),
                        current: v1,
                        state: EntryState::Committed,
                    }),
                )
                .unwrap();
            catalog.collect_garbage().unwrap();
        }
        let catalog = Catalog::open(dir.path()).unwrap();
        let entry = catalog.get("acme", "a.txt").unwrap();
        assert_eq!(entry.state, EntryState::Committed);
        assert_eq!(catalog.source(&entry.current.sha256).unwrap(), "one");
        assert!(catalog.source(&content_hash("orphan")).is_err());
        assert!(
            catalog.get("globex", "a.txt").is_none(),
            "tenants are separate"
        );
    }

    #[test]
    fn a_catalog_of_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("catalog.json"),
            r#"{"layout_version": 999, "documents": {}}"#,
        )
        .unwrap();
        let err = Catalog::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("layout version 999"), "{err}");
    }

    /// The on-disk format of layout 1, written by hand: a change that breaks reading it must
    /// bump `LAYOUT_VERSION`.
    #[test]
    fn layout_1_catalog_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("catalog.json"),
            r#"{"layout_version":1,"documents":{"default\u0000a.txt":{"tenant":"default","doc_id":"a.txt",
            "current":{"title":"A","format":"asciidoc","sha256":"00","bytes":5,
            "chunker":{"max_tokens":200,"overlap_tokens":40},
            "chunks":[{"start":0,"end":5,"section":"NAME"}],"indexed_at":7},
            "state":"pending","previous":null,"deleting":false}}}"#,
        )
        .unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let entry = catalog.get("default", "a.txt").unwrap();
        assert_eq!(entry.current.chunks[0].section.as_deref(), Some("NAME"));
        assert_eq!(
            entry.state,
            EntryState::Pending {
                previous: None,
                deleting: false
            }
        );
    }
}
