//! Prometheus metrics, one registry per server (so tests can run several servers in one
//! process). Names are prefixed `switchyard_`, units are in the names, and labels have low
//! cardinality only (stage, cause, route, status).

use std::cell::RefCell;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use retrieval::{IndexStats, SearchResult};

/// Retrieval stages are milliseconds to seconds.
const STAGE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    families: Vec<String>,
    pub retrieval_stage_seconds: HistogramVec,
    pub retrieval_degraded_total: IntCounterVec,
    pub retrieval_results: HistogramVec,
    pub retrieval_failures_total: IntCounterVec,
    pub index_documents: IntGauge,
    pub index_chunks: IntGauge,
    pub index_pending: IntGauge,
    pub ingest_total: IntCounterVec,
    pub route_total: IntCounterVec,
    pub router_abstentions_total: IntCounterVec,
    pub router_classification_seconds: HistogramVec,
    pub router_confidence: HistogramVec,
    pub route_fallbacks_total: IntCounterVec,
    pub citation_markers_removed_total: IntCounterVec,
    pub citation_quotes_invalid_total: IntCounterVec,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub time_to_first_token_seconds: HistogramVec,
    pub inter_token_latency_seconds: HistogramVec,
    pub prompt_tokens_total: IntCounterVec,
    pub completion_tokens_total: IntCounterVec,
    pub requests_running: IntGauge,
    pub requests_waiting: IntGauge,
    pub rejections_total: IntCounterVec,
    pub panics_total: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub adapter_operations_total: IntCounterVec,
    pub adapter_active_info: IntGaugeVec,
    pub adapter_resident_instances: IntGauge,
    pub adapter_resident_bytes: IntGauge,
}

/// Latencies of whole requests and first tokens: 10 ms to 2 minutes, like vLLM's.
const REQUEST_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 120.0,
];
/// Gaps between tokens: 1 ms to 2.5 s.
const TOKEN_GAP_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
];

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    names: &RefCell<Vec<String>>,
    metric: T,
) -> T {
    names
        .borrow_mut()
        .extend(metric.desc().iter().map(|desc| desc.fq_name.clone()));
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    /// The server's series; `engine` names the engine in `switchyard_build_info`.
    pub fn new(engine: &str) -> Self {
        let metrics = Self::unlabelled();
        let device = if cfg!(feature = "cuda") {
            "cuda"
        } else {
            "cpu"
        };
        metrics
            .build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("SWITCHYARD_GIT_COMMIT"),
                engine,
                device,
            ])
            .set(1);
        metrics
    }

    fn unlabelled() -> Self {
        let registry = Registry::new();
        let names = RefCell::new(Vec::new());
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                &names,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(
                &registry,
                &names,
                IntGauge::new(name, help).expect("valid gauge"),
            )
        };
        Self {
            retrieval_stage_seconds: register(
                &registry, &names,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_retrieval_stage_duration_seconds",
                        "Time per retrieval stage (embed, bm25, vector, fusion)",
                    )
                    .buckets(STAGE_BUCKETS.to_vec()),
                    &["stage"],
                )
                .expect("valid histogram"),
            ),
            retrieval_degraded_total: counter(
                "switchyard_retrieval_degraded_total",
                "Searches served by one retriever because the other failed or timed out",
                &["cause"],
            ),
            retrieval_results: register(
                &registry, &names,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_retrieval_results",
                        "Chunks returned per search",
                    )
                    .buckets(vec![0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
                    &["route"],
                )
                .expect("valid histogram"),
            ),
            retrieval_failures_total: counter(
                "switchyard_retrieval_failures_total",
                "Searches where every retriever failed",
                &["route"],
            ),
            index_documents: gauge("switchyard_index_documents", "Documents in the index"),
            index_chunks: gauge("switchyard_index_chunks", "Chunks in the index"),
            index_pending: gauge(
                "switchyard_index_pending_documents",
                "Documents whose change is being written to the indexes or waits for a rollback retry",
            ),
            ingest_total: counter(
                "switchyard_ingest_documents_total",
                "Document upserts and deletes by outcome",
                &["operation", "outcome"],
            ),
            route_total: counter(
                "switchyard_route_decisions_total",
                "Chat requests by route and by what decided it (client, router, default...)",
                &["route", "decided_by"],
            ),
            router_abstentions_total: counter(
                "switchyard_router_abstentions_total",
                "Router predictions below their route's threshold (the fallback route was used)",
                &["predicted"],
            ),
            router_classification_seconds: register(
                &registry, &names,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_router_classification_duration_seconds",
                        "Time to classify a query (embedding included)",
                    )
                    .buckets(STAGE_BUCKETS.to_vec()),
                    &[],
                )
                .expect("valid histogram"),
            ),
            router_confidence: register(
                &registry, &names,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_router_confidence",
                        "The router's probability for its predicted route",
                    )
                    .buckets(vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]),
                    &["predicted"],
                )
                .expect("valid histogram"),
            ),
            route_fallbacks_total: counter(
                "switchyard_route_fallbacks_total",
                "Requests answered on another route than decided (no tools, a route not served, the router unavailable or too slow)",
                &["reason"],
            ),
            citation_markers_removed_total: counter(
                "switchyard_citation_markers_removed_total",
                "Citation markers in answers that pointed at no provided source",
                &["route"],
            ),
            http_requests_total: counter(
                "switchyard_http_requests_total",
                "HTTP requests by matched endpoint, method and status class",
                &["endpoint", "method", "status"],
            ),
            http_request_duration_seconds: register(
                &registry, &names,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_http_request_duration_seconds",
                        "Time to the response head (streams: to the first event)",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["endpoint"],
                )
                .expect("valid histogram"),
            ),
            time_to_first_token_seconds: register(
                &registry, &names,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_time_to_first_token_seconds",
                        "Request start to the first generated token, retrieval included",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid histogram"),
            ),
            inter_token_latency_seconds: register(
                &registry, &names,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_inter_token_latency_seconds",
                        "Time between streamed text pieces",
                    )
                    .buckets(TOKEN_GAP_BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid histogram"),
            ),
            prompt_tokens_total: counter(
                "switchyard_prompt_tokens_total",
                "Prompt tokens processed",
                &["route"],
            ),
            completion_tokens_total: counter(
                "switchyard_completion_tokens_total",
                "Tokens generated",
                &["route"],
            ),
            requests_running: gauge(
                "switchyard_requests_running",
                "Generations being decoded by an engine instance",
            ),
            requests_waiting: gauge(
                "switchyard_requests_waiting",
                "Generations admitted and waiting for a free engine instance",
            ),
            rejections_total: counter(
                "switchyard_rejections_total",
                "Requests refused, or stopped by a limit (deadline_exceeded), by reason",
                &["reason"],
            ),
            panics_total: counter(
                "switchyard_panics_total",
                "Requests whose handler panicked, answered 500 internal_error",
                &[],
            ),
            build_info: register(
                &registry, &names,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_build_info",
                        "Always 1: the build's version, git commit, engine and device",
                    ),
                    &["version", "git_commit", "engine", "device"],
                )
                .expect("valid gauge"),
            ),
            adapter_operations_total: counter(
                "switchyard_adapter_operations_total",
                "Adapter loads, unloads and activations (swaps, rollbacks) by outcome",
                &["operation", "outcome"],
            ),
            adapter_active_info: register(
                &registry, &names,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_adapter_active_info",
                        "1 for each adapter name's active generation",
                    ),
                    &["adapter", "generation"],
                )
                .expect("valid gauge"),
            ),
            adapter_resident_instances: gauge(
                "switchyard_adapter_resident_instances",
                "Adapter generations loaded as engine instances",
            ),
            adapter_resident_bytes: gauge(
                "switchyard_adapter_resident_bytes",
                "Bytes of the loaded adapter generations' merged weights",
            ),
            citation_quotes_invalid_total: counter(
                "switchyard_citation_quotes_invalid_total",
                "Quotes in JSON answers not found in their cited source (removed, or flagged when streamed)",
                &["route"],
            ),
            families: names.into_inner(),
            registry,
        }
    }

    /// The name of every metric family, including labelled ones that have not moved yet (and
    /// so are absent from [`render`](Self::render)'s output).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// Counts a request refused or stopped by a limit (`overloaded`, `rate_limited`,
    /// `deadline_exceeded`).
    pub fn reject(&self, reason: &str) {
        self.rejections_total.with_label_values(&[reason]).inc();
    }

    /// Records one search's stage timings, degradations and result count.
    pub fn observe_search(&self, route: &str, result: &SearchResult) {
        let timings = &result.timings;
        for (stage, took) in [
            ("embed", timings.embed),
            ("bm25", timings.bm25),
            ("vector", timings.vector),
            ("fusion", Some(timings.fusion)),
        ] {
            if let Some(took) = took {
                self.retrieval_stage_seconds
                    .with_label_values(&[stage])
                    .observe(took.as_secs_f64());
            }
        }
        for degradation in &result.degraded {
            self.retrieval_degraded_total
                .with_label_values(&[degradation.cause.as_str()])
                .inc();
        }
        self.retrieval_results
            .with_label_values(&[route])
            .observe(result.hits.len() as f64);
    }

    /// Refreshes the adapter gauges from the registry's list.
    pub fn set_adapters(&self, adapters: &[adapters::AdapterInfo]) {
        self.adapter_active_info.reset();
        let (mut instances, mut bytes) = (0, 0);
        for adapter in adapters {
            self.adapter_active_info
                .with_label_values(&[
                    adapter.name.as_str(),
                    &adapter.active_generation[..12.min(adapter.active_generation.len())],
                ])
                .set(1);
            for generation in adapter.generations.iter().filter(|g| g.resident) {
                instances += 1;
                bytes += generation.resident_bytes;
            }
        }
        self.adapter_resident_instances.set(instances);
        self.adapter_resident_bytes.set(bytes as i64);
    }

    pub fn set_index_stats(&self, stats: IndexStats) {
        self.index_documents.set(stats.documents as i64);
        self.index_chunks.set(stats.chunks as i64);
        self.index_pending.set(stats.pending as i64);
    }

    /// Counts `gauge` up now and down when the returned guard drops, so early returns and
    /// cancelled requests cannot leave it high.
    pub fn track(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// Holds one unit of a gauge; see [`Metrics::track`].
pub struct GaugeGuard(IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use retrieval::hybrid::StageTimings;
    use retrieval::{Degradation, DegradedCause, SearchResult};

    use super::*;

    #[test]
    fn a_degraded_search_counts_its_cause_and_only_the_stages_that_ran() {
        let metrics = Metrics::new("llama.cpp");
        let result = SearchResult {
            hits: Vec::new(),
            degraded: vec![Degradation {
                cause: DegradedCause::VectorTimeout,
                message: "vector search took longer than 2000 ms".into(),
            }],
            timings: StageTimings {
                embed: Some(Duration::from_millis(7)),
                bm25: Some(Duration::from_millis(2)),
                vector: None,
                fusion: Duration::from_micros(100),
            },
        };
        metrics.observe_search("rag", &result);
        let text = metrics.render();
        assert!(
            text.contains("switchyard_retrieval_degraded_total{cause=\"vector_timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_retrieval_stage_duration_seconds_count{stage=\"bm25\"} 1")
        );
        assert!(!text.contains("stage=\"vector\""), "{text}");
        assert!(text.contains("switchyard_retrieval_results_count{route=\"rag\"} 1"));
    }

    #[test]
    fn a_tracked_gauge_falls_back_when_its_guard_drops() {
        let metrics = Metrics::new("llama.cpp");
        let first = Metrics::track(&metrics.requests_waiting);
        let second = Metrics::track(&metrics.requests_waiting);
        assert_eq!(metrics.requests_waiting.get(), 2);
        drop(first);
        assert_eq!(metrics.requests_waiting.get(), 1);
        drop(second);
        assert_eq!(metrics.requests_waiting.get(), 0);
    }
}
