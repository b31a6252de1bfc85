//! Server configuration: defaults < TOML file < environment < command-line flags.
//!
//! Every setting has one name. In the file it is the field name (`max_in_flight = 8`); in the
//! environment it is `SWITCHYARD_` + the upper-cased name (`SWITCHYARD_MAX_IN_FLIGHT=8`); on the
//! command line it is the kebab-cased flag (`--max-in-flight 8`). Clap resolves env and flags
//! (a flag beats env); the file fills only what neither gave.
//!
//! Each setting is declared once, in the `settings::declare!` block below (doc, name, type,
//! default); the struct, its default, the flags and `Config::settings` all come from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod settings;
pub use settings::Setting;

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

settings::declare! {
    /// Address to listen on.
    listen: SocketAddr = "127.0.0.1:8080".parse().expect("valid default address");
    /// GGUF file of the base model.
    model_path: PathBuf =
        PathBuf::from("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    /// Id clients put in `model`; also listed by `/v1/models`.
    model_id: String = "smollm2-135m-instruct".to_string();
    /// Largest request body accepted, in bytes (larger: 413).
    max_body_bytes: usize = 1024 * 1024;
    /// Largest `max_tokens` a request may ask for (larger: 400).
    max_tokens_cap: usize = 2048;
    /// `max_tokens` used when a request gives none.
    default_max_tokens: usize = 256;
    /// Generations admitted at once, running or queued at the engine (more: 429).
    max_in_flight: usize = 16;
    /// Most messages one chat request may carry (more: 400).
    max_messages: usize = 256;
    /// Seconds a chat request may take from arrival to its last token; past it the request
    /// ends with 504 `deadline_exceeded` (or that error event in a stream) and frees its slot.
    request_timeout_secs: u64 = 300;
    /// Requests per second each API key may make on average (token bucket); 0: no limit.
    rate_limit_per_second: f64 = 0.0;
    /// Requests a key may make at once before the rate applies (the bucket's size).
    rate_limit_burst: u32 = 20;
    /// The engine that runs the model.
    engine: EngineKind = EngineKind::LlamaCpp;
    /// mistral.rs engine instances; each decodes one request at a time (see README: concurrency).
    engine_instances: usize = 1;
    /// llama.cpp: sequences decoded together in one batch (more wait for a free one).
    engine_sequences: usize = 8;
    /// llama.cpp: each sequence's window in tokens (prompt + answer), its own KV cache.
    engine_context_tokens: usize = 2048;
    /// llama.cpp: the format the weights are served in, re-encoded at load.
    engine_weights: EngineWeights = EngineWeights::Q8_0;
    /// Seconds in-flight requests get to finish after a shutdown signal.
    shutdown_grace_secs: u64 = 30;
    /// Log format.
    log_format: LogFormat = LogFormat::Text;
    /// Folder of the embedding model and ONNX Runtime (`scripts/fetch_models.py` layout).
    models_dir: PathBuf = PathBuf::from("models");
    /// Load the embedder and the document index; off, only the `simple` route exists.
    retrieval_enabled: bool = true;
    /// Folder of the document index (catalog, sources, BM25, embedded vectors).
    index_dir: PathBuf = PathBuf::from("data/index");
    /// Where the dense vectors live: in-process under `index_dir`, or a Qdrant server.
    vector_store: VectorStoreKind = VectorStoreKind::Embedded;
    /// gRPC URL of the Qdrant server (`vector_store = "qdrant"`).
    qdrant_url: String = "http://127.0.0.1:6334".to_string();
    /// Collection of the chunks on the Qdrant server, created on first use.
    qdrant_collection: String = "switchyard_chunks".to_string();
    /// How BM25 and dense results are fused. Weighted RRF with BM25 at half weight won on
    /// both dev sets (nDCG@10 0.698 / 0.649, answering page among the sources 0.766 / 0.703,
    /// against plain RRF's 0.697 / 0.632 and 0.738 / 0.676).
    fusion: FusionKind = FusionKind::WeightedRrf;
    /// RRF's k: larger flattens the difference between ranks.
    rrf_k: f32 = 60.0;
    /// Weighted RRF's weights: BM25, dense (a flag takes `1,2`).
    #[arg(value_delimiter = ',')]
    fusion_weights: Vec<f32> = vec![0.5, 1.0];
    /// Map each query's embedding through the trained query adapter in `query_adapter_dir`
    /// (when one is there) before dense search; one trained for another embedding model is
    /// refused (the index stays closed, `/ready` 503 with the reason). It raised nDCG@10 on
    /// both dev sets (README, Evaluation).
    query_adapter_enabled: bool = true;
    /// Folder of the query adapter (`switchyard query-adapter train --out`).
    query_adapter_dir: PathBuf = PathBuf::from("models/query-adapter");
    /// Chunks each retriever returns before fusion.
    retrieval_candidates: usize = 50;
    /// Chunks put in the prompt (and returned as citations) on the `rag` route.
    rag_top_k: usize = 4;
    /// At most this many of those chunks from one document (0: no limit): with 1, the
    /// answering page was among the sources for 0.74 / 0.68 of the two dev sets' questions
    /// (plain RRF), against 0.64 / 0.64 with no limit (README, Evaluation).
    rag_max_chunks_per_document: usize = 1;
    /// `text` or `json` answers on the `rag` route.
    rag_answer_format: AnswerFormat = AnswerFormat::Text;
    /// Deadline of each retrieval stage (embedding, BM25, vector search), in milliseconds.
    retrieval_timeout_ms: u64 = 2000;
    /// Route of a chat request that does not pin one with `"route"`.
    default_route: Route = Route::Rag;
    /// Tenant of documents and searches when a request names none.
    default_tenant: String = "default".to_string();
    /// The routes this server serves (a flag takes `simple,rag`); a router whose labels are
    /// not all here is refused, and a request pinning another route gets 400.
    #[arg(value_delimiter = ',')]
    routes: Vec<Route> = vec![Route::Simple, Route::Rag, Route::Tool];
    /// Route requests with the trained router in `router_dir` (when it exists).
    router_enabled: bool = true;
    /// Folder of the trained router (`switchyard router train --out`).
    router_dir: PathBuf = PathBuf::from("models/router");
    /// Route taken when the router abstains (its confidence is below the route's threshold).
    router_fallback_route: Route = Route::Rag;
    /// Longest a routing classification may take; past it, `router_fallback_route` answers.
    router_timeout_ms: u64 = 1000;
    /// Who picks the tool when `tool_choice` does not name one.
    tool_selection: ToolSelection = ToolSelection::Embedding;
    /// The LoRA adapter API. On llama.cpp, adapters apply at runtime to the served GGUF; on
    /// mistral.rs, they also need `adapter_base_dir`.
    adapters_enabled: bool = true;
    /// mistral.rs only: the safetensors base LoRA adapters merge into (`switchyard
    /// convert`'s output); unset, that engine's adapter API is off.
    // The flag is an `Option<Option<_>>`, which clap lets be given without a value; one
    // value keeps it a plain path, as for every other setting.
    #[arg(num_args = 1)]
    adapter_base_dir: Option<PathBuf> = None;
    /// Adapter paths given to the API must resolve inside this folder.
    adapter_root: PathBuf = PathBuf::from("adapters-store");
    /// Where adapter generations are written (GGUF LoRA files, or merged models on
    /// mistral.rs) with the saved active set.
    adapter_work_dir: PathBuf = PathBuf::from("data/adapter-generations");
    /// Largest LoRA rank an adapter may have.
    adapter_max_rank: usize = 16;
    /// Adapter generations kept loaded (on mistral.rs each is a full model instance).
    adapter_max_resident: usize = 2;
    /// Default adapter per route for requests whose `model` is the base, e.g.
    /// `{rag = "fmt"}` (a flag takes `rag=fmt`); used while that adapter is loaded, else the
    /// base answers.
    #[arg(value_parser = parse_pairs::<String>)]
    route_adapters: BTreeMap<String, String> = BTreeMap::new();
    /// Adapters loaded in the background at start, `{name = "path under adapter_root"}` (a
    /// flag takes `name=path`), as if by `POST /v1/load_lora_adapter`; a failed load is
    /// logged and counted, not fatal.
    #[arg(value_parser = parse_pairs::<PathBuf>)]
    startup_adapters: BTreeMap<String, PathBuf> = BTreeMap::new();
    /// TOML file of API keys (`[[keys]]` name, key or key_sha256, scopes, tenant); keys may
    /// also come from `SWITCHYARD_API_KEYS` (see `auth.rs`).
    #[arg(num_args = 1)]
    api_keys_file: Option<PathBuf> = None;
    /// Serve without API keys (local use only; the server warns). Without keys and without
    /// this, `serve` refuses to start.
    auth_disabled: bool = false;
    /// `/metrics` needs a key with the `metrics` scope.
    metrics_auth: bool = false;
    /// Let `auth_disabled` serve on an address other than loopback, where anyone who reaches
    /// it may use every endpoint, admin included. Without this, `serve` refuses.
    insecure_allow_public_without_auth: bool = false;
    /// Web origins (`https://app.example.com`, comma-separated on a flag) whose pages may
    /// call this API from a browser: CORS is answered for them, and their writes are not
    /// refused as cross-site. Empty: no CORS, and every browser write from another site is 403.
    #[arg(value_delimiter = ',')]
    cors_allowed_origins: Vec<String> = Vec::new();
}

/// Parses a flag's `KEY=VALUE,KEY=VALUE` into the map a file writes as a TOML table.
fn parse_pairs<V: From<String>>(pairs: &str) -> Result<BTreeMap<String, V>, String> {
    pairs
        .split(',')
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not KEY=VALUE"))?;
            Ok((key.trim().to_string(), V::from(value.trim().to_string())))
        })
        .collect()
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

    #[derive(Debug, Parser)]
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
    fn flags_and_variables_come_from_the_names() {
        for setting in Config::settings() {
            assert_eq!(
                setting.flag,
                format!("--{}", setting.name.replace('_', "-"))
            );
            assert_eq!(
                setting.env,
                format!("SWITCHYARD_{}", setting.name.to_uppercase())
            );
            assert!(!setting.doc.is_empty(), "{} has no doc", setting.name);
        }
        let cli = Cli::try_parse_from(["switchyard", "--adapter-base-dir"]);
        assert!(cli.is_err(), "an optional path's flag still needs a value");
        let err = Cli::try_parse_from(["switchyard", "--engine", "vllm"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("[possible values: llama.cpp, mistralrs]"),
            "{err}"
        );
        let cli = Cli::try_parse_from([
            "switchyard",
            "--route-adapters",
            "rag=fmt, tool = t",
            "--routes",
            "simple,rag",
            "--engine",
            "mistralrs",
            "--adapter-base-dir",
            "base",
        ]);
        let mut config = Config::default();
        config.apply(&cli.unwrap().config);
        let expected = [("rag", "fmt"), ("tool", "t")].map(|(r, a)| (r.into(), a.into()));
        assert_eq!(config.route_adapters, BTreeMap::from(expected));
        assert_eq!(config.routes, [Route::Simple, Route::Rag]);
        assert_eq!(config.engine, EngineKind::MistralRs);
        assert_eq!(config.adapter_base_dir, Some(PathBuf::from("base")));
    }

    /// The README's configuration table lists exactly the declared settings, with their flags
    /// and defaults; its meanings may say more than the doc comments.
    #[test]
    fn readme_configuration_table_matches_the_declarations() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md next to the workspace's Cargo.toml");
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .expect("README has a Configuration section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut rows: BTreeMap<&str, Vec<&str>> = section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|row| {
                let cells: Vec<&str> = row
                    .trim_matches('|')
                    .splitn(4, '|')
                    .map(str::trim)
                    .collect();
                (cells[0].trim_matches('`'), cells)
            })
            .collect();
        let mut problems = Vec::new();
        for setting in Config::settings() {
            let Some(cells) = rows.remove(setting.name) else {
                problems.push(format!("`{}` has no row", setting.name));
                continue;
            };
            let flag = format!("`{}`", setting.flag);
            for (what, readme, declared) in [
                ("flag", cells.get(1), &flag),
                ("default", cells.get(2), &setting.default),
            ] {
                let readme = readme.copied().unwrap_or("missing");
                if readme != declared {
                    problems.push(format!(
                        "`{}`: README's {what} is {readme}, declared {declared}",
                        setting.name
                    ));
                }
            }
            if cells.get(3).is_none_or(|meaning| meaning.is_empty()) {
                problems.push(format!("`{}` has no meaning", setting.name));
            }
        }
        problems.extend(rows.keys().map(|name| format!("`{name}` is not a setting")));
        assert!(
            problems.is_empty(),
            "README.md's configuration table disagrees with config.rs:\n{}",
            problems.join("\n")
        );
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
