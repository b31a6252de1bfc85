//! Test harness: starts the real Switchyard server (real model, real HTTP) on `127.0.0.1:0`
//! in a thread with its own runtime, so tests on any runtime can share it.
//!
//! Models come from `scripts/fetch_models.py` (the README's test command runs it first).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use switchyard_server::state::AppState;
use switchyard_server::{ApiError, Config, Server};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The default GGUF model; fails loudly when it has not been fetched.
pub fn model_path() -> PathBuf {
    let path = workspace_root().join(Config::default().model_path);
    assert!(
        path.is_file(),
        "model missing at {}: run `python3 scripts/fetch_models.py` (the README's test command does)",
        path.display()
    );
    path
}

/// Defaults with a free port and the fetched model; retrieval off (the `simple` route), auth
/// off.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        model_path: model_path(),
        models_dir: workspace_root().join("models"),
        retrieval_enabled: false,
        router_enabled: false,
        default_route: switchyard_server::config::Route::Simple,
        // Keys are checked in tests/auth.rs; elsewhere the API is open.
        auth_disabled: true,
        // Tests that load adapters turn them on with folders of their own.
        adapters_enabled: false,
        ..Config::default()
    }
}

/// [`test_config`] with retrieval on, the `rag` route by default, and the index in `index_dir`.
pub fn rag_config(index_dir: &std::path::Path) -> Config {
    Config {
        retrieval_enabled: true,
        default_route: switchyard_server::config::Route::Rag,
        index_dir: index_dir.to_path_buf(),
        ..test_config()
    }
}

/// The git documentation corpus (`../shared/corpus/git-docs`, or `scripts/fetch_corpus.sh`'s
/// copy under `data/`).
pub fn corpus_dir() -> PathBuf {
    let root = workspace_root();
    [
        std::env::var_os("SWITCHYARD_CORPUS_DIR").map(PathBuf::from),
        Some(root.join("../shared/corpus/git-docs")),
        Some(root.join("data/corpus/git-docs")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("git-add.txt").is_file())
    .expect("git-docs corpus missing: run scripts/fetch_corpus.sh (the test command does)")
}

/// A corpus file's text.
pub fn corpus_text(doc_id: &str) -> String {
    std::fs::read_to_string(corpus_dir().join(doc_id)).expect("corpus file")
}

/// The characters `start..end` of `text`, as citations count them.
pub fn char_slice(text: &str, start: usize, end: usize) -> String {
    text.chars().skip(start).take(end - start).collect()
}

/// A running server; dropping it shuts it down.
pub struct TestServer {
    pub base: String,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Binds and starts serving; the model loads in the background.
    pub fn start(config: Config) -> Self {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let server = Server::bind(config).await?;
                bound_tx
                    .send((server.local_addr(), server.state()))
                    .expect("test is waiting");
                server
                    .run(async {
                        let _ = shutdown_rx.await;
                    })
                    .await
            })
        });
        let (addr, state) = bound_rx.recv().expect("server failed to bind");
        Self {
            base: format!("http://{addr}"),
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Starts a server and waits until its model is loaded.
    pub fn start_ready(config: Config) -> Self {
        let server = Self::start(config);
        server.wait_ready(Duration::from_secs(300));
        server
    }

    /// One server shared by every test of a test binary.
    pub fn shared() -> &'static TestServer {
        static SHARED: OnceLock<TestServer> = OnceLock::new();
        SHARED.get_or_init(|| Self::start_ready(test_config()))
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            match self.state.backend() {
                Ok(_) => return,
                Err(ApiError::NotReady) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(err) => panic!("server not ready: {err}"),
            }
        }
    }

    /// Waits until the document index is open.
    pub fn wait_index_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            match self.state.retrieval() {
                Ok(_) => return,
                Err(ApiError::IndexUnavailable(reason))
                    if reason == "still loading" && start.elapsed() < timeout =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(err) => panic!("index not ready: {err}"),
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Signals shutdown and waits for the server to drain and stop.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.signal_shutdown();
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("server thread panicked")
    }

    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// A deterministic (greedy) chat request for the default model.
pub fn chat_body(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "model": Config::default().model_id,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

/// POSTs a non-streamed chat completion and returns (status, headers, body).
pub async fn post_chat_with_headers(
    server: &TestServer,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request sent");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.json().await.expect("JSON body"))
}

/// Adds or replaces a document of the default tenant through the admin API (no key); returns
/// the status.
pub async fn upsert_document(server: &TestServer, id: &str, text: &str) -> u16 {
    reqwest::Client::new()
        .post(server.url("/v1/documents"))
        .json(&json!({"id": id, "text": text}))
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

/// The text body of `GET path` (no key).
pub async fn get_text(server: &TestServer, path: &str) -> String {
    reqwest::get(server.url(path))
        .await
        .expect("request sent")
        .text()
        .await
        .expect("text body")
}

/// The server's `/metrics` text.
pub async fn scrape_metrics(server: &TestServer) -> String {
    get_text(server, "/metrics").await
}

/// The value of the first series starting with `series` (0 when absent: counters with
/// labels appear only once they moved).
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// POSTs a non-streamed chat completion and returns (status, body).
pub async fn post_chat(server: &TestServer, body: &Value) -> (u16, Value) {
    let (status, _, body) = post_chat_with_headers(server, body).await;
    (status, body)
}

/// GETs a JSON answer and returns (status, body).
pub async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let response = reqwest::get(server.url(path)).await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The text of a successful non-streamed completion.
pub async fn chat_text(server: &TestServer, body: &Value) -> String {
    let (status, value) = post_chat(server, body).await;
    assert_eq!(status, 200, "{value}");
    value["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string()
}

/// A streamed completion, parsed: every `data:` payload in order.
pub struct StreamedChat {
    pub status: u16,
    pub events: Vec<String>,
}

impl StreamedChat {
    /// The JSON chunks (everything but `[DONE]`).
    pub fn chunks(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e.as_str() != "[DONE]")
            .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
            .collect()
    }

    /// The concatenated content deltas.
    pub fn text(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn ended_with_done(&self) -> bool {
        self.events.last().map(String::as_str) == Some("[DONE]")
    }
}

/// POSTs a chat completion with `stream: true` and returns the response unread.
pub async fn open_stream(server: &TestServer, body: &Value) -> reqwest::Response {
    let mut body = body.clone();
    body["stream"] = json!(true);
    reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

/// POSTs a streamed chat completion and reads the SSE body to its end.
pub async fn stream_chat(server: &TestServer, body: &Value) -> StreamedChat {
    read_stream(open_stream(server, body).await).await
}

/// Reads an SSE response to its end.
pub async fn read_stream(response: reqwest::Response) -> StreamedChat {
    let status = response.status().as_u16();
    let mut buffer = String::new();
    let mut bytes = response.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("body chunk")));
    }
    let events = buffer
        .split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|line| {
                    line.strip_prefix("data: ")
                        .or_else(|| line.strip_prefix("data:"))
                })
                .map(|d| d.trim().to_string())
        })
        .collect();
    StreamedChat { status, events }
}

/// Runs `tests/python/<script> <base>/v1 <model id>` with the test venv's Python (or
/// `SWITCHYARD_TEST_PYTHON`), prints its output, and fails unless it passed every check.
pub fn run_python_check(server: &TestServer, script: &str) {
    let python = match std::env::var_os("SWITCHYARD_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = workspace_root().join(".venv/bin/python");
            assert!(
                venv.is_file(),
                "no test venv at {}: run `scripts/setup-test-env.sh` (the README's test command does)",
                venv.display()
            );
            venv
        }
    };
    let output = std::process::Command::new(python)
        .arg(workspace_root().join("tests/python").join(script))
        .arg(format!("{}/v1", server.base))
        .arg(Config::default().model_id)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ALL CHECKS PASSED"), "{stdout}");
}

/// Asks for a city and its country under a `json_schema` response format (`closed` adds
/// `additionalProperties: false`) and checks the answer: 200, JSON with both as strings, and
/// `stop` (the grammar completed). Returns the whole response.
pub async fn post_place_request(server: &TestServer, closed: bool) -> Value {
    let mut schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"]
    });
    if closed {
        schema["additionalProperties"] = json!(false);
    }
    let mut body = chat_body("Name one city in France and its country.", 80);
    body["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema}
    });
    let (status, response) = post_chat(server, &body).await;
    assert_eq!(status, 200, "{response}");
    let content = response["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let value: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(
        value["city"].is_string() && value["country"].is_string(),
        "{value}"
    );
    assert_eq!(
        response["choices"][0]["finish_reason"], "stop",
        "{response}"
    );
    response
}

/// The intent router trained once per test binary as `scripts/run.sh` trains it (on
/// `router/data/routes.jsonl`, with `routes-chat.jsonl` trained on whole) with the real
/// embedder (seeded, so every binary gets the same one); its folder.
pub async fn trained_router() -> &'static std::path::Path {
    use switchyard_server::routing::{train_router, TrainOptions};
    static DIR: tokio::sync::OnceCell<(tempfile::TempDir, PathBuf)> =
        tokio::sync::OnceCell::const_new();
    &DIR.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("router");
        let models = workspace_root().join("models");
        let embedder =
            retrieval::Embedder::load(&retrieval::EmbedderConfig::from_models_dir(&models))
                .unwrap();
        let report = train_router(
            &embedder,
            &workspace_root().join("router/data/routes.jsonl"),
            &out,
            &TrainOptions {
                extra_data: vec![workspace_root().join("router/data/routes-chat.jsonl")],
                ..TrainOptions::default()
            },
            &mut |_, _, _| {},
        )
        .unwrap();
        assert!(
            report.classifier.accuracy > 0.8,
            "{}",
            report.classifier.render("held out")
        );
        (dir, out)
    })
    .await
    .1
}
