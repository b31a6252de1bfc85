//! `switchyard eval`: routing, retrieval and end-to-end answers on query files, in one report
//! (`switchyard_server::evaluation`), measured on the parts the server serves with this
//! configuration: the router in `router_dir`, the index in `index_dir`, the model at
//! `model_path` answering through the request pipeline.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use switchyard_server::evaluation::{evaluate, EvalPlan};
use switchyard_server::state::AppState;
use switchyard_server::{load_engine, Config, ConfigArgs};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Routing queries, JSONL `{"query", "route"}` (repeat for several files). When it is the
    /// router's training file, only its held-out split is scored.
    #[arg(long)]
    pub routing: Vec<PathBuf>,
    /// Retrieval queries, JSONL `{"query", "relevant": {"<doc id>": 1|2}}` (repeat for
    /// several files); other fields on a line (an `id`, notes) are ignored.
    #[arg(long)]
    pub retrieval: Vec<PathBuf>,
    /// Answers generated through the pipeline for the first queries of each retrieval file
    /// (0: retrieval scores only).
    #[arg(long, default_value_t = 10)]
    pub answers: usize,
    /// The router's training file, from which the nearest-neighbour baseline is built with
    /// the extra files the router records (repeat to name other files).
    #[arg(long, default_value = "router/data/routes.jsonl")]
    pub router_train_data: Vec<PathBuf>,
    /// Tenant whose documents are searched (default: the configured default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Also write each retrieval file's BM25 and dense candidate lists into this folder
    /// (`<file stem>.ranked.jsonl`), to study fusion offline.
    #[arg(long)]
    pub ranked_lists_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.routing.is_empty() || !args.retrieval.is_empty(),
        "nothing to evaluate: give --routing and/or --retrieval query files"
    );
    let mut config = Config::resolve(&args.config)?;
    config.router_enabled = !args.routing.is_empty() || config.router_enabled;
    config.retrieval_enabled = !args.retrieval.is_empty();
    let answers = if args.retrieval.is_empty() {
        0
    } else {
        args.answers
    };
    let plan = EvalPlan {
        routing: args.routing,
        router_train_data: args.router_train_data,
        retrieval: args.retrieval,
        answers,
        tenant: args.tenant.unwrap_or_else(|| config.default_tenant.clone()),
        ranked_lists_dir: args.ranked_lists_dir,
    };
    let state = AppState::new(config.clone());
    if answers > 0 {
        let engine = load_engine(&config, None)
            .await
            .with_context(|| format!("loading the model {}", config.model_path.display()))?;
        state.set_ready(engine);
    }
    switchyard_server::app::load_retrieval_and_routing(state.clone()).await;
    if config.retrieval_enabled {
        let index = state
            .retrieval()
            .with_context(|| format!("opening the index at {}", config.index_dir.display()))?;
        anyhow::ensure!(
            index.store().stats().documents > 0,
            "the index at {} is empty: run `switchyard ingest` first",
            config.index_dir.display()
        );
    }
    let report = evaluate(&state, &plan).await?;
    print!("{}", report.render(&config));
    Ok(())
}
