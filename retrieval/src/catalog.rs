//! The document catalog: which documents are indexed, at which content hash, cut into which
//! chunks; with a content-addressed copy of every indexed source and the exact text of each
//! of its chunks.
//!
//! The catalog is the record of what was acknowledged. It lives in `catalog.redb`, an
//! embedded transactional store (redb): each change is one durable transaction that writes
//! one document's entry (and, with a new version, its source and chunk texts), so a write
//! costs the same however many documents there are, and after a crash the store holds either
//! the old or the new entry. A change to the indexes is bracketed by two such writes: the
//! entry is first marked *pending* (remembering the previous version), the indexes are
//! changed, then the entry is committed. A pending entry found on open means a change was cut
//! short; recovery puts the previous version back into both indexes.
//!
//! Readers never wait for a writer: entries are also held in memory behind a read-write lock
//! that a writer takes only to swap one entry after its transaction committed, and a search
//! hit's text is one small read of `chunk_texts`, never the whole source.
//!
//! Sources are kept so that a citation's offsets can be checked against the exact text that
//! was chunked, and so the previous version of a document can be re-indexed without the
//! client sending it again. A source and its chunk texts are deleted in the transaction that
//! drops the last entry using them.
//!
//! Layout 1 (`catalog.json` and `sources/<sha256>` files) is migrated on open, in one
//! transaction; its files are removed once the migration committed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::{ChunkerConfig, DocFormat};
use crate::error::{Result, RetrievalError};

/// Version of the on-disk layout (catalog, sources, BM25 schema, vector payload).
pub const LAYOUT_VERSION: u32 = 2;

/// The catalog's file under the index folder.
pub const CATALOG_FILE: &str = "catalog.redb";

/// `layout_version` → the layout of the folder.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// [`doc_key`] → the entry as JSON.
const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
/// sha256 of a text → the text.
const SOURCES: TableDefinition<&str, &str> = TableDefinition::new("sources");
/// [`chunk_text_key`] → the characters `start..end` of the source with that sha256.
const CHUNK_TEXTS: TableDefinition<&str, &str> = TableDefinition::new("chunk_texts");

/// The hex sha256 of a document's text.
pub fn content_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
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
    /// sha256 of the text; names the source.
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

    /// Every version the entry refers to: its sources and chunk texts must be kept.
    fn versions(&self) -> impl Iterator<Item = &DocumentVersion> {
        let previous = match &self.state {
            EntryState::Pending { previous, .. } => previous.as_ref(),
            EntryState::Committed => None,
        };
        std::iter::once(&self.current).chain(previous)
    }
}

/// The key of a document: tenants have separate namespaces.
pub fn doc_key(tenant: &str, doc_id: &str) -> String {
    format!("{tenant}\0{doc_id}")
}

/// The key of a chunk's text: the source's sha256 and the chunk's character offsets.
pub fn chunk_text_key(sha256: &str, start: usize, end: usize) -> String {
    format!("{sha256}:{start}:{end}")
}

fn store_error(err: impl Into<redb::Error>) -> RetrievalError {
    RetrievalError::Catalog(err.into().to_string())
}

/// The catalog store under one index folder, with its entries in memory.
pub struct Catalog {
    path: PathBuf,
    db: Database,
    entries: RwLock<BTreeMap<String, Arc<CatalogEntry>>>,
    /// Serialises writers, so the in-memory entries change in commit order.
    writer: Mutex<()>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

impl Catalog {
    /// Opens `dir/catalog.redb` (an empty catalog when there is none), migrating a layout-1
    /// catalog found there, and removes sources and chunk texts no entry uses.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(CATALOG_FILE);
        let db = Database::builder()
            .set_cache_size(64 << 20)
            .create(&path)
            .map_err(|err| match err {
                redb::DatabaseError::DatabaseAlreadyOpen => RetrievalError::IndexLocked {
                    path: path.display().to_string(),
                },
                other => store_error(other),
            })?;
        let incompatible = |reason: String| RetrievalError::IncompatibleIndex {
            path: path.display().to_string(),
            reason,
        };
        let layout = {
            let read = db.begin_read().map_err(store_error)?;
            match read.open_table(META) {
                Ok(meta) => meta
                    .get("layout_version")
                    .map_err(store_error)?
                    .map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(err) => return Err(store_error(err)),
            }
        };
        let layout_1 = dir.join("catalog.json");
        match layout {
            Some(version) if version == u64::from(LAYOUT_VERSION) => {}
            Some(version) => {
                return Err(incompatible(format!(
                    "layout version {version} (this build reads {LAYOUT_VERSION})"
                )))
            }
            // New, or a migration that never committed.
            None => {
                let write = db.begin_write().map_err(store_error)?;
                if layout_1.is_file() {
                    migrate_layout_1(dir, &write).map_err(|err| match err {
                        RetrievalError::IncompatibleIndex { reason, .. } => incompatible(reason),
                        other => other,
                    })?;
                }
                write
                    .open_table(META)
                    .map_err(store_error)?
                    .insert("layout_version", u64::from(LAYOUT_VERSION))
                    .map_err(store_error)?;
                write.commit().map_err(store_error)?;
            }
        }
        // Layout-1 files left by a migration that committed.
        if layout_1.is_file() {
            std::fs::remove_file(&layout_1)?;
            let sources = dir.join("sources");
            if sources.is_dir() {
                std::fs::remove_dir_all(sources)?;
            }
        }

        let mut entries = BTreeMap::new();
        {
            let read = db.begin_read().map_err(store_error)?;
            match read.open_table(DOCUMENTS) {
                Ok(table) => {
                    for row in table.iter().map_err(store_error)? {
                        let (key, value) = row.map_err(store_error)?;
                        let entry: CatalogEntry =
                            serde_json::from_slice(value.value()).map_err(|e| {
                                incompatible(format!(
                                    "catalog entry {:?} does not parse: {e}",
                                    key.value()
                                ))
                            })?;
                        entries.insert(key.value().to_string(), Arc::new(entry));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(err) => return Err(store_error(err)),
            }
        }
        let catalog = Self {
            path,
            db,
            entries: RwLock::new(entries),
            writer: Mutex::new(()),
        };
        catalog.collect_garbage()?;
        Ok(catalog)
    }

    pub fn get(&self, tenant: &str, doc_id: &str) -> Option<Arc<CatalogEntry>> {
        self.entries.read().get(&doc_key(tenant, doc_id)).cloned()
    }

    /// Every entry, ordered by tenant then document id.
    pub fn entries(&self) -> Vec<Arc<CatalogEntry>> {
        self.entries.read().values().cloned().collect()
    }

    /// Entries whose change was cut short.
    pub fn pending(&self) -> Vec<CatalogEntry> {
        self.entries
            .read()
            .values()
            .filter(|e| matches!(e.state, EntryState::Pending { .. }))
            .map(|e| (**e).clone())
            .collect()
    }

    /// Sets (or with `None` removes) an entry, in one durable transaction. With `source`, the
    /// text of the entry's current version, that source and its chunk texts are stored in the
    /// same transaction (when they are not there yet). Sources and chunk texts no entry uses
    /// any more are deleted in it too.
    pub fn put(
        &self,
        tenant: &str,
        doc_id: &str,
        entry: Option<CatalogEntry>,
        source: Option<&str>,
    ) -> Result<()> {
        let key = doc_key(tenant, doc_id);
        let _writing = self.writer.lock();
        let old = self.entries.read().get(&key).cloned();
        let write = self.db.begin_write().map_err(store_error)?;
        {
            let mut documents = write.open_table(DOCUMENTS).map_err(store_error)?;
            match &entry {
                Some(entry) => {
                    let json = serde_json::to_vec(entry).expect("catalog entry serialises");
                    documents
                        .insert(key.as_str(), json.as_slice())
                        .map_err(store_error)?;
                }
                None => {
                    documents.remove(key.as_str()).map_err(store_error)?;
                }
            }
        }
        if let (Some(entry), Some(text)) = (&entry, source) {
            store_version(&write, &entry.current, text)?;
        }
        if let Some(old) = &old {
            // What the other entries and the new one still use stays.
            let entries = self.entries.read();
            let live: Vec<&DocumentVersion> = entries
                .iter()
                .filter(|(k, _)| **k != key)
                .flat_map(|(_, e)| e.versions())
                .chain(entry.iter().flat_map(|e| e.versions()))
                .collect();
            for dropped in old.versions() {
                drop_version(&write, dropped, &live)?;
            }
        }
        write.commit().map_err(store_error)?;
        let mut entries = self.entries.write();
        match entry {
            Some(entry) => entries.insert(key, Arc::new(entry)),
            None => entries.remove(&key),
        };
        Ok(())
    }

    /// The source text with this hash.
    pub fn source(&self, sha256: &str) -> Result<String> {
        let read = self.db.begin_read().map_err(store_error)?;
        let table = read.open_table(SOURCES).map_err(store_error)?;
        let text = table.get(sha256).map_err(store_error)?;
        text.map(|t| t.value().to_string()).ok_or_else(|| {
            RetrievalError::Catalog(format!("the source {sha256} is not in the catalog"))
        })
    }

    /// The exact text of a chunk of the source with this hash.
    pub fn chunk_text(&self, sha256: &str, span: &ChunkSpan) -> Result<Option<String>> {
        let read = self.db.begin_read().map_err(store_error)?;
        let table = match read.open_table(CHUNK_TEXTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(store_error(err)),
        };
        let text = table
            .get(chunk_text_key(sha256, span.start, span.end).as_str())
            .map_err(store_error)?;
        Ok(text.map(|t| t.value().to_string()))
    }

    /// Deletes every source and chunk text no entry refers to (as current or previous
    /// version): what a crash between two transactions could not have left, kept as a check
    /// on open.
    fn collect_garbage(&self) -> Result<()> {
        let entries = self.entries.read();
        let mut live_sources = HashSet::new();
        let mut live_chunks = HashSet::new();
        for version in entries.values().flat_map(|e| e.versions()) {
            live_sources.insert(version.sha256.clone());
            for span in &version.chunks {
                live_chunks.insert(chunk_text_key(&version.sha256, span.start, span.end));
            }
        }
        let write = self.db.begin_write().map_err(store_error)?;
        let mut removed = 0usize;
        write
            .open_table(SOURCES)
            .map_err(store_error)?
            .retain(|sha, _| {
                let keep = live_sources.contains(sha);
                removed += usize::from(!keep);
                keep
            })
            .map_err(store_error)?;
        write
            .open_table(CHUNK_TEXTS)
            .map_err(store_error)?
            .retain(|key, _| {
                let keep = live_chunks.contains(key);
                removed += usize::from(!keep);
                keep
            })
            .map_err(store_error)?;
        write.commit().map_err(store_error)?;
        if removed > 0 {
            tracing::warn!(removed, "catalog: removed unused sources and chunk texts");
        }
        Ok(())
    }
}

/// Stores a version's source and the text of each of its chunks, where absent.
fn store_version(write: &WriteTransaction, version: &DocumentVersion, text: &str) -> Result<()> {
    let mut sources = write.open_table(SOURCES).map_err(store_error)?;
    if sources
        .get(version.sha256.as_str())
        .map_err(store_error)?
        .is_none()
    {
        sources
            .insert(version.sha256.as_str(), text)
            .map_err(store_error)?;
    }
    // Byte offset of each character, and of the end.
    let bytes: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    let mut chunk_texts = write.open_table(CHUNK_TEXTS).map_err(store_error)?;
    for span in &version.chunks {
        let (Some(&from), Some(&to)) = (bytes.get(span.start), bytes.get(span.end)) else {
            return Err(RetrievalError::Catalog(format!(
                "chunk {}..{} is outside its source ({} characters)",
                span.start,
                span.end,
                bytes.len() - 1
            )));
        };
        chunk_texts
            .insert(
                chunk_text_key(&version.sha256, span.start, span.end).as_str(),
                &text[from..to],
            )
            .map_err(store_error)?;
    }
    Ok(())
}

/// Deletes what `dropped` alone used: its source when no `live` version has the same hash,
/// else the chunk texts no live version of that hash has.
fn drop_version(
    write: &WriteTransaction,
    dropped: &DocumentVersion,
    live: &[&DocumentVersion],
) -> Result<()> {
    let same_source: Vec<&&DocumentVersion> =
        live.iter().filter(|v| v.sha256 == dropped.sha256).collect();
    if same_source.is_empty() {
        write
            .open_table(SOURCES)
            .map_err(store_error)?
            .remove(dropped.sha256.as_str())
            .map_err(store_error)?;
    }
    let kept: HashSet<(usize, usize)> = same_source
        .iter()
        .flat_map(|v| v.chunks.iter().map(|s| (s.start, s.end)))
        .collect();
    let mut chunk_texts = write.open_table(CHUNK_TEXTS).map_err(store_error)?;
    for span in &dropped.chunks {
        if !kept.contains(&(span.start, span.end)) {
            chunk_texts
                .remove(chunk_text_key(&dropped.sha256, span.start, span.end).as_str())
                .map_err(store_error)?;
        }
    }
    Ok(())
}

/// The layout-1 catalog file, as it was written.
#[derive(Deserialize)]
struct Layout1File {
    layout_version: u32,
    documents: BTreeMap<String, CatalogEntry>,
}

/// Copies a layout-1 catalog (`catalog.json`, `sources/<sha256>`) into `write`. A version
/// whose source file is missing is kept without chunk texts: its hits are dropped, as
/// layout 1 dropped them.
fn migrate_layout_1(dir: &Path, write: &WriteTransaction) -> Result<()> {
    let json_path = dir.join("catalog.json");
    let incompatible = |reason: String| RetrievalError::IncompatibleIndex {
        path: json_path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(&json_path)?;
    let file: Layout1File = serde_json::from_slice(&bytes)
        .map_err(|e| incompatible(format!("catalog does not parse: {e}")))?;
    if file.layout_version != 1 {
        return Err(incompatible(format!(
            "layout version {} (this build reads {LAYOUT_VERSION}, and migrates 1)",
            file.layout_version
        )));
    }
    let mut documents = write.open_table(DOCUMENTS).map_err(store_error)?;
    for (key, entry) in &file.documents {
        let json = serde_json::to_vec(entry).expect("catalog entry serialises");
        documents
            .insert(key.as_str(), json.as_slice())
            .map_err(store_error)?;
        for version in entry.versions() {
            match std::fs::read_to_string(dir.join("sources").join(&version.sha256)) {
                Ok(text) => store_version(write, version, &text)?,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(
                        doc = key.replace('\0', "/"),
                        sha256 = version.sha256,
                        "catalog migration: a source is missing; its chunks are not cited"
                    );
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    tracing::info!(
        documents = file.documents.len(),
        "catalog: migrated layout 1 (catalog.json) to layout {LAYOUT_VERSION} (catalog.redb)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> DocumentVersion {
        let chars = text.chars().count();
        DocumentVersion {
            title: "t".into(),
            format: DocFormat::Text,
            sha256: content_hash(text),
            bytes: text.len(),
            chunker: ChunkerConfig::default(),
            chunks: vec![
                ChunkSpan {
                    start: 0,
                    end: chars,
                    section: None,
                },
                ChunkSpan {
                    start: 1,
                    end: chars,
                    section: None,
                },
            ],
            indexed_at: 1,
        }
    }

    fn entry(current: DocumentVersion, state: EntryState) -> CatalogEntry {
        CatalogEntry {
            tenant: "acme".into(),
            doc_id: "a.txt".into(),
            current,
            state,
        }
    }

    /// Rows of a table of the store, for checks of what is on disk.
    fn rows(dir: &Path, table: TableDefinition<&str, &str>) -> Vec<String> {
        let db = Database::open(dir.join(CATALOG_FILE)).unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(table).unwrap();
        table
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value().to_string())
            .collect()
    }

    #[test]
    fn entries_sources_and_chunk_texts_survive_reopen_and_go_with_their_last_user() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (version("öne"), version("two"));
        {
            let catalog = Catalog::open(dir.path()).unwrap();
            catalog
                .put(
                    "acme",
                    "a.txt",
                    Some(entry(v1.clone(), EntryState::Committed)),
                    Some("öne"),
                )
                .unwrap();
            // A replacement under way keeps both versions' texts.
            let pending = EntryState::Pending {
                previous: Some(v1.clone()),
                deleting: false,
            };
            catalog
                .put(
                    "acme",
                    "a.txt",
                    Some(entry(v2.clone(), pending)),
                    Some("two"),
                )
                .unwrap();
            assert_eq!(catalog.pending().len(), 1);
        }
        {
            let catalog = Catalog::open(dir.path()).unwrap();
            let got = catalog.get("acme", "a.txt").unwrap();
            assert_eq!(got.acknowledged(), Some(&v1), "pending until committed");
            assert_eq!(catalog.source(&v1.sha256).unwrap(), "öne");
            assert_eq!(
                catalog.chunk_text(&v1.sha256, &v1.chunks[1]).unwrap(),
                Some("ne".to_string()),
                "offsets are characters"
            );
            assert_eq!(
                catalog.chunk_text(&v2.sha256, &v2.chunks[0]).unwrap(),
                Some("two".to_string())
            );
            assert!(
                catalog.get("globex", "a.txt").is_none(),
                "tenants are separate"
            );
            catalog
                .put(
                    "acme",
                    "a.txt",
                    Some(entry(v2.clone(), EntryState::Committed)),
                    None,
                )
                .unwrap();
            assert!(catalog.source(&v1.sha256).is_err(), "v1 has no user left");
            assert_eq!(catalog.chunk_text(&v1.sha256, &v1.chunks[0]).unwrap(), None);
        }
        assert_eq!(rows(dir.path(), SOURCES), vec![v2.sha256.clone()]);
        {
            let catalog = Catalog::open(dir.path()).unwrap();
            catalog.put("acme", "a.txt", None, None).unwrap();
            assert!(catalog.entries().is_empty());
        }
        assert!(rows(dir.path(), SOURCES).is_empty());
        assert!(rows(dir.path(), CHUNK_TEXTS).is_empty());
    }

    #[test]
    fn a_second_open_of_the_same_folder_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Catalog::open(dir.path()).unwrap();
        let err = Catalog::open(dir.path()).unwrap_err();
        assert!(matches!(err, RetrievalError::IndexLocked { .. }), "{err}");
    }

    #[test]
    fn a_catalog_of_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(CATALOG_FILE)).unwrap();
            let write = db.begin_write().unwrap();
            write
                .open_table(META)
                .unwrap()
                .insert("layout_version", 999)
                .unwrap();
            write.commit().unwrap();
        }
        let err = Catalog::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("layout version 999"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("catalog.json"),
            r#"{"layout_version": 999, "documents": {}}"#,
        )
        .unwrap();
        let err = Catalog::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("layout version 999"), "{err}");
    }

    /// The on-disk format of layout 2, written with redb's own API and the entry as literal
    /// JSON: a change that breaks reading it must bump `LAYOUT_VERSION`.
    #[test]
    fn layout_2_catalog_written_by_hand_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("catalog.redb")).unwrap();
            let write = db.begin_write().unwrap();
            write
                .open_table(TableDefinition::<&str, u64>::new("meta"))
                .unwrap()
                .insert("layout_version", 2)
                .unwrap();
            write
                .open_table(TableDefinition::<&str, &[u8]>::new("documents"))
                .unwrap()
                .insert(
                    "default\0a.txt",
                    br#"{"tenant":"default","doc_id":"a.txt",
                    "current":{"title":"A","format":"asciidoc","sha256":"00","bytes":5,
                    "chunker":{"max_tokens":200,"overlap_tokens":40},
                    "chunks":[{"start":0,"end":5,"section":"NAME"}],"indexed_at":7},
                    "state":"committed"}"#
                        .as_slice(),
                )
                .unwrap();
            write
                .open_table(TableDefinition::<&str, &str>::new("sources"))
                .unwrap()
                .insert("00", "hello world")
                .unwrap();
            write
                .open_table(TableDefinition::<&str, &str>::new("chunk_texts"))
                .unwrap()
                .insert("00:0:5", "hello")
                .unwrap();
            write.commit().unwrap();
        }
        let catalog = Catalog::open(dir.path()).unwrap();
        let entry = catalog.get("default", "a.txt").unwrap();
        assert_eq!(entry.current.chunks[0].section.as_deref(), Some("NAME"));
        assert_eq!(entry.state, EntryState::Committed);
        assert_eq!(
            catalog
                .chunk_text("00", &entry.current.chunks[0])
                .unwrap()
                .as_deref(),
            Some("hello")
        );
        assert_eq!(catalog.source("00").unwrap(), "hello world");
    }

    /// A layout-1 folder (catalog.json and source files, as layout 1 wrote them) is migrated
    /// whole, and its files are gone afterwards.
    #[test]
    fn layout_1_catalog_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let text = "NAME\n----\ngit-a";
        let sha = content_hash(text);
        std::fs::create_dir(dir.path().join("sources")).unwrap();
        std::fs::write(dir.path().join("sources").join(&sha), text).unwrap();
        std::fs::write(
            dir.path().join("catalog.json"),
            format!(
                r#"{{"layout_version":1,"documents":{{"default\u0000a.txt":{{"tenant":"default","doc_id":"a.txt",
                "current":{{"title":"A","format":"asciidoc","sha256":"{sha}","bytes":16,
                "chunker":{{"max_tokens":200,"overlap_tokens":40}},
                "chunks":[{{"start":10,"end":15,"section":"NAME"}}],"indexed_at":7}},
                "state":"pending","previous":null,"deleting":false}}}}}}"#
            ),
        )
        .unwrap();
        {
            let catalog = Catalog::open(dir.path()).unwrap();
            let entry = catalog.get("default", "a.txt").unwrap();
            assert_eq!(
                entry.state,
                EntryState::Pending {
                    previous: None,
                    deleting: false
                }
            );
            assert_eq!(catalog.source(&sha).unwrap(), text);
            assert_eq!(
                catalog
                    .chunk_text(&sha, &entry.current.chunks[0])
                    .unwrap()
                    .as_deref(),
                Some("git-a")
            );
        }
        assert!(!dir.path().join("catalog.json").exists());
        assert!(!dir.path().join("sources").exists());
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            catalog.entries().len(),
            1,
            "reopened from catalog.redb alone"
        );
    }
}
