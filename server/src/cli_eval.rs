//! `switchyard eval retrieval --queries FILE.jsonl`: nDCG@10, Recall@10 and MRR@10 of BM25
//! alone, dense alone and each fusion method on an ingested index, plus per-stage latency.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use retrieval::eval::{evaluate, load_queries, Method, CUTOFF};
use retrieval::FusionMethod;
use switchyard_server::index::open_retrieval;
use switchyard_server::{Config, ConfigArgs};

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Score the retrievers on a graded query set.
    Retrieval(EvalRetrievalArgs),
}

#[derive(Debug, Args)]
pub struct EvalRetrievalArgs {
    /// JSONL lines `{"id", "query", "relevant": {"<doc id>": 1|2}}`.
    #[arg(long)]
    pub queries: PathBuf,
    /// Tenant whose documents are searched (default: the configured default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub async fn run(command: EvalCommand) -> anyhow::Result<()> {
    let EvalCommand::Retrieval(args) = command;
    let config = Config::resolve(&args.config)?;
    let queries = load_queries(&args.queries)?;
    let retrieval = open_retrieval(&config)
        .await
        .with_context(|| format!("opening the index at {}", config.index_dir.display()))?;
    let tenant = args.tenant.unwrap_or_else(|| config.default_tenant.clone());
    let stats = retrieval.store().stats();
    anyhow::ensure!(
        stats.documents > 0,
        "the index at {} is empty: run `switchyard ingest` first",
        config.index_dir.display()
    );
    let known: std::collections::HashSet<String> = retrieval
        .ingestor
        .list(Some(&tenant))
        .into_iter()
        .map(|d| d.id)
        .collect();
    let missing: Vec<&str> = queries
        .iter()
        .flat_map(|q| q.relevant.keys())
        .filter(|id| !known.contains(*id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "warning: {} judged documents are not in the index (they count as unretrievable): {}",
            missing.len(),
            missing.join(", ")
        );
    }
    let k = config.rrf_k;
    let methods = [
        Method::Bm25,
        Method::Dense,
        Method::Fused(FusionMethod::Rrf { k }),
        Method::Fused(FusionMethod::WeightedRrf {
            k,
            weights: config.fusion_weights.clone(),
        }),
        Method::Fused(FusionMethod::Dbsf),
    ];
    let report = evaluate(
        &retrieval.retriever,
        &tenant,
        &queries,
        &methods,
        config.retrieval_candidates,
    )
    .await;

    println!(
        "{} queries from {}; index {} documents / {} chunks ({}); {} candidates per retriever",
        report.queries,
        args.queries.display(),
        stats.documents,
        stats.chunks,
        retrieval.store().vector_backend(),
        config.retrieval_candidates
    );
    println!();
    println!(
        "{:<32} {:>9} {:>10} {:>8}",
        "method",
        format!("nDCG@{CUTOFF}"),
        format!("Recall@{CUTOFF}"),
        format!("MRR@{CUTOFF}")
    );
    for row in &report.scores {
        println!(
            "{:<32} {:>9.4} {:>10.4} {:>8.4}",
            row.method, row.ndcg, row.recall, row.mrr
        );
    }
    println!();
    println!("{:<10} {:>10} {:>10}", "stage", "p50 ms", "p95 ms");
    for (stage, p) in &report.latency {
        println!(
            "{:<10} {:>10.3} {:>10.3}",
            stage,
            p.p50.as_secs_f64() * 1e3,
            p.p95.as_secs_f64() * 1e3
        );
    }
    if report.degraded > 0 {
        println!();
        println!("warning: {} queries had a retriever fail", report.degraded);
    }
    Ok(())
}
