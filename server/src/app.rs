//! The HTTP application: routes, body limit, and a [`Server`] that binds, loads the model and
//! opens the document index in the background, and shuts down gracefully.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use adapters::{AdapterHost, Backend, LlamaAdapterHost, LlamaConfig, LlamaCppBackend};

use crate::auth;
use crate::config::{Config, EngineKind};
use crate::error::ApiError;
use crate::handlers::{chat, documents, embeddings, health, lora, metrics, models, openapi};
use crate::index::{load_embedder, open_index};
use crate::routing::load_served_router;
use crate::state::AppState;

/// Builds the router over a state.
pub fn router(state: AppState) -> Router {
    use axum::middleware::from_fn_with_state as guard;
    let inference = Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route_layer(guard(state.clone(), auth::require_inference));
    let admin = Router::new()
        .route(
            "/v1/documents",
            post(documents::upsert).get(documents::list),
        )
        .route(
            "/v1/documents/{*id}",
            get(documents::get).delete(documents::delete),
        )
        .route("/v1/load_lora_adapter", post(lora::load))
        .route("/v1/unload_lora_adapter", post(lora::unload))
        .route("/v1/lora_adapters", get(lora::list))
        .route("/v1/lora_adapters/{name}/activate", post(lora::activate))
        .route_layer(guard(state.clone(), auth::require_admin));
    let metrics = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route_layer(guard(state.clone(), auth::require_metrics));
    let routes = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/openapi.json", get(openapi::openapi))
        .merge(inference)
        .merge(admin)
        .merge(metrics);
    with_service_layers(routes, state)
}

/// What every route gets: the 404/405 fallbacks, the body limit, the cross-site guard, a 500
/// for a handler that panics, request logging and metrics, and CORS when configured.
pub fn with_service_layers(routes: Router<AppState>, state: AppState) -> Router {
    let body_limit = state.config().max_body_bytes;
    let cors = crate::cross_site::cors_layer(&state.config().cors_allowed_origins);
    let panicked = state.clone();
    let router = routes
        .fallback(|uri: Uri| async move { ApiError::NotFound(uri.path().to_string()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cross_site::refuse_cross_site,
        ))
        // Inside the logging layer, so a panic is logged and counted as the 500 it becomes.
        .layer(CatchPanicLayer::custom(
            move |payload: Box<dyn Any + Send>| {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                // The panic's text stays in the log: it may name internals a client should not see.
                tracing::error!(panic = %what, "a request handler panicked");
                panicked
                    .metrics()
                    .panics_total
                    .with_label_values::<&str>(&[])
                    .inc();
                ApiError::Internal(
                    "a request handler panicked; the server log has the details".into(),
                )
                .into_response()
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::observe::observe,
        ));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// Loads the configured model with the configured engine; a llama.cpp engine is attached
/// to `llama_adapters` (the host its LoRA adapters apply through) when given.
pub async fn load_engine(
    config: &Config,
    llama_adapters: Option<&LlamaAdapterHost>,
) -> adapters::Result<Arc<dyn Backend>> {
    Ok(match config.engine {
        EngineKind::LlamaCpp => {
            let engine = Arc::new(
                LlamaCppBackend::load(LlamaConfig {
                    max_sequences: config.engine_sequences,
                    context_tokens: config.engine_context_tokens,
                    weights: config.engine_weights.format(),
                    ..LlamaConfig::new(config.model_path.clone(), &config.model_id)
                })
                .await?,
            );
            if let Some(host) = llama_adapters {
                // A model adapters cannot apply to (not a llama GGUF) is still served.
                if let Err(err) = host.attach(engine.clone()) {
                    tracing::warn!(error = %err, "LoRA adapters are unavailable for this model");
                    host.fail(err.to_string());
                }
            }
            engine
        }
        #[cfg(feature = "mistralrs")]
        EngineKind::MistralRs => Arc::new(
            adapters::MistralRsBackend::load(adapters::EngineConfig {
                model_path: config.model_path.clone(),
                model_id: config.model_id.clone(),
                instances: config.engine_instances,
            })
            .await?,
        ),
        #[cfg(not(feature = "mistralrs"))]
        EngineKind::MistralRs => return Err(adapters::EngineError::Load(MISTRALRS_OFF.into())),
    })
}

/// The API keys to check, or `None` when `auth_disabled` (with a warning). No keys and auth
/// not explicitly off is an error: the server does not start open by accident.
fn api_keys(config: &Config) -> std::io::Result<Option<crate::auth::KeyStore>> {
    let from_env = std::env::var("SWITCHYARD_API_KEYS").ok();
    let keys = crate::auth::KeyStore::load(config.api_keys_file.as_deref(), from_env.as_deref())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if config.auth_disabled {
        if !config.listen.ip().is_loopback() && !config.insecure_allow_public_without_auth {
            return Err(std::io::Error::other(format!(
                "auth_disabled on {}, an address other machines can reach: every endpoint, admin included, would be open to them. Listen on 127.0.0.1, configure API keys, or set insecure_allow_public_without_auth = true",
                config.listen
            )));
        }
        tracing::warn!(
            listen = %config.listen,
            "auth_disabled: no API key is checked; every endpoint is open to whoever reaches this address"
        );
        return Ok(None);
    }
    if keys.is_empty() {
        return Err(std::io::Error::other(
            "no API keys: set api_keys_file or SWITCHYARD_API_KEYS, or auth_disabled = true for local use",
        ));
    }
    Ok(Some(keys))
}

/// A bound, not yet serving, Switchyard server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    /// The llama.cpp engine's adapter host, attached once the model loads.
    llama_adapters: Option<Arc<LlamaAdapterHost>>,
}

/// Why `engine = "mistralrs"` does not load in a default build.
#[cfg(not(feature = "mistralrs"))]
const MISTRALRS_OFF: &str = "this build has no mistral.rs engine: build with `--features mistralrs` (or use engine = \"llama.cpp\")";

/// The host of a mistral.rs engine's adapters: merged into copies of `adapter_base_dir`.
#[cfg(feature = "mistralrs")]
fn merged_host(config: &Config) -> std::io::Result<Option<Arc<dyn AdapterHost>>> {
    match &config.adapter_base_dir {
        Some(base_dir) if config.adapters_available() => {
            let host = adapters::MergedHost::open(base_dir)
                .map_err(|e| std::io::Error::other(format!("adapter base: {e}")))?;
            Ok(Some(Arc::new(host)))
        }
        _ => Ok(None),
    }
}

#[cfg(not(feature = "mistralrs"))]
fn merged_host(_config: &Config) -> std::io::Result<Option<Arc<dyn AdapterHost>>> {
    Ok(None)
}

impl Server {
    /// Binds the configured address (port 0 picks a free one).
    pub async fn bind(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let llama_adapters = (config.engine == EngineKind::LlamaCpp && config.adapters_available())
            .then(|| Arc::new(LlamaAdapterHost::new()));
        let host = match &llama_adapters {
            Some(host) => Some(host.clone() as Arc<dyn AdapterHost>),
            None => merged_host(&config)?,
        };
        let registry = host.and_then(|host| {
            let opened = adapters::AdapterRegistry::new(
                adapters::RegistryConfig {
                    adapter_root: config.adapter_root.clone(),
                    work_dir: config.adapter_work_dir.clone(),
                    max_rank: config.adapter_max_rank,
                    max_resident: config.adapter_max_resident,
                },
                host,
            );
            // Its folders cannot be made (a read-only working folder, say): the server
            // serves without adapters, and the adapter API says they are off.
            opened
                .inspect_err(|err| {
                    tracing::error!(error = %err, root = %config.adapter_root.display(), work_dir = %config.adapter_work_dir.display(), "adapter registry unavailable; adapters are off")
                })
                .ok()
                .map(Arc::new)
        });
        let keys = api_keys(&config)?;
        Ok(Self {
            listener,
            state: AppState::with_adapters(config, registry).with_keys(keys),
            llama_adapters,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish for up to
    /// `shutdown_grace_secs`. The model loads in the background; `/ready` says when it is in.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let llama_adapters = self.llama_adapters.clone();
        tokio::spawn(async move {
            match load_engine(state.config(), llama_adapters.as_deref()).await {
                Ok(backend) => {
                    tracing::info!(model = backend.model_id(), "model loaded; ready");
                    state.set_ready(backend);
                }
                Err(err) => {
                    if let Some(host) = &llama_adapters {
                        host.fail(err.to_string());
                    }
                    tracing::error!(error = %err, path = %state.config().model_path.display(), "model failed to load; /ready stays 503");
                    state.set_failed(err.to_string());
                }
            }
        });

        if self.state.adapters().is_ok() {
            tokio::spawn(crate::handlers::lora::restore_adapters(self.state.clone()));
        }

        let config = self.state.config();
        if config.retrieval_enabled || config.router_enabled {
            tokio::spawn(load_retrieval_and_routing(self.state.clone()));
        }

        let grace = Duration::from_secs(self.state.config().shutdown_grace_secs);
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let serve =
            axum::serve(self.listener, router(self.state)).with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutdown signal received; draining in-flight requests");
                let _ = signalled_tx.send(());
            });
        tokio::select! {
            result = serve => result,
            () = async {
                if signalled_rx.await.is_ok() {
                    tokio::time::sleep(grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
                Ok(())
            }
        }
    }
}

/// Loads the embedder, then the router and the document index on it. Each fails on its own:
/// a router that cannot be used leaves routing to `default_route` and the index serving; an
/// index that cannot open leaves the router routing. Either failing keeps `/ready` at 503.
pub async fn load_retrieval_and_routing(state: AppState) {
    let config = state.config();
    let embedder = match load_embedder(config).await {
        Ok(embedder) => Arc::new(embedder),
        Err(err) => {
            tracing::error!(error = %err, models_dir = %config.models_dir.display(), "embedding model failed to load; /ready stays 503");
            let reason = format!("the embedding model failed to load: {err}");
            state.set_embedder_failed(reason.clone());
            if config.router_enabled {
                state.set_router_failed(reason.clone());
            }
            if config.retrieval_enabled {
                state.set_index_failed(reason);
            }
            return;
        }
    };
    state.set_embedder_ready(embedder.clone());
    match load_served_router(config, &embedder) {
        Ok(router) => state.set_router(router),
        Err(err) => {
            tracing::error!(error = %err, router_dir = %config.router_dir.display(), "router failed to load; requests take default_route and /ready stays 503");
            state.set_router_failed(err.to_string());
        }
    }
    if !config.retrieval_enabled {
        return;
    }
    match open_index(config, embedder).await {
        Ok(retrieval) => {
            let stats = retrieval.store().stats();
            tracing::info!(
                documents = stats.documents,
                chunks = stats.chunks,
                vector_store = retrieval.store().vector_backend(),
                "document index open"
            );
            state.set_index_ready(Arc::new(retrieval));
        }
        Err(err) => {
            tracing::error!(error = %err, index_dir = %config.index_dir.display(), "document index failed to open; /ready stays 503");
            state.set_index_failed(err.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> &'static str {
        panic!("the handler broke")
    }

    /// A handler that panics answers 500 in the OpenAI shape, is counted, and the server
    /// goes on serving.
    #[tokio::test]
    async fn a_panicking_handler_is_a_500_and_the_server_keeps_serving() {
        let state = AppState::new(Config::default());
        let routes = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }));
        let app = with_service_layers(routes, state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let response = client.get(format!("{base}/boom")).send().await.unwrap();
            assert_eq!(response.status(), 500);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "internal_error", "{body}");
            assert_eq!(body["error"]["type"], "server_error", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(!message.contains("the handler broke"), "{body}");
        }
        let fine = client.get(format!("{base}/fine")).send().await.unwrap();
        assert_eq!(fine.status(), 200);
        let counted = state
            .metrics()
            .panics_total
            .with_label_values::<&str>(&[])
            .get();
        assert_eq!(counted, 2);
    }
}
