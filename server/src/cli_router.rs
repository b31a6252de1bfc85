//! `switchyard router train|eval`: train the intent router on labelled queries with the
//! server's embedding model, and evaluate it against the nearest-neighbour baseline.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use retrieval::{Embedder, EmbedderConfig};
use router::TrainConfig;
use switchyard_server::routing::{eval_router, train_router, TrainOptions};
use switchyard_server::{Config, ConfigArgs};

#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// Train a router: stratified held-out split, progress bar, safetensors + metadata.
    Train(TrainArgs),
    /// Accuracy, per-route precision/recall/F1 and confusion matrix, with the baseline.
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// JSONL lines `{"query": "...", "route": "..."}`.
    #[arg(long)]
    pub data: PathBuf,
    /// More labelled queries, trained on whole (none held out), so the held-out split of
    /// `--data` stays the same queries (repeat for several files).
    #[arg(long)]
    pub extra_data: Vec<PathBuf>,
    /// Output folder (default: the configured `router_dir`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Share of each route held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// Probability below which a prediction abstains (every route; edit router.json per route).
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    /// Buckets of hashed lexical features (words, word pairs, character trigrams) beside the
    /// embedding; 0: the embedding alone.
    #[arg(long, default_value_t = TrainOptions::default().lexical_buckets)]
    pub lexical_buckets: usize,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Labelled queries to score. When it is the router's own training file, only its
    /// held-out split is scored.
    #[arg(long)]
    pub data: PathBuf,
    /// The data the baseline indexes: the router's training files, its `--data` first, then
    /// its `--extra-data` (default: `--data`; its training split when it is the router's
    /// training file). Repeat for several files.
    #[arg(long)]
    pub train_data: Vec<PathBuf>,
    /// Router folder (default: the configured `router_dir`).
    #[arg(long)]
    pub router: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn embedder(config: &Config) -> anyhow::Result<Embedder> {
    Embedder::load(&EmbedderConfig::from_models_dir(&config.models_dir))
        .context("loading the embedding model (scripts/fetch_models.py fetches it)")
}

pub fn run(command: RouterCommand) -> anyhow::Result<()> {
    match command {
        RouterCommand::Train(args) => {
            let config = Config::resolve(&args.config)?;
            let embedder = embedder(&config)?;
            let out = args.out.unwrap_or_else(|| config.router_dir.clone());
            let options = TrainOptions {
                holdout: args.holdout,
                split_seed: args.seed,
                threshold: args.threshold,
                lexical_buckets: args.lexical_buckets,
                extra_data: args.extra_data,
                config: TrainConfig {
                    epochs: args.epochs,
                    seed: args.seed,
                    ..TrainConfig::default()
                },
            };
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len}").expect("template"),
            );
            let started = std::time::Instant::now();
            let report = train_router(
                &embedder,
                &args.data,
                &out,
                &options,
                &mut |stage, done, total| {
                    bar.set_message(stage.to_string());
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            let t = &report.meta.training;
            println!(
                "trained on {} of {} examples ({} held out) in {:.1}s; routes {:?}; saved to {}",
                t.train_examples,
                t.examples,
                t.heldout_examples,
                started.elapsed().as_secs_f64(),
                report.meta.routes,
                out.display()
            );
            println!();
            print!("{}", report.classifier.render("classifier (held out)"));
            println!();
            print!(
                "{}",
                report
                    .baseline
                    .render("baseline: nearest neighbours, k=5 (held out)")
            );
        }
        RouterCommand::Eval(args) => {
            let config = Config::resolve(&args.config)?;
            let embedder = embedder(&config)?;
            let router_dir = args.router.unwrap_or_else(|| config.router_dir.clone());
            let train_data = if args.train_data.is_empty() {
                vec![args.data.clone()]
            } else {
                args.train_data
            };
            let (classifier, baseline, n) =
                eval_router(&embedder, &router_dir, &args.data, &train_data)?;
            println!("{n} queries from {}", args.data.display());
            println!();
            print!("{}", classifier.render("classifier"));
            println!();
            print!("{}", baseline.render("baseline: nearest neighbours, k=5"));
        }
    }
    Ok(())
}
