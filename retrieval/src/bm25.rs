//! The BM25 side of hybrid retrieval: a persistent tantivy index of chunks.
//!
//! Title and body are analysed with tantivy's English stemmer (`en_stem`). Each document's
//! chunks are replaced in one commit (delete by `doc_id`, add, commit), and a commit is
//! durable when it returns, so an acknowledged ingest survives a crash of the server.
//! Every search is filtered by tenant inside the query, not after it.

use parking_lot::Mutex;
use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::catalog::doc_key;
use crate::chunk::Chunk;
use crate::error::{Result, RetrievalError};
use crate::fusion::Scored;

/// Writer heap: plenty for documents of a few MB; tantivy's minimum is 15 MB.
const WRITER_HEAP_BYTES: usize = 50_000_000;

#[derive(Debug, Clone, Copy)]
struct Fields {
    chunk_id: Field,
    doc_id: Field,
    /// `tenant` NUL `doc_id`: what a document's replace and delete select.
    doc_key: Field,
    tenant: Field,
    title: Field,
    body: Field,
}

fn schema() -> (Schema, Fields) {
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let mut builder = Schema::builder();
    let fields = Fields {
        chunk_id: builder.add_text_field("chunk_id", STRING | STORED),
        doc_id: builder.add_text_field("doc_id", STRING | STORED),
        doc_key: builder.add_text_field("doc_key", STRING),
        tenant: builder.add_text_field("tenant", STRING | STORED),
        title: builder.add_text_field("title", text.clone()),
        body: builder.add_text_field("body", text),
    };
    (builder.build(), fields)
}

/// A persistent BM25 index of chunks.
pub struct Bm25Index {
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
}

impl Bm25Index {
    /// Opens the index in `dir`, creating it if empty. An index with another schema is refused.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let index =
            Index::open_or_create(MmapDirectory::open(dir)?, schema.clone()).map_err(|err| {
                match err {
                    tantivy::TantivyError::SchemaError(reason) => {
                        RetrievalError::IncompatibleIndex {
                            path: dir.display().to_string(),
                            reason,
                        }
                    }
                    other => other.into(),
                }
            })?;
        let writer = index.writer(WRITER_HEAP_BYTES).map_err(|err| match err {
            tantivy::TantivyError::LockFailure(..) => RetrievalError::IndexLocked {
                path: dir.display().to_string(),
            },
            other => other.into(),
        })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            writer: Mutex::new(writer),
            reader,
            fields,
        })
    }

    /// Replaces every chunk of `doc_id` with `chunks`, in one durable commit.
    pub fn replace_document(
        &self,
        tenant: &str,
        doc_id: &str,
        title: &str,
        chunks: &[Chunk],
    ) -> Result<()> {
        let docs = chunks
            .iter()
            .map(|chunk| {
                let mut doc = TantivyDocument::default();
                doc.add_text(self.fields.chunk_id, &chunk.chunk_id);
                doc.add_text(self.fields.doc_id, doc_id);
                doc.add_text(self.fields.doc_key, doc_key(tenant, doc_id));
                doc.add_text(self.fields.tenant, tenant);
                let heading = match &chunk.section {
                    Some(section) if section != title => format!("{title} — {section}"),
                    _ => title.to_string(),
                };
                doc.add_text(self.fields.title, heading);
                doc.add_text(self.fields.body, &chunk.text);
                doc
            })
            .collect();
        self.rewrite(tenant, doc_id, docs)
    }

    /// Removes every chunk of (`tenant`, `doc_id`), in one durable commit.
    pub fn delete_document(&self, tenant: &str, doc_id: &str) -> Result<()> {
        self.rewrite(tenant, doc_id, Vec::new())
    }

    /// Deletes the document's chunks and adds `docs` in one commit; a failed add changes
    /// nothing.
    fn rewrite(&self, tenant: &str, doc_id: &str, docs: Vec<TantivyDocument>) -> Result<()> {
        let mut writer = self.writer.lock();
        writer.delete_term(Term::from_field_text(
            self.fields.doc_key,
            &doc_key(tenant, doc_id),
        ));
        for doc in docs {
            if let Err(err) = writer.add_document(doc) {
                writer.rollback()?;
                return Err(err.into());
            }
        }
        writer.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Chunks indexed for one document.
    pub fn count_document(&self, tenant: &str, doc_id: &str) -> Result<usize> {
        let query = TermQuery::new(
            Term::from_field_text(self.fields.doc_key, &doc_key(tenant, doc_id)),
            IndexRecordOption::Basic,
        );
        Ok(self
            .reader
            .searcher()
            .search(&query, &tantivy::collector::Count)?)
    }

    /// Chunks indexed (all tenants).
    pub fn num_chunks(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The best `limit` chunk ids of `tenant` for a free-text query, best first.
    ///
    /// User text is not query syntax: it is analysed like the indexed text (English
    /// stemming) and every term is a should-match on title and body, so quotes, colons,
    /// brackets and leading dashes (`--force`) are just words. (tantivy's own parser reads
    /// `-x` as an exclusion, and 0.27 panics on some exclusion + phrase combinations.)
    pub fn search(&self, tenant: &str, query: &str, limit: usize) -> Result<Vec<Scored>> {
        let mut analyzer = self.index.tokenizer_for_field(self.fields.body)?;
        let mut terms = std::collections::BTreeSet::new();
        let mut stream = analyzer.token_stream(query);
        while stream.advance() {
            terms.insert(stream.token().text.clone());
        }
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &terms {
            for field in [self.fields.title, self.fields.body] {
                should.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, term),
                        IndexRecordOption::WithFreqs,
                    )),
                ));
            }
        }
        let tenant_query = TermQuery::new(
            Term::from_field_text(self.fields.tenant, tenant),
            IndexRecordOption::Basic,
        );
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(BooleanQuery::new(should)) as Box<dyn Query>,
            ),
            (Occur::Must, Box::new(tenant_query) as Box<dyn Query>),
        ]);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit.max(1)).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(id) = doc.get_first(self.fields.chunk_id).and_then(|v| v.as_str()) {
                hits.push(Scored::new(id, score));
            }
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::plain_chunks as chunks_of;

    const STASH: &str = "Use git stash when you want to record the current state of the working directory and the index, but want to go back to a clean working directory.";
    const REBASE: &str = "Reapply commits on top of another base tip. Rebasing rewrites history.";

    #[test]
    fn stemmed_search_replace_delete_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Bm25Index::open(dir.path()).unwrap();
            index
                .replace_document(
                    "t",
                    "git-stash.txt",
                    "git-stash",
                    &chunks_of("git-stash.txt", STASH),
                )
                .unwrap();
            index
                .replace_document(
                    "t",
                    "git-rebase.txt",
                    "git-rebase",
                    &chunks_of("git-rebase.txt", REBASE),
                )
                .unwrap();
            // "stashing" and "records" only match through the English stemmer.
            let hits = index.search("t", "stashing records", 5).unwrap();
            assert_eq!(hits[0].id, "git-stash.txt#0");
            // Title field is searched too.
            assert_eq!(
                index.search("t", "git-rebase", 5).unwrap()[0].id,
                "git-rebase.txt#0"
            );
            // Replacing a document replaces its chunks.
            index
                .replace_document(
                    "t",
                    "git-stash.txt",
                    "git-stash",
                    &chunks_of("git-stash.txt", "Nothing about that here."),
                )
                .unwrap();
            // The old body is gone ("records" was only in it); the new one is searchable.
            assert!(index.search("t", "records", 5).unwrap().is_empty());
            assert_eq!(
                index.search("t", "nothing", 5).unwrap()[0].id,
                "git-stash.txt#0"
            );
            assert!(index
                .search("t", "working directory", 5)
                .unwrap()
                .is_empty());
            assert_eq!(index.num_chunks(), 2);
        }
        // Reopened from disk: the committed state is there.
        let index = Bm25Index::open(dir.path()).unwrap();
        assert_eq!(index.num_chunks(), 2);
        index.delete_document("t", "git-rebase.txt").unwrap();
        assert!(index.search("t", "rebasing", 5).unwrap().is_empty());
        assert_eq!(index.num_chunks(), 1);
    }

    #[test]
    fn tenants_never_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let index = Bm25Index::open(dir.path()).unwrap();
        index
            .replace_document("acme", "a.txt", "a", &chunks_of("a.txt", STASH))
            .unwrap();
        index
            .replace_document("globex", "b.txt", "b", &chunks_of("b.txt", STASH))
            .unwrap();
        let acme = index.search("acme", "stash", 10).unwrap();
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].id, "a.txt#0");
        assert!(index.search("initech", "stash", 10).unwrap().is_empty());
        // The same document id in two tenants: deleting one leaves the other.
        index
            .replace_document("globex", "a.txt", "a", &chunks_of("a.txt", STASH))
            .unwrap();
        index.delete_document("acme", "a.txt").unwrap();
        assert!(index.search("acme", "stash", 10).unwrap().is_empty());
        assert_eq!(index.search("globex", "stash", 10).unwrap().len(), 2);
    }

    #[test]
    fn a_second_writer_on_the_same_folder_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Bm25Index::open(dir.path()).unwrap();
        let err = Bm25Index::open(dir.path()).err().expect("locked");
        assert!(matches!(err, RetrievalError::IndexLocked { .. }), "{err}");
    }

    #[test]
    fn hostile_query_text_does_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        let index = Bm25Index::open(dir.path()).unwrap();
        index
            .replace_document("t", "a.txt", "a", &chunks_of("a.txt", STASH))
            .unwrap();
        for q in [
            "\"unbalanced",
            "title:",
            "(((",
            "a AND OR",
            "*",
            "",
            "-x \"a b\" -y",
        ] {
            index.search("t", q, 5).unwrap();
        }
        // Leading dashes are words, not exclusions.
        assert_eq!(index.search("t", "-stash", 5).unwrap().len(), 1);
    }
}
