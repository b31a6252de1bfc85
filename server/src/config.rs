//! Server configuration: defaults < TOML file < environment < command-line flags.
//!
//! Every setting has one name. In the file it is the field name (`max_in_flight = 8`); in the
//! environment it is `SWITCHYARD_` + the upper-cased name (`SWITCHYARD_MAX_IN_FLIGHT=8`); on the
//! command line it is the kebab-cased flag (`--max-in-flight 8`). Clap resolves env and flags
//! (a flag beats env); the file fills only what neither gave.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The format llama.cpp serves the weights in (see `adapters/src/llama/weights.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineWeights {
    /// The GGUF's own tensors.
    Gguf,
    /// Re-encoded to Q8_0 at load (near-lossless from 4-bit; repacked CPU kernels).
    #[serde(rename = "q8_0")]
    #[value(name = "q8_0")]
    Q8_0,
    /// Re-encoded to f16 at load.
    F16,
    /// Re-encoded to Q4_0 at load (fastest here; lossy from a Q4_1 file).
    #[serde(rename = "q4_0")]
    #[value(name = "q4_0")]
    Q4_0,
}

impl EngineWeights {
    pub fn format(self) -> adapters::WeightFormat {
        match self {
            EngineWeights::Gguf => adapters::WeightFormat::AsShipped,
            EngineWeights::Q8_0 => adapters::WeightFormat::Q8_0,
            EngineWeights::F16 => adapters::WeightFormat::F16,
            EngineWeights::Q4_0 => adapters::WeightFormat::Q4_0,
        }
    }
}

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum EngineKind {
    /// llama.cpp: every running request decoded in one batch per step.
    #[serde(rename = "llama.cpp")]
    #[value(name = "llama.cpp")]
    LlamaCpp,
    /// mistral.rs: `engine_instances` copies, each decoding one request at a time.
    #[serde(rename = "mistralrs")]
    #[value(name = "mistralrs")]
    MistralRs,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::LlamaCpp => "llama.cpp",
            EngineKind::MistralRs => "mistralrs",
        }
    }
}

/// Which vector store holds the dense side of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum VectorStoreKind {
    /// Qdrant's engine in-process (qdrant-edge), under `index_dir`.
    Embedded,
    /// A Qdrant server at `qdrant_url`.
    Qdrant,
}

/// How BM25 and dense results are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FusionKind {
    Rrf,
    WeightedRrf,
    Dbsf,
}

/// What a chat request does when it names no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Answer directly.
    Simple,
    /// Retrieve, then answer with citations.
    Rag,
    /// Answer with a call of one of the request's tools.
    Tool,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Simple => "simple",
            Route::Rag => "rag",
            Route::Tool => "tool",
        }
    }

    /// The route a router label names.
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "simple" => Some(Route::Simple),
            "rag" => Some(Route::Rag),
            "tool" => Some(Route::Tool),
            _ => None,
        }
    }
}

/// How `rag` answers are written when the request sets no `response_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// Prose with `[n]` markers.
    Text,
    /// `{answer, citations: [{index, quote}]}`, enforced by constrained decoding; quotes are
    /// checked against their source.
    Json,
}

/// Who picks the tool on the `tool` route when the request allows several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ToolSelection {
    /// The tool whose name and description are nearest to the request (the embedder); the
    /// model writes its arguments.
    Embedding,
    /// The model picks among all the request's tools.
    Model,
}

/// The resolved configuration of a running server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// GGUF file of the base model.
    pub model_path: PathBuf,
    /// Id clients put in `model`; also listed by `/v1/models`.
    pub model_id: String,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for (larger: 400).
    pub max_tokens_cap: usize,
    /// `max_tokens` used when a request gives none.
    pub default_max_tokens: usize,
    /// Generations admitted at once, running or queued at the engine (more: 429).
    pub max_in_flight: usize,
    /// Most messages one chat request may carry (more: 400).
    pub max_messages: usize,
    /// Seconds a chat request may take from arrival to its last token; past it the request
    /// ends with 504 `deadline_exceeded` (or that error event in a stream) and frees its slot.
    pub request_timeout_secs: u64,
    /// Requests per second each API key may make on average (token bucket); 0: no limit.
    pub rate_limit_per_second: f64,
    /// Requests a key may make at once before the rate applies (the bucket's size).
    pub rate_limit_burst: u32,
    /// The engine that runs the model.
    pub engine: EngineKind,
    /// mistral.rs engine instances; each decodes one request at a time (see README: concurrency).
    pub engine_instances: usize,
    /// llama.cpp: sequences decoded together in one batch (more wait for a free one).
    pub engine_sequences: usize,
    /// llama.cpp: each sequence's window in tokens (prompt + answer), its own KV cache.
    pub engine_context_tokens: usize,
    /// llama.cpp: the format the weights are served in, re-encoded at load.
    pub engine_weights: EngineWeights,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Folder of the embedding model and ONNX Runtime (`scripts/fetch_models.py` layout).
    pub models_dir: PathBuf,
    /// Load the embedder and the document index; off, only the `simple` route exists.
    pub retrieval_enabled: bool,
    /// Folder of the document index (catalog, sources, BM25, embedded vectors).
    pub index_dir: PathBuf,
    pub vector_store: VectorStoreKind,
    /// gRPC URL of the Qdrant server (`vector_store = "qdrant"`).
    pub qdrant_url: String,
    pub qdrant_collection: String,
    pub fusion: FusionKind,
    /// RRF's k: larger flattens the difference between ranks.
    pub rrf_k: f32,
    /// Weighted RRF's weights: BM25, dense.
    pub fusion_weights: Vec<f32>,
    /// Chunks each retriever returns before fusion.
    pub retrieval_candidates: usize,
    /// Chunks put in the prompt (and returned as citations) on the `rag` route.
    pub rag_top_k: usize,
    /// `text` or `json` answers on the `rag` route.
    pub rag_answer_format: AnswerFormat,
    /// Deadline of each retrieval stage (embedding, BM25, vector search), in milliseconds.
    pub retrieval_timeout_ms: u64,
    /// Route of a chat request that does not pin one with `"route"`.
    pub default_route: Route,
    /// Tenant of documents and searches when a request names none.
    pub default_tenant: String,
    /// The routes this server serves; a router whose labels are not all here is refused, and
    /// a request pinning another route gets 400.
    pub routes: Vec<Route>,
    /// Route requests with the trained router in `router_dir` (when it exists).
    pub router_enabled: bool,
    /// Folder of the trained router (`switchyard router train --out`).
    pub router_dir: PathBuf,
    /// Route taken when the router abstains (its confidence is below the route's threshold).
    pub router_fallback_route: Route,
    /// Longest a routing classification may take; past it, `router_fallback_route` answers.
    pub router_timeout_ms: u64,
    /// Who picks the tool when `tool_choice` does not name one.
    pub tool_selection: ToolSelection,
    /// The LoRA adapter API. On llama.cpp, adapters apply at runtime to the served GGUF; on
    /// mistral.rs, they also need `adapter_base_dir`.
    pub adapters_enabled: bool,
    /// mistral.rs only: the safetensors base LoRA adapters merge into (`switchyard
    /// convert`'s output); unset, that engine's adapter API is off.
    pub adapter_base_dir: Option<PathBuf>,
    /// Adapter paths given to the API must resolve inside this folder.
    pub adapter_root: PathBuf,
    /// Where adapter generations are written (GGUF LoRA files, or merged models on
    /// mistral.rs) with the saved active set.
    pub adapter_work_dir: PathBuf,
    pub adapter_max_rank: usize,
    /// Adapter generations kept loaded (on mistral.rs each is a full model instance).
    pub adapter_max_resident: usize,
    /// Default adapter per route for requests whose `model` is the base, e.g.
    /// `{rag = "fmt"}`; used while that adapter is loaded, else the base answers.
    pub route_adapters: std::collections::BTreeMap<String, String>,
    /// Adapters loaded in the background at start, `{name = "path under adapter_root"}`, as
    /// if by `POST /v1/load_lora_adapter`; a failed load is logged and counted, not fatal.
    pub startup_adapters: std::collections::BTreeMap<String, PathBuf>,
    /// TOML file of API keys (`[[keys]]` name, key or key_sha256, scopes, tenant); keys may
    /// also come from `SWITCHYARD_API_KEYS` (see `auth.rs`).
    pub api_keys_file: Option<PathBuf>,
    /// Serve without API keys (local use only; the server warns). Without keys and without
    /// this, `serve` refuses to start.
    pub auth_disabled: bool,
    /// `/metrics` needs a key with the `metrics` scope.
    pub metrics_auth: bool,
    /// Let `auth_disabled` serve on an address other than loopback, where anyone who reaches
    /// it may use every endpoint, admin included. Without this, `serve` refuses.
    pub insecure_allow_public_without_auth: bool,
    /// Web origins (`https://app.example.com`) whose pages may call this API from a browser:
    /// CORS is answered for them, and their writes are not refused as cross-site. Empty: no
    /// CORS, and every browser write from another site is 403.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            model_path: PathBuf::from(
                "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
            model_id: "smollm2-135m-instruct".to_string(),
            max_body_bytes: 1024 * 1024,
            max_tokens_cap: 2048,
            default_max_tokens: 256,
            max_in_flight: 16,
            max_messages: 256,
            request_timeout_secs: 300,
            rate_limit_per_second: 0.0,
            rate_limit_burst: 20,
            engine: EngineKind::LlamaCpp,
            engine_instances: 1,
            engine_sequences: 8,
            engine_context_tokens: 2048,
            engine_weights: EngineWeights::Q8_0,
            shutdown_grace_secs: 30,
            log_format: LogFormat::Text,
            models_dir: PathBuf::from("models"),
            retrieval_enabled: true,
            index_dir: PathBuf::from("data/index"),
            vector_store: VectorStoreKind::Embedded,
            qdrant_url: "http://127.0.0.1:6334".to_string(),
            qdrant_collection: "switchyard_chunks".to_string(),
            fusion: FusionKind::Rrf,
            rrf_k: 60.0,
            fusion_weights: vec![1.0, 1.0],
            retrieval_candidates: 50,
            rag_top_k: 4,
            rag_answer_format: AnswerFormat::Text,
            retrieval_timeout_ms: 2000,
            default_route: Route::Rag,
            default_tenant: "default".to_string(),
            routes: vec![Route::Simple, Route::Rag, Route::Tool],
            router_enabled: true,
            router_dir: PathBuf::from("models/router"),
            router_fallback_route: Route::Rag,
            router_timeout_ms: 1000,
            tool_selection: ToolSelection::Embedding,
            adapters_enabled: true,
            adapter_base_dir: None,
            adapter_root: PathBuf::from("adapters-store"),
            adapter_work_dir: PathBuf::from("data/adapter-generations"),
            adapter_max_rank: 16,
            adapter_max_resident: 2,
            route_adapters: std::collections::BTreeMap::new(),
            startup_adapters: std::collections::BTreeMap::new(),
            api_keys_file: None,
            auth_disabled: false,
            metrics_auth: false,
            insecure_allow_public_without_auth: false,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Flags (and their environment variables) that override the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "SWITCHYARD_MODEL_PATH")]
    pub model_path: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_MODEL_ID")]
    pub model_id: Option<String>,
    #[arg(long, env = "SWITCHYARD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    #[arg(long, env = "SWITCHYARD_MAX_TOKENS_CAP")]
    pub max_tokens_cap: Option<usize>,
    #[arg(long, env = "SWITCHYARD_DEFAULT_MAX_TOKENS")]
    pub default_max_tokens: Option<usize>,
    #[arg(long, env = "SWITCHYARD_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    #[arg(long, env = "SWITCHYARD_MAX_MESSAGES")]
    pub max_messages: Option<usize>,
    #[arg(long, env = "SWITCHYARD_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<f64>,
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    #[arg(long, env = "SWITCHYARD_ENGINE", value_enum)]
    pub engine: Option<EngineKind>,
    #[arg(long, env = "SWITCHYARD_ENGINE_INSTANCES")]
    pub engine_instances: Option<usize>,
    #[arg(long, env = "SWITCHYARD_ENGINE_SEQUENCES")]
    pub engine_sequences: Option<usize>,
    #[arg(long, env = "SWITCHYARD_ENGINE_CONTEXT_TOKENS")]
    pub engine_context_tokens: Option<usize>,
    #[arg(long, env = "SWITCHYARD_ENGINE_WEIGHTS", value_enum)]
    pub engine_weights: Option<EngineWeights>,
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[arg(long, env = "SWITCHYARD_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_RETRIEVAL_ENABLED")]
    pub retrieval_enabled: Option<bool>,
    #[arg(long, env = "SWITCHYARD_INDEX_DIR")]
    pub index_dir: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_VECTOR_STORE", value_enum)]
    pub vector_store: Option<VectorStoreKind>,
    #[arg(long, env = "SWITCHYARD_QDRANT_URL")]
    pub qdrant_url: Option<String>,
    #[arg(long, env = "SWITCHYARD_QDRANT_COLLECTION")]
    pub qdrant_collection: Option<String>,
    #[arg(long, env = "SWITCHYARD_FUSION", value_enum)]
    pub fusion: Option<FusionKind>,
    #[arg(long, env = "SWITCHYARD_RRF_K")]
    pub rrf_k: Option<f32>,
    /// BM25 and dense weights of weighted RRF, e.g. `1,2`.
    #[arg(long, env = "SWITCHYARD_FUSION_WEIGHTS", value_delimiter = ',')]
    pub fusion_weights: Option<Vec<f32>>,
    #[arg(long, env = "SWITCHYARD_RETRIEVAL_CANDIDATES")]
    pub retrieval_candidates: Option<usize>,
    #[arg(long, env = "SWITCHYARD_RAG_TOP_K")]
    pub rag_top_k: Option<usize>,
    #[arg(long, env = "SWITCHYARD_RAG_ANSWER_FORMAT", value_enum)]
    pub rag_answer_format: Option<AnswerFormat>,
    #[arg(long, env = "SWITCHYARD_RETRIEVAL_TIMEOUT_MS")]
    pub retrieval_timeout_ms: Option<u64>,
    #[arg(long, env = "SWITCHYARD_DEFAULT_ROUTE", value_enum)]
    pub default_route: Option<Route>,
    #[arg(long, env = "SWITCHYARD_DEFAULT_TENANT")]
    pub default_tenant: Option<String>,
    /// Comma-separated, e.g. `simple,rag`.
    #[arg(long, env = "SWITCHYARD_ROUTES", value_enum, value_delimiter = ',')]
    pub routes: Option<Vec<Route>>,
    #[arg(long, env = "SWITCHYARD_ROUTER_ENABLED")]
    pub router_enabled: Option<bool>,
    #[arg(long, env = "SWITCHYARD_ROUTER_DIR")]
    pub router_dir: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_ROUTER_FALLBACK_ROUTE", value_enum)]
    pub router_fallback_route: Option<Route>,
    #[arg(long, env = "SWITCHYARD_ROUTER_TIMEOUT_MS")]
    pub router_timeout_ms: Option<u64>,
    #[arg(long, env = "SWITCHYARD_TOOL_SELECTION", value_enum)]
    pub tool_selection: Option<ToolSelection>,
    #[arg(long, env = "SWITCHYARD_ADAPTERS_ENABLED")]
    pub adapters_enabled: Option<bool>,
    #[arg(long, env = "SWITCHYARD_ADAPTER_BASE_DIR")]
    pub adapter_base_dir: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_ADAPTER_ROOT")]
    pub adapter_root: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_ADAPTER_WORK_DIR")]
    pub adapter_work_dir: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_ADAPTER_MAX_RANK")]
    pub adapter_max_rank: Option<usize>,
    #[arg(long, env = "SWITCHYARD_ADAPTER_MAX_RESIDENT")]
    pub adapter_max_resident: Option<usize>,
    /// `ROUTE=ADAPTER` pairs, comma-separated, e.g. `rag=fmt`.
    #[arg(long, env = "SWITCHYARD_ROUTE_ADAPTERS", value_delimiter = ',', value_parser = parse_route_adapter)]
    pub route_adapters: Option<Vec<(String, String)>>,
    /// `NAME=PATH` pairs, comma-separated, e.g. `format=fmt-v1`: adapters loaded at start.
    #[arg(long, env = "SWITCHYARD_STARTUP_ADAPTERS", value_delimiter = ',', value_parser = parse_startup_adapter)]
    pub startup_adapters: Option<Vec<(String, PathBuf)>>,
    #[arg(long, env = "SWITCHYARD_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_AUTH_DISABLED")]
    pub auth_disabled: Option<bool>,
    #[arg(long, env = "SWITCHYARD_METRICS_AUTH")]
    pub metrics_auth: Option<bool>,
    #[arg(long, env = "SWITCHYARD_INSECURE_ALLOW_PUBLIC_WITHOUT_AUTH")]
    pub insecure_allow_public_without_auth: Option<bool>,
    /// Comma-separated origins, e.g. `https://app.example.com`.
    #[arg(long, env = "SWITCHYARD_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Option<Vec<String>>,
}

fn parse_route_adapter(pair: &str) -> Result<(String, String), String> {
    let (route, adapter) = pair
        .split_once('=')
        .ok_or_else(|| format!("`{pair}` is not ROUTE=ADAPTER"))?;
    Ok((route.trim().to_string(), adapter.trim().to_string()))
}

fn parse_startup_adapter(pair: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = pair
        .split_once('=')
        .ok_or_else(|| format!("`{pair}` is not NAME=PATH"))?;
    Ok((name.trim().to_string(), PathBuf::from(path.trim())))
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Whether this configuration serves the adapter API.
    pub fn adapters_available(&self) -> bool {
        self.adapters_enabled
            && (self.engine == EngineKind::LlamaCpp || self.adapter_base_dir.is_some())
    }

    /// Parses a TOML file; unknown keys are errors so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Resolves defaults < file (from `--config`) < env < flags, then validates.
    pub fn resolve(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, args: &ConfigArgs) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut self.listen, &args.listen);
        set(&mut self.model_path, &args.model_path);
        set(&mut self.model_id, &args.model_id);
        set(&mut self.max_body_bytes, &args.max_body_bytes);
        set(&mut self.max_tokens_cap, &args.max_tokens_cap);
        set(&mut self.default_max_tokens, &args.default_max_tokens);
        set(&mut self.max_in_flight, &args.max_in_flight);
        set(&mut self.max_messages, &args.max_messages);
        set(&mut self.request_timeout_secs, &args.request_timeout_secs);
        set(&mut self.rate_limit_per_second, &args.rate_limit_per_second);
        set(&mut self.rate_limit_burst, &args.rate_limit_burst);
        set(&mut self.engine, &args.engine);
        set(&mut self.engine_instances, &args.engine_instances);
        set(&mut self.engine_sequences, &args.engine_sequences);
        set(&mut self.engine_context_tokens, &args.engine_context_tokens);
        set(&mut self.engine_weights, &args.engine_weights);
        set(&mut self.shutdown_grace_secs, &args.shutdown_grace_secs);
        set(&mut self.log_format, &args.log_format);
        set(&mut self.models_dir, &args.models_dir);
        set(&mut self.retrieval_enabled, &args.retrieval_enabled);
        set(&mut self.index_dir, &args.index_dir);
        set(&mut self.vector_store, &args.vector_store);
        set(&mut self.qdrant_url, &args.qdrant_url);
        set(&mut self.qdrant_collection, &args.qdrant_collection);
        set(&mut self.fusion, &args.fusion);
        set(&mut self.rrf_k, &args.rrf_k);
        set(&mut self.fusion_weights, &args.fusion_weights);
        set(&mut self.retrieval_candidates, &args.retrieval_candidates);
        set(&mut self.rag_top_k, &args.rag_top_k);
        set(&mut self.rag_answer_format, &args.rag_answer_format);
        set(&mut self.retrieval_timeout_ms, &args.retrieval_timeout_ms);
        set(&mut self.default_route, &args.default_route);
        set(&mut self.default_tenant, &args.default_tenant);
        set(&mut self.routes, &args.routes);
        set(&mut self.router_enabled, &args.router_enabled);
        set(&mut self.router_dir, &args.router_dir);
        set(&mut self.router_fallback_route, &args.router_fallback_route);
        set(&mut self.router_timeout_ms, &args.router_timeout_ms);
        set(&mut self.tool_selection, &args.tool_selection);
        set(&mut self.adapters_enabled, &args.adapters_enabled);
        if args.adapter_base_dir.is_some() {
            self.adapter_base_dir = args.adapter_base_dir.clone();
        }
        set(&mut self.adapter_root, &args.adapter_root);
        set(&mut self.adapter_work_dir, &args.adapter_work_dir);
        set(&mut self.adapter_max_rank, &args.adapter_max_rank);
        set(&mut self.adapter_max_resident, &args.adapter_max_resident);
        if let Some(pairs) = &args.route_adapters {
            self.route_adapters = pairs.iter().cloned().collect();
        }
        if args.api_keys_file.is_some() {
            self.api_keys_file = args.api_keys_file.clone();
        }
        set(&mut self.auth_disabled, &args.auth_disabled);
        set(&mut self.metrics_auth, &args.metrics_auth);
        set(
            &mut self.insecure_allow_public_without_auth,
            &args.insecure_allow_public_without_auth,
        );
        set(&mut self.cors_allowed_origins, &args.cors_allowed_origins);
        if let Some(pairs) = &args.startup_adapters {
            self.startup_adapters = pairs.iter().cloned().collect();
        }
    }

    /// The fusion method these settings describe.
    pub fn fusion_method(&self) -> retrieval::FusionMethod {
        match self.fusion {
            FusionKind::Rrf => retrieval::FusionMethod::Rrf { k: self.rrf_k },
            FusionKind::WeightedRrf => retrieval::FusionMethod::WeightedRrf {
                k: self.rrf_k,
                weights: self.fusion_weights.clone(),
            },
            FusionKind::Dbsf => retrieval::FusionMethod::Dbsf,
        }
    }

    /// Rejects settings that cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_tokens_cap", self.max_tokens_cap),
            ("default_max_tokens", self.default_max_tokens),
            ("max_in_flight", self.max_in_flight),
            ("max_messages", self.max_messages),
            ("request_timeout_secs", self.request_timeout_secs as usize),
            ("rate_limit_burst", self.rate_limit_burst as usize),
            ("engine_instances", self.engine_instances),
            ("engine_sequences", self.engine_sequences),
            ("engine_context_tokens", self.engine_context_tokens),
            ("retrieval_candidates", self.retrieval_candidates),
            ("rag_top_k", self.rag_top_k),
            ("retrieval_timeout_ms", self.retrieval_timeout_ms as usize),
            ("router_timeout_ms", self.router_timeout_ms as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        if !self.rate_limit_per_second.is_finite() || self.rate_limit_per_second < 0.0 {
            return Err(ConfigError::Invalid(
                "rate_limit_per_second must be 0 (no limit) or above".into(),
            ));
        }
        if !self.rrf_k.is_finite() || self.rrf_k <= 0.0 {
            return Err(ConfigError::Invalid("rrf_k must be above 0".into()));
        }
        if self.fusion_weights.len() != 2
            || self
                .fusion_weights
                .iter()
                .any(|w| !w.is_finite() || *w < 0.0)
        {
            return Err(ConfigError::Invalid(
                "fusion_weights takes two non-negative numbers: BM25, dense".into(),
            ));
        }
        if let Some(route) = self
            .route_adapters
            .keys()
            .find(|r| Route::from_label(r).is_none())
        {
            return Err(ConfigError::Invalid(format!(
                "route_adapters names `{route}`, which is not a route (simple, rag, tool)"
            )));
        }
        if !self.startup_adapters.is_empty() && !self.adapters_available() {
            return Err(ConfigError::Invalid(
                "startup_adapters needs the adapter API: adapters_enabled, and on mistralrs adapter_base_dir (the safetensors base)".into(),
            ));
        }
        if self.routes.is_empty() {
            return Err(ConfigError::Invalid(
                "routes must name at least one route".into(),
            ));
        }
        for (name, route) in [
            ("default_route", self.default_route),
            ("router_fallback_route", self.router_fallback_route),
        ] {
            if !self.routes.contains(&route) {
                return Err(ConfigError::Invalid(format!(
                    "{name} `{}` is not in routes",
                    route.as_str()
                )));
            }
        }
        for origin in &self.cors_allowed_origins {
            let scheme_host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            if !scheme_host.is_some_and(|h| !h.is_empty() && !h.contains('/')) {
                return Err(ConfigError::Invalid(format!(
                    "cors_allowed_origins: `{origin}` is not an origin like `https://app.example.com` (scheme and host, no path, no `*`)"
                )));
            }
        }
        if self.rag_top_k > self.retrieval_candidates {
            return Err(ConfigError::Invalid(format!(
                "rag_top_k ({}) is above retrieval_candidates ({})",
                self.rag_top_k, self.retrieval_candidates
            )));
        }
        retrieval::ingest::validate_tenant(&self.default_tenant)
            .map_err(|e| ConfigError::Invalid(format!("default_tenant: {e}")))?;
        if self.default_max_tokens > self.max_tokens_cap {
            return Err(ConfigError::Invalid(format!(
                "default_max_tokens ({}) is above max_tokens_cap ({})",
                self.default_max_tokens, self.max_tokens_cap
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    #[test]
    fn file_then_env_then_flag() {
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchyard.toml");
        std::fs::write(
            &file,
            "max_in_flight = 3\nmax_tokens_cap = 100\ndefault_max_tokens = 50\nmodel_id = \"from-file\"\n",
        )
        .unwrap();
        // Only this test in this binary touches these variables.
        std::env::set_var("SWITCHYARD_MAX_TOKENS_CAP", "200");
        std::env::set_var("SWITCHYARD_MODEL_ID", "from-env");
        let cli = Cli::try_parse_from([
            "switchyard",
            "--config",
            file.to_str().unwrap(),
            "--model-id",
            "from-flag",
        ])
        .unwrap();
        std::env::remove_var("SWITCHYARD_MAX_TOKENS_CAP");
        std::env::remove_var("SWITCHYARD_MODEL_ID");
        let config = Config::resolve(&cli.config).unwrap();
        assert_eq!(config.max_in_flight, 3, "file beats default");
        assert_eq!(config.max_tokens_cap, 200, "env beats file");
        assert_eq!(config.model_id, "from-flag", "flag beats env");
        assert_eq!(config.default_max_tokens, 50);
        assert_eq!(
            config.shutdown_grace_secs,
            Config::default().shutdown_grace_secs
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = toml::from_str::<Config>("max_in_flite = 3").unwrap_err();
        assert!(err.to_string().contains("max_in_flite"), "{err}");
    }

    #[test]
    fn impossible_settings_are_rejected() {
        let config = Config {
            default_max_tokens: 10,
            max_tokens_cap: 5,
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(_))));
        let config = Config {
            max_in_flight: 0,
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_in_flight"));
        let config = Config {
            routes: vec![Route::Simple, Route::Tool],
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("default_route `rag` is not in routes"),
            "{err}"
        );
    }
}
