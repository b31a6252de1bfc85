//! Ingestion: upsert, delete and list documents, all-or-nothing per document across the
//! BM25 index and the vector store.
//!
//! An upsert is: validate, hash (an unchanged document is skipped), chunk and embed (nothing
//! written yet), store the source, mark the catalog entry pending, write vectors then BM25,
//! commit the entry. A failure after the pending mark puts the previous version back in both
//! indexes before the error is returned; a crash there is undone the same way on the next
//! open. Writes are serialised: one document at a time. Each catalog step is one small
//! transaction (see [`crate::catalog`]), so searches never wait for a write.

use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogEntry, DocumentVersion, EntryState};
use crate::chunk::{document_title, DocFormat};
use crate::error::{Result, RetrievalError};
use crate::store::IndexStore;
use std::sync::Arc;

/// Longest document id accepted, in bytes.
pub const MAX_DOC_ID_BYTES: usize = 512;
/// Longest tenant name accepted, in bytes.
pub const MAX_TENANT_BYTES: usize = 128;

/// A document to add or replace.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub tenant: String,
    pub doc_id: String,
    pub text: String,
    /// Defaults to the document's own title (see [`document_title`]).
    pub title: Option<String>,
    /// Defaults to detection from the id's extension; plain text when unknown.
    pub format: Option<DocFormat>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    Created,
    Updated,
    Unchanged,
}

/// The result of an upsert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    pub tenant: String,
    pub id: String,
    pub status: IngestStatus,
    pub chunks: usize,
    pub sha256: String,
}

/// A document as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocumentInfo {
    pub tenant: String,
    pub id: String,
    pub title: String,
    pub format: DocFormat,
    pub chunks: usize,
    pub bytes: usize,
    pub sha256: String,
    pub indexed_at: u64,
}

impl DocumentInfo {
    /// The acknowledged version of an entry, if it has one.
    fn of(entry: &CatalogEntry) -> Option<Self> {
        let version = entry.acknowledged()?;
        Some(Self {
            tenant: entry.tenant.clone(),
            id: entry.doc_id.clone(),
            title: version.title.clone(),
            format: version.format,
            chunks: version.chunks.len(),
            bytes: version.bytes,
            sha256: version.sha256.clone(),
            indexed_at: version.indexed_at,
        })
    }
}

fn invalid(what: impl Into<String>) -> RetrievalError {
    RetrievalError::InvalidDocument(what.into())
}

/// Checks a tenant name: 1–128 bytes of ASCII letters, digits, `-`, `_`, `.`.
pub fn validate_tenant(tenant: &str) -> Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_BYTES
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "tenant must be 1-{MAX_TENANT_BYTES} characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Checks a document id: 1–512 bytes, no control characters, no `#` (it separates the chunk
/// number in chunk ids).
pub fn validate_doc_id(doc_id: &str) -> Result<()> {
    if doc_id.trim().is_empty() || doc_id.len() > MAX_DOC_ID_BYTES {
        return Err(invalid(format!(
            "document id must be 1-{MAX_DOC_ID_BYTES} bytes and not blank"
        )));
    }
    if doc_id.chars().any(|c| c.is_control() || c == '#') {
        return Err(invalid(
            "document id must not contain control characters or '#'",
        ));
    }
    Ok(())
}

/// Adds, replaces, removes and lists documents of an [`IndexStore`].
pub struct Ingestor {
    store: Arc<IndexStore>,
    writes: tokio::sync::Mutex<()>,
}

impl Ingestor {
    pub fn new(store: Arc<IndexStore>) -> Self {
        Self {
            store,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Arc<IndexStore> {
        &self.store
    }

    /// Adds or replaces a document in both indexes, or skips it when its text, title and
    /// chunking are unchanged. On error the indexes hold what they held before.
    pub async fn upsert(&self, doc: NewDocument) -> Result<IngestReport> {
        validate_tenant(&doc.tenant)?;
        validate_doc_id(&doc.doc_id)?;
        if doc.text.trim().is_empty() {
            return Err(invalid("document text is empty"));
        }
        let format = doc
            .format
            .or_else(|| DocFormat::detect(&doc.doc_id, &doc.text))
            .unwrap_or(DocFormat::Text);
        let title = doc
            .title
            .clone()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| document_title(&doc.doc_id, &doc.text, format));
        let sha256 = crate::catalog::content_hash(&doc.text);
        let chunker = self.store.chunker;

        let _writing = self.writes.lock().await;
        let existing = self.store.catalog.get(&doc.tenant, &doc.doc_id);
        if let Some(entry) = &existing {
            let same = entry.state == EntryState::Committed
                && entry.current.sha256 == sha256
                && entry.current.title == title
                && entry.current.format == format
                && entry.current.chunker == chunker;
            if same {
                return Ok(self.report(&doc, IngestStatus::Unchanged, &entry.current));
            }
        }
        // What the indexes hold now: for an entry left pending by a failed restore, that is
        // its previous version (the restore will be retried by the rollback below).
        let previous = existing.as_ref().and_then(|entry| match &entry.state {
            EntryState::Committed => Some(entry.current.clone()),
            EntryState::Pending { previous, .. } => previous.clone(),
        });

        let prepared = self
            .store
            .prepare(&doc.doc_id, &doc.text, title, format, chunker)
            .await?;
        // The pending mark (with the source and its chunk texts), then, once both indexes
        // hold the new version, the commit.
        let put = |state: EntryState, source: Option<&str>| {
            let entry = CatalogEntry {
                tenant: doc.tenant.clone(),
                doc_id: doc.doc_id.clone(),
                current: prepared.version.clone(),
                state,
            };
            self.store
                .catalog
                .put(&doc.tenant, &doc.doc_id, Some(entry), source)
        };
        let pending = EntryState::Pending {
            previous: previous.clone(),
            deleting: false,
        };
        put(pending, Some(&doc.text))?;
        if let Err(err) = self
            .store
            .apply(&doc.tenant, &doc.doc_id, Some(&prepared))
            .await
        {
            self.roll_back(&doc.tenant, &doc.doc_id, previous).await;
            return Err(err);
        }
        put(EntryState::Committed, None)?;
        let status = if existing.is_some() {
            IngestStatus::Updated
        } else {
            IngestStatus::Created
        };
        Ok(self.report(&doc, status, &prepared.version))
    }

    /// Removes a document from both indexes. On error the indexes still hold it.
    pub async fn delete(&self, tenant: &str, doc_id: &str) -> Result<DocumentInfo> {
        let _writing = self.writes.lock().await;
        let entry = self
            .store
            .catalog
            .get(tenant, doc_id)
            .filter(|entry| entry.acknowledged().is_some())
            .ok_or_else(|| RetrievalError::DocumentNotFound {
                doc_id: doc_id.to_string(),
            })?;
        let info = DocumentInfo::of(&entry).expect("acknowledged");
        let previous = match &entry.state {
            EntryState::Committed => Some(entry.current.clone()),
            EntryState::Pending { previous, .. } => previous.clone(),
        };
        self.store.catalog.put(
            tenant,
            doc_id,
            Some(CatalogEntry {
                state: EntryState::Pending {
                    previous: previous.clone(),
                    deleting: true,
                },
                ..(*entry).clone()
            }),
            None,
        )?;
        if let Err(err) = self.store.apply(tenant, doc_id, None).await {
            self.roll_back(tenant, doc_id, previous).await;
            return Err(err);
        }
        self.store.catalog.put(tenant, doc_id, None, None)?;
        Ok(info)
    }

    /// Documents, ordered by tenant then id; one tenant's when `tenant` is given.
    pub fn list(&self, tenant: Option<&str>) -> Vec<DocumentInfo> {
        self.store
            .catalog
            .entries()
            .iter()
            .filter(|e| tenant.is_none_or(|t| e.tenant == t))
            .filter_map(|e| DocumentInfo::of(e))
            .collect()
    }

    /// One document.
    pub fn get(&self, tenant: &str, doc_id: &str) -> Option<DocumentInfo> {
        self.store
            .catalog
            .get(tenant, doc_id)
            .and_then(|e| DocumentInfo::of(&e))
    }

    async fn roll_back(&self, tenant: &str, doc_id: &str, previous: Option<DocumentVersion>) {
        if let Err(err) = self.store.restore(tenant, doc_id, previous).await {
            // The entry stays pending: the next write of this document or the next open
            // retries the restore.
            tracing::error!(tenant, doc_id, error = %err, "index: rollback failed; will retry on restart");
        }
    }

    fn report(
        &self,
        doc: &NewDocument,
        status: IngestStatus,
        version: &DocumentVersion,
    ) -> IngestReport {
        IngestReport {
            tenant: doc.tenant.clone(),
            id: doc.doc_id.clone(),
            status,
            chunks: version.chunks.len(),
            sha256: version.sha256.clone(),
        }
    }
}
