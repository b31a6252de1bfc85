//! `switchyard eval`: one report over query files of the documented formats, measured on the
//! served parts: routing (the loaded router against the nearest-neighbour baseline, and its
//! classification latency), retrieval (every method on the index: nDCG@10, Recall@10,
//! MRR@10, and the share whose answering page is among the `rag_top_k` chunks the model is
//! given), and end-to-end answers through [`Pipeline::answer`] (the route taken, whether the
//! sources hold the answering page, citations verified, JSON schema validity, each stage's
//! latency).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use adapters::{ChatMessage, GenerationRequest, Role, SamplingParams};
use retrieval::eval::{
    evaluate as evaluate_retrieval, load_queries, EvalQuery, EvalReport, Method,
};
use retrieval::FusionMethod;
use router::{load_examples, Evaluation};

use crate::config::{AnswerFormat, Config, Route};
use crate::error::{ApiError, Result};
use crate::pipeline::sources::matches_answer_schema;
use crate::pipeline::tools::ToolSet;
use crate::pipeline::{Pipeline, PipelineRequest};
use crate::routing::{classify, eval_router};
use crate::state::AppState;

/// What to measure.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    /// `{"query", "route"}` lines (other fields ignored).
    pub routing: Vec<PathBuf>,
    /// The router's training files (its data file, then any extra ones): the baseline is
    /// built from them (from the data file's training split when a routing file is that file).
    pub router_train_data: Vec<PathBuf>,
    /// `{"query", "relevant": {"doc": 1|2}}` lines (other fields ignored).
    pub retrieval: Vec<PathBuf>,
    /// Answers generated per retrieval file (its first queries); 0: none.
    pub answers: usize,
    pub tenant: String,
    /// When set, each retrieval file's BM25 and dense candidate lists are written there as
    /// `<file stem>.ranked.jsonl` (`{"query", "relevant", "bm25": [[chunk id, score]..],
    /// "dense": [..]}`), to study fusion and reranking offline.
    pub ranked_lists_dir: Option<PathBuf>,
}

/// p50 and p95 of a stage, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            p50_ms: at(0.5).as_secs_f64() * 1e3,
            p95_ms: at(0.95).as_secs_f64() * 1e3,
        })
    }
}

pub struct RoutingReport {
    pub file: PathBuf,
    pub queries: usize,
    pub classifier: Evaluation,
    pub baseline: Evaluation,
    /// One query's classification (embedding included), over the file's queries.
    pub latency: Option<Latency>,
}

pub struct RetrievalReport {
    pub file: PathBuf,
    pub report: EvalReport,
    /// Judged documents that are not in the index (they count as never retrieved).
    pub missing: Vec<String>,
    /// Whether dense search mapped queries through the query adapter.
    pub query_adapter: bool,
}

/// End-to-end answers to a retrieval file's first queries.
#[derive(Default)]
pub struct AnswerReport {
    pub file: PathBuf,
    pub answers: usize,
    /// Requests that failed (their error is counted, not scored).
    pub failed: usize,
    pub routed_rag: usize,
    /// Answers whose sources hold a grade-2 page.
    pub sources_hold_answer: usize,
    /// Text answers: with at least one valid `[n]` marker, and markers removed in all.
    pub cited: usize,
    pub markers_removed: usize,
    /// JSON answers: quotes kept (found in their source) and removed, and answers that match
    /// the answer schema.
    pub quotes_verified: usize,
    pub quotes_removed: usize,
    pub json_answers: usize,
    pub schema_valid: usize,
    pub route: Option<Latency>,
    pub ground: Option<Latency>,
    pub first_event: Option<Latency>,
    pub total: Option<Latency>,
}

pub struct Report {
    pub routing: Vec<RoutingReport>,
    pub retrieval: Vec<RetrievalReport>,
    pub answers: Vec<AnswerReport>,
}

/// Runs the plan on a server state whose parts are loaded (the engine only when answers are
/// asked for).
pub async fn evaluate(state: &AppState, plan: &EvalPlan) -> Result<Report> {
    let mut report = Report {
        routing: Vec::new(),
        retrieval: Vec::new(),
        answers: Vec::new(),
    };
    for file in &plan.routing {
        report
            .routing
            .push(routing(state, file, &plan.router_train_data).await?);
    }
    for file in &plan.retrieval {
        let queries = load_queries(file).map_err(ApiError::from)?;
        report
            .retrieval
            .push(retrieval(state, file, &queries, &plan.tenant).await?);
        if let Some(dir) = &plan.ranked_lists_dir {
            write_ranked_lists(state, file, &queries, &plan.tenant, dir).await?;
        }
        if plan.answers > 0 {
            let first = &queries[..plan.answers.min(queries.len())];
            report
                .answers
                .push(answers(state, file, first, &plan.tenant).await?);
        }
    }
    Ok(report)
}

async fn routing(state: &AppState, file: &Path, train_data: &[PathBuf]) -> Result<RoutingReport> {
    let router_dir = state.config().router_dir.clone();
    let (embedder, router) = state.router()?.ok_or_else(|| {
        ApiError::RouterUnavailable(format!(
            "no router in {} (train one with `switchyard router train`), or routing is off",
            router_dir.display()
        ))
    })?;
    let (file, train_data) = (file.to_path_buf(), train_data.to_vec());
    let fallback = state.config().router_fallback_route;
    tokio::task::spawn_blocking(move || {
        let (classifier, baseline, queries) =
            eval_router(&embedder, &router_dir, &file, &train_data)
                .map_err(|e| ApiError::invalid(e.to_string(), "routing"))?;
        let (examples, _) =
            load_examples(&file).map_err(|e| ApiError::invalid(e.to_string(), "routing"))?;
        let mut took = Vec::new();
        for example in examples.iter().take(200) {
            let (_, elapsed) = classify(&embedder, &router, &example.query, fallback.as_str())?;
            took.push(elapsed);
        }
        Ok(RoutingReport {
            file,
            queries,
            classifier,
            baseline,
            latency: Latency::of(took),
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

async fn retrieval(
    state: &AppState,
    file: &Path,
    queries: &[EvalQuery],
    tenant: &str,
) -> Result<RetrievalReport> {
    let config = state.config();
    let index = state.retrieval()?;
    let known: std::collections::HashSet<String> = index
        .ingestor
        .list(Some(tenant))
        .into_iter()
        .map(|d| d.id)
        .collect();
    let mut missing: Vec<String> = queries
        .iter()
        .flat_map(|q| q.relevant.keys())
        .filter(|id| !known.contains(*id))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
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
    let report = evaluate_retrieval(
        &index.retriever,
        tenant,
        queries,
        &methods,
        config.retrieval_candidates,
        config.rag_top_k,
    )
    .await;
    Ok(RetrievalReport {
        file: file.to_path_buf(),
        report,
        missing,
        query_adapter: index.retriever.query_adapter().is_some(),
    })
}

async fn write_ranked_lists(
    state: &AppState,
    file: &Path,
    queries: &[EvalQuery],
    tenant: &str,
    dir: &Path,
) -> Result<()> {
    let index = state.retrieval()?;
    let candidates = state.config().retrieval_candidates;
    let as_pairs = |list: Option<Vec<retrieval::Scored>>| -> Vec<(String, f32)> {
        list.unwrap_or_default()
            .into_iter()
            .map(|s| (s.id, s.score))
            .collect()
    };
    let mut out = String::new();
    for query in queries {
        let lists = index
            .retriever
            .ranked_lists(tenant, &query.query, candidates)
            .await;
        let line = serde_json::json!({
            "query": query.query,
            "relevant": query.relevant,
            "bm25": as_pairs(lists.bm25),
            "dense": as_pairs(lists.dense),
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    let stem = file.file_stem().unwrap_or_default().to_string_lossy();
    let path = dir.join(format!("{stem}.ranked.jsonl"));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, out))
        .map_err(|e| ApiError::Internal(format!("writing {}: {e}", path.display())))
}

/// Asks each query as a client would (the base model, the router deciding, greedy) and scores
/// what the pipeline answered.
async fn answers(
    state: &AppState,
    file: &Path,
    queries: &[EvalQuery],
    tenant: &str,
) -> Result<AnswerReport> {
    let config = state.config();
    let pipeline = Pipeline::new(state.clone());
    let mut report = AnswerReport {
        file: file.to_path_buf(),
        ..AnswerReport::default()
    };
    let (mut route, mut ground, mut first_event, mut total) = (vec![], vec![], vec![], vec![]);
    for query in queries {
        let started = Instant::now();
        let request = PipelineRequest {
            model: config.model_id.clone(),
            tenant: tenant.to_string(),
            generation: GenerationRequest {
                messages: vec![ChatMessage::new(Role::User, query.query.clone())],
                sampling: SamplingParams {
                    temperature: 0.0,
                    max_tokens: config.default_max_tokens,
                    ..SamplingParams::default()
                },
                json_schema: None,
            },
            route: None,
            follows_tool_result: false,
            tools: ToolSet::none(),
            max_tokens_given: false,
        };
        let answer = match pipeline.answer(request).await {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(query = %query.id, error = %err, "evaluation request failed");
                report.failed += 1;
                continue;
            }
        };
        report.answers += 1;
        route.push(answer.timings.route);
        ground.extend(answer.timings.ground);
        first_event.push(answer.timings.first_event);
        let routed_rag = answer.route == Route::Rag;
        let sources = answer
            .grounding
            .as_ref()
            .map_or(&[][..], |(s, _)| s.as_slice());
        let holds_answer = sources
            .iter()
            .any(|s| query.relevant.get(&s.doc_id) == Some(&2));
        let source_count = sources.len();
        let answered = match answer.collect().await {
            Ok(answered) => answered,
            Err(err) => {
                tracing::warn!(query = %query.id, error = %err, "evaluation answer failed");
                report.failed += 1;
                report.answers -= 1;
                continue;
            }
        };
        total.push(started.elapsed());
        report.routed_rag += usize::from(routed_rag);
        report.sources_hold_answer += usize::from(holds_answer);
        let Some(info) = answered.retrieval.filter(|_| routed_rag) else {
            continue;
        };
        if config.rag_answer_format == AnswerFormat::Json {
            report.json_answers += 1;
            let removed = info.invalid_quotes.unwrap_or(0);
            report.quotes_removed += removed;
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&answered.text) {
                report.quotes_verified += value["citations"].as_array().map_or(0, Vec::len);
                report.schema_valid += usize::from(matches_answer_schema(&value, source_count));
            }
        } else {
            report.cited += usize::from(info.cited.as_ref().is_some_and(|c| !c.is_empty()));
            report.markers_removed += info.invalid_markers_removed.unwrap_or(0);
        }
    }
    report.route = Latency::of(route);
    report.ground = Latency::of(ground);
    report.first_event = Latency::of(first_event);
    report.total = Latency::of(total);
    Ok(report)
}

impl Report {
    /// The tables `switchyard eval` prints.
    pub fn render(&self, config: &Config) -> String {
        let mut out = String::new();
        let share = |n: usize, of: usize| {
            if of == 0 {
                "     -".to_string()
            } else {
                format!("{:6.3}", n as f64 / of as f64)
            }
        };
        let ms = |l: Option<Latency>| {
            l.map_or("-".to_string(), |l| {
                format!("{:.1} / {:.1}", l.p50_ms, l.p95_ms)
            })
        };
        if !self.routing.is_empty() {
            let _ = writeln!(
                out,
                "## Routing (router in {})\n",
                config.router_dir.display()
            );
            let _ = writeln!(
                out,
                "{:<44} {:>7} {:>10} {:>9} {:>7} {:>20}",
                "file", "queries", "classifier", "baseline", "margin", "p50 / p95 ms"
            );
            for r in &self.routing {
                let _ = writeln!(
                    out,
                    "{:<44} {:>7} {:>10.4} {:>9.4} {:>+7.4} {:>20}",
                    r.file.display(),
                    r.queries,
                    r.classifier.accuracy,
                    r.baseline.accuracy,
                    r.classifier.accuracy - r.baseline.accuracy,
                    ms(r.latency)
                );
            }
            for r in &self.routing {
                let _ = writeln!(out);
                out.push_str(
                    &r.classifier
                        .render(&format!("classifier on {}", r.file.display())),
                );
            }
            let _ = writeln!(out);
        }
        if !self.retrieval.is_empty() {
            let _ = writeln!(
                out,
                "## Retrieval (fusion {:?}, {} candidates per retriever, rag_top_k {}, query adapter {})\n",
                config.fusion,
                config.retrieval_candidates,
                config.rag_top_k,
                if self.retrieval.iter().all(|r| r.query_adapter) {
                    format!("from {}", config.query_adapter_dir.display())
                } else {
                    "off".to_string()
                }
            );
            for r in &self.retrieval {
                let _ = writeln!(out, "{} ({} queries)", r.file.display(), r.report.queries);
                let _ = writeln!(
                    out,
                    "{:<32} {:>8} {:>10} {:>7} {:>14}",
                    "method",
                    "nDCG@10",
                    "Recall@10",
                    "MRR@10",
                    format!("answer@top{}", config.rag_top_k)
                );
                for row in &r.report.scores {
                    let _ = writeln!(
                        out,
                        "{:<32} {:>8.4} {:>10.4} {:>7.4} {:>14.4}",
                        row.method, row.ndcg, row.recall, row.mrr, row.answer_in_top_k
                    );
                }
                let stages: Vec<String> = r
                    .report
                    .latency
                    .iter()
                    .map(|(stage, p)| {
                        format!(
                            "{stage} {:.1}/{:.1}",
                            p.p50.as_secs_f64() * 1e3,
                            p.p95.as_secs_f64() * 1e3
                        )
                    })
                    .collect();
                let _ = writeln!(out, "stage p50/p95 ms: {}", stages.join(", "));
                if !r.missing.is_empty() {
                    let _ = writeln!(
                        out,
                        "warning: {} judged documents are not in the index: {}",
                        r.missing.len(),
                        r.missing.join(", ")
                    );
                }
                if r.report.degraded > 0 {
                    let _ = writeln!(
                        out,
                        "warning: {} queries had a retriever fail",
                        r.report.degraded
                    );
                }
                let _ = writeln!(out);
            }
        }
        if !self.answers.is_empty() {
            let _ = writeln!(
                out,
                "## Answers through the pipeline ({}, {} answers, router deciding)\n",
                config.model_id,
                if config.rag_answer_format == AnswerFormat::Json {
                    "JSON"
                } else {
                    "text"
                }
            );
            let _ = writeln!(
                out,
                "{:<44} {:>7} {:>6} {:>9} {:>14} {:>6} {:>9} {:>12}",
                "file",
                "answers",
                "failed",
                "rag",
                "answer in src",
                "cited",
                "quotes ok",
                "schema valid"
            );
            for a in &self.answers {
                let _ = writeln!(
                    out,
                    "{:<44} {:>7} {:>6} {:>9} {:>14} {:>6} {:>9} {:>12}",
                    a.file.display(),
                    a.answers,
                    a.failed,
                    share(a.routed_rag, a.answers),
                    share(a.sources_hold_answer, a.answers),
                    share(a.cited, a.routed_rag.saturating_sub(a.json_answers)),
                    share(a.quotes_verified, a.quotes_verified + a.quotes_removed),
                    share(a.schema_valid, a.json_answers)
                );
            }
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<44} {:>14} {:>14} {:>16} {:>16}",
                "stage p50 / p95 ms", "route", "retrieve", "first token", "whole answer"
            );
            for a in &self.answers {
                let _ = writeln!(
                    out,
                    "{:<44} {:>14} {:>14} {:>16} {:>16}",
                    a.file.display(),
                    ms(a.route),
                    ms(a.ground),
                    ms(a.first_event),
                    ms(a.total)
                );
            }
        }
        out
    }
}
