//! `switchyard ingest <dir or files>`: adds or replaces documents in the configured index,
//! with a progress bar. Unchanged documents are skipped by content hash; one document failing
//! does not stop the others (the command exits non-zero at the end).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use retrieval::{DocFormat, IngestStatus, NewDocument};
use switchyard_server::index::open_retrieval;
use switchyard_server::{Config, ConfigArgs};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Folders (documents found recursively; id = path relative to the folder) or files
    /// (id = file name).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tenant of the documents (default: the configured default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// (document id, file) pairs of every supported file under `paths`, sorted by id.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, base, out)?;
            } else if supported(&path) {
                let id = path.strip_prefix(base)?.to_string_lossy().into_owned();
                out.push((id, path));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, path, &mut files)?;
        } else if path.is_file() {
            let name = path.file_name().context("file has a name")?;
            files.push((name.to_string_lossy().into_owned(), path.clone()));
        } else {
            bail!("{} is neither a file nor a folder", path.display());
        }
    }
    files.sort();
    Ok(files)
}

/// Text, Markdown and AsciiDoc, by extension.
fn supported(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    DocFormat::detect(&name, "").is_some()
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args.config)?;
    let files = collect(&args.paths)?;
    if files.is_empty() {
        bail!("no .txt, .md or .adoc files under the given paths");
    }
    let retrieval = open_retrieval(&config)
        .await
        .with_context(|| format!("opening the index at {}", config.index_dir.display()))?;
    let tenant = args.tenant.unwrap_or_else(|| config.default_tenant.clone());

    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} docs {elapsed_precise} eta {eta} {wide_msg}",
        )
        .expect("valid template"),
    );
    let started = Instant::now();
    let (mut created, mut updated, mut unchanged, mut chunks) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (id, path) in &files {
        bar.set_message(id.clone());
        let outcome = match std::fs::read_to_string(path) {
            Ok(text) => retrieval
                .ingestor
                .upsert(NewDocument {
                    tenant: tenant.clone(),
                    doc_id: id.clone(),
                    text,
                    title: None,
                    format: None,
                })
                .await
                .map_err(anyhow::Error::from),
            Err(err) => Err(anyhow::Error::from(err).context("not a UTF-8 text file")),
        };
        match outcome {
            Ok(report) => {
                match report.status {
                    IngestStatus::Created => created += 1,
                    IngestStatus::Updated => updated += 1,
                    IngestStatus::Unchanged => unchanged += 1,
                }
                if report.status != IngestStatus::Unchanged {
                    chunks += report.chunks;
                }
            }
            Err(err) => {
                bar.println(format!("failed: {id}: {err:#}"));
                failures.push(id.clone());
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let stats = retrieval.store().stats();
    println!(
        "ingested {} files in {secs:.1}s: {created} created, {updated} updated, {unchanged} unchanged, {} failed; \
         {chunks} chunks embedded ({:.1} chunks/s); index now {} documents, {} chunks ({})",
        files.len(),
        failures.len(),
        chunks as f64 / secs.max(1e-9),
        stats.documents,
        stats.chunks,
        retrieval.store().vector_backend(),
    );
    if !failures.is_empty() {
        bail!(
            "{} documents failed: {}",
            failures.len(),
            failures.join(", ")
        );
    }
    Ok(())
}
