//! `switchyard query-adapter train`: trains the query adapter (`retrieval::query_adapter`)
//! for the configured index and writes it to `query_adapter_dir`, where `serve` and `eval`
//! pick it up.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use retrieval::query_adapter::train_for_index;
use retrieval::AdapterTrainConfig;
use switchyard_server::index::open_retrieval;
use switchyard_server::{Config, ConfigArgs};

#[derive(Debug, Subcommand)]
pub enum QueryAdapterCommand {
    /// Train on the index's own headings and definitions plus hand-written questions.
    Train(TrainArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Retrieval query files (`{"query", "relevant": {doc: grade}}`) to train on; the chunks
    /// of each grade-2 page answer. Never an evaluation set. Repeat for several files.
    #[arg(long)]
    pub questions: Vec<PathBuf>,
    /// Output folder (default: the configured `query_adapter_dir`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Tenant whose chunks are trained on (default: the configured default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, default_value_t = AdapterTrainConfig::default().steps)]
    pub steps: usize,
    #[arg(long, default_value_t = AdapterTrainConfig::default().question_repeat)]
    pub question_repeat: usize,
    #[arg(long, default_value_t = AdapterTrainConfig::default().seed)]
    pub seed: u64,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub async fn run(command: QueryAdapterCommand) -> anyhow::Result<()> {
    let QueryAdapterCommand::Train(args) = command;
    let mut config = Config::resolve(&args.config)?;
    // Trained from the embedder's own vectors, never through an adapter already there.
    config.query_adapter_enabled = false;
    let retrieval = open_retrieval(&config)
        .await
        .with_context(|| format!("opening the index at {}", config.index_dir.display()))?;
    let tenant = args.tenant.unwrap_or_else(|| config.default_tenant.clone());
    let train_config = AdapterTrainConfig {
        steps: args.steps,
        question_repeat: args.question_repeat,
        seed: args.seed,
        ..AdapterTrainConfig::default()
    };
    let started = std::time::Instant::now();
    let adapter =
        train_for_index(retrieval.store(), &tenant, &args.questions, &train_config).await?;
    let out = args.out.unwrap_or_else(|| config.query_adapter_dir.clone());
    adapter.save(&out)?;
    let meta = adapter.meta();
    println!(
        "query adapter: {} chunks, {} synthetic pairs, {} questions from {} file(s); loss {:.4} -> {:.4}; {:.1} s; written to {}",
        meta.chunks,
        meta.synthetic_pairs,
        meta.question_files.iter().map(|f| f.questions).sum::<usize>(),
        meta.question_files.len(),
        meta.loss_before,
        meta.loss_after,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
