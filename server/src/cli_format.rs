//! The format adapter's data and measurement, built on exactly the prompts the `rag` route
//! sends (the pipeline's ground stage over the real hybrid retriever, `format_eval::rag_prompt`):
//!
//! - `switchyard format dataset`: questions with known quotes (`adapters/format/
//!   make_questions.py`) → JSONL `{id, messages, target}` for `adapters/format/train.py`; a
//!   question is kept only when retrieval puts the chunk holding its quote among the sources.
//! - `switchyard format eval`: on held-out queries, the share of answers that parse, that
//!   match the answer schema, and of quotes found verbatim in the cited source, for the base
//!   and an adapter, with constrained decoding off and on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;

use adapters::{AdapterRegistry, LlamaAdapterHost, LlamaConfig, LlamaCppBackend, RegistryConfig};
use switchyard_server::format_eval::{measure, rag_prompt};
use switchyard_server::index::{open_retrieval, Retrieval};
use switchyard_server::pipeline::verify::normalize_ws;
use switchyard_server::{Config, ConfigArgs};

#[derive(Debug, Subcommand)]
pub enum FormatCommand {
    /// Build the training set: each question's rag prompt and its JSON answer.
    Dataset(DatasetArgs),
    /// Measure schema validity and verbatim quotes, base vs adapter, constraints off and on.
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// JSONL `{id, question, answer, quote}` (make_questions.py's output).
    #[arg(long)]
    pub questions: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// JSONL with a `query` field per line (e.g. retrieval/eval/git-docs-dev.jsonl).
    #[arg(long)]
    pub queries: PathBuf,
    /// A PEFT adapter folder (e.g. adapters/format/fmt-v1).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Queries measured (the first N of the file).
    #[arg(long, default_value_t = 30)]
    pub limit: usize,
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Deserialize)]
struct Question {
    id: String,
    question: String,
    answer: String,
    quote: String,
}

#[derive(Debug, Deserialize)]
struct Query {
    query: String,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))
        })
        .collect()
}

pub async fn run(command: FormatCommand) -> anyhow::Result<()> {
    match command {
        FormatCommand::Dataset(args) => dataset(args).await,
        FormatCommand::Eval(args) => eval(args).await,
    }
}

async fn dataset(args: DatasetArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args.config)?;
    let retrieval = open_index(&config).await?;
    let questions: Vec<Question> = read_jsonl(&args.questions)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out)?);
    let (mut kept, mut missed) = (0, 0);
    for question in &questions {
        let (messages, citations) =
            rag_prompt(&retrieval, &config.default_tenant, &question.question).await?;
        let quote = normalize_ws(&question.quote);
        let Some(source) = citations
            .iter()
            .find(|c| normalize_ws(&c.text).contains(&quote))
        else {
            missed += 1;
            continue;
        };
        // Compact, keys in the schema's order: what constrained decoding produces, so the
        // adapter learns the same token sequence the grammar allows.
        let target = json!({
            "answer": question.answer,
            "citations": [{"index": source.index, "quote": quote}],
        })
        .to_string();
        let messages: Vec<_> = messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        serde_json::to_writer(
            &mut out,
            &json!({"id": question.id, "messages": messages, "target": target}),
        )?;
        out.write_all(b"\n")?;
        kept += 1;
    }
    out.flush()?;
    println!(
        "{kept} examples written to {} ({missed} of {} questions skipped: their quote was not in the retrieved sources)",
        args.out.display(),
        questions.len()
    );
    Ok(())
}

async fn open_index(config: &Config) -> anyhow::Result<Retrieval> {
    let retrieval = open_retrieval(config)
        .await
        .with_context(|| format!("opening the index at {}", config.index_dir.display()))?;
    anyhow::ensure!(
        retrieval.store().stats().documents > 0,
        "the index at {} is empty: run `switchyard ingest` first",
        config.index_dir.display()
    );
    Ok(retrieval)
}

async fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args.config)?;
    let retrieval = open_index(&config).await?;
    let queries: Vec<Query> = read_jsonl(&args.queries)?;
    let queries = &queries[..args.limit.min(queries.len())];

    // The configured GGUF on llama.cpp, the adapter applied to it at runtime (as served).
    let engine =
        Arc::new(LlamaCppBackend::load(LlamaConfig::new(config.model_path.clone(), "base")).await?);
    let host = LlamaAdapterHost::new();
    host.attach(engine.clone())?;
    let base: Arc<dyn adapters::Backend> = engine;
    let scratch =
        std::env::temp_dir().join(format!("switchyard-format-eval-{}", std::process::id()));
    let adapter = args
        .adapter
        .canonicalize()
        .with_context(|| format!("adapter {}", args.adapter.display()))?;
    let registry = AdapterRegistry::new(
        RegistryConfig {
            adapter_root: adapter.parent().context("adapter folder parent")?.into(),
            work_dir: scratch.join("generations"),
            max_rank: config.adapter_max_rank,
            max_resident: 1,
        },
        Arc::new(host),
    )?;
    let name = adapter.file_name().context("adapter folder name")?;
    let info = registry.load("format", name.as_ref()).await?;
    let (tuned, _) = registry.engine("format").context("loaded adapter")?;
    println!(
        "adapter {} generation {}, {} queries from {}",
        adapter.display(),
        &info.generation[..12],
        queries.len(),
        args.queries.display()
    );

    let mut prompts = Vec::with_capacity(queries.len());
    for query in queries {
        prompts.push(rag_prompt(&retrieval, &config.default_tenant, &query.query).await?);
    }
    for (label, engine) in [("base", &base), ("adapter", &tuned)] {
        for constrained in [false, true] {
            let started = std::time::Instant::now();
            let tally = measure(engine.as_ref(), &prompts, constrained, args.max_tokens).await?;
            let mode = if constrained { "on" } else { "off" };
            println!(
                "{}  ({:.0} s)",
                tally.line(&format!("{label}, constraints {mode}")),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
