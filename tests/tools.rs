//! Routing end to end: the trained router (trained here on `router/data/routes.jsonl` with the
//! real embedder) choosing routes over real HTTP, abstention to the fallback route, refusal of
//! a router trained on another embedding model, and the `tool` route's OpenAI tool calls
//! (schema-constrained decoding on the real model), `tool_choice`, and tool-result follow-ups.

use std::time::Duration;

use adapters::{collect, ChatMessage, GenerationRequest, Role, SamplingParams};
use serde_json::{json, Value};
use switchyard_tests::{
    metric_value, post_chat_with_headers, rag_config, scrape_metrics, stream_chat, trained_router,
    TestServer,
};
use tokio::sync::OnceCell;

struct Routed {
    server: TestServer,
    _index: tempfile::TempDir,
}

/// A server that routes with the trained router.
async fn routed_server() -> &'static TestServer {
    static SERVER: OnceCell<Routed> = OnceCell::const_new();
    let router = trained_router().await.to_path_buf();
    &SERVER
        .get_or_init(|| async move {
            let index = tempfile::tempdir().unwrap();
            let mut config = rag_config(index.path());
            config.router_dir = router;
            config.router_enabled = true;
            let server = TestServer::start_ready(config);
            server.wait_index_ready(Duration::from_secs(120));
            Routed {
                server,
                _index: index,
            }
        })
        .await
        .server
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
         "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression",
         "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "create_ticket", "description": "Open a support ticket",
         "parameters": {"type": "object", "properties": {"title": {"type": "string"}, "body": {"type": "string"},
          "priority": {"type": "string", "enum": ["low", "medium", "high"]}}, "required": ["title", "body", "priority"], "additionalProperties": false}}}
    ])
}

fn chat(prompt: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": switchyard_server::Config::default().model_id,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 40,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn constrained_decoding_follows_a_tool_call_schema() {
    let server = TestServer::shared();
    let backend = server.state.backend().unwrap();
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "arguments": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": false
            }
        },
        "required": ["name", "arguments"],
        "additionalProperties": false
    });
    let request = GenerationRequest {
        messages: vec![
            ChatMessage::new(
                Role::System,
                "Call the get_weather tool. Reply with JSON only.",
            ),
            ChatMessage::new(Role::User, "What's the weather in Oslo?"),
        ],
        sampling: SamplingParams {
            temperature: 0.0,
            max_tokens: 60,
            ..SamplingParams::default()
        },
        json_schema: Some(schema),
    };
    let output = collect(backend.generate(request).await.unwrap())
        .await
        .unwrap();
    let call: Value =
        serde_json::from_str(&output.text).unwrap_or_else(|e| panic!("{e}: {:?}", output.text));
    assert_eq!(call["name"], "get_weather", "{call}");
    assert!(call["arguments"]["city"].is_string(), "{call}");
}

#[tokio::test]
async fn the_router_picks_routes_and_says_so() {
    let server = routed_server().await;
    for (prompt, route) in [
        ("hi there, how are you today?", "simple"),
        (
            "how do I undo the last commit but keep my changes in git",
            "rag",
        ),
    ] {
        let (status, headers, body) =
            post_chat_with_headers(server, &chat(prompt, json!({"max_tokens": 4}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-switchyard-route"], route, "{prompt}: {body}");
        let routing = &body["routing"];
        assert_eq!(routing["decided_by"], "router", "{routing}");
        assert_eq!(routing["predicted"], route);
        let confidence = routing["confidence"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&confidence), "{routing}");
        let header: f64 = headers["x-switchyard-route-confidence"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((header - confidence).abs() < 1e-3);
        assert_eq!(body.get("citations").is_some(), route == "rag", "{body}");
    }
    // The router says `tool`, the request has no tools: answered on simple, and said so.
    let (_, headers, body) = post_chat_with_headers(
        server,
        &chat(
            "what's the weather like in Oslo right now?",
            json!({"max_tokens": 4}),
        ),
    )
    .await;
    assert_eq!(headers["x-switchyard-route"], "simple", "{body}");
    assert_eq!(body["routing"]["predicted"], "tool", "{body}");
    assert!(body["routing"]["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("no tools"));
    // A pinned route wins over the router.
    let (_, headers, body) = post_chat_with_headers(
        server,
        &chat("hi there", json!({"route": "rag", "max_tokens": 4})),
    )
    .await;
    assert_eq!(headers["x-switchyard-route"], "rag");
    assert_eq!(body["routing"]["decided_by"], "client");

    let metrics = scrape_metrics(server).await;
    for series in [
        "switchyard_route_decisions_total{decided_by=\"router\",route=\"simple\"}",
        "switchyard_router_classification_duration_seconds_count",
        "switchyard_router_confidence_count{predicted=\"tool\"}",
        "switchyard_route_fallbacks_total{reason=\"no_tools\"}",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "{series} missing:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn the_tool_route_returns_openai_tool_calls() {
    let server = routed_server().await;
    let (status, headers, body) = post_chat_with_headers(
        server,
        &chat(
            "What's the weather in Oslo?",
            json!({"tools": tools(), "max_tokens": 60}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-switchyard-route"], "tool", "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather", "{call}");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        arguments["city"].as_str().unwrap().contains("Oslo"),
        "{arguments}"
    );
    // Tool calls count their tokens and first-token latency like the other routes (at least
    // this call's: the server is shared with other tests).
    let metrics = scrape_metrics(server).await;
    for (series, least) in [
        (
            "switchyard_prompt_tokens_total{route=\"tool\"}",
            body["usage"]["prompt_tokens"].as_f64().unwrap(),
        ),
        (
            "switchyard_completion_tokens_total{route=\"tool\"}",
            body["usage"]["completion_tokens"].as_f64().unwrap(),
        ),
        (
            "switchyard_time_to_first_token_seconds_count{route=\"tool\"}",
            1.0,
        ),
    ] {
        assert!(least > 0.0);
        assert!(
            metric_value(&metrics, series) >= least,
            "{series}: {metrics}"
        );
    }

    // The follow-up with the tool's result is answered normally.
    let follow_up = json!({
        "model": switchyard_server::Config::default().model_id,
        "temperature": 0, "max_tokens": 30, "tools": tools(),
        "messages": [
            {"role": "user", "content": "What's the weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature_c\": 4, \"sky\": \"rain\"}"}
        ]
    });
    let (status, headers, body) = post_chat_with_headers(server, &follow_up).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-switchyard-route"], "simple");
    assert_eq!(body["routing"]["decided_by"], "tool_result");
    assert_ne!(body["choices"][0]["finish_reason"], "tool_calls");
    assert!(!body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn tool_choice_forces_forbids_or_names_the_tool() {
    let server = routed_server().await;
    // Named: the call is that tool, even for a question the router would send elsewhere.
    let named = json!({"type": "function", "function": {"name": "calculator"}});
    let (_, _, body) = post_chat_with_headers(
        server,
        &chat(
            "what is 12 times 7",
            json!({"tools": tools(), "tool_choice": named, "max_tokens": 40}),
        ),
    )
    .await;
    assert_eq!(body["routing"]["decided_by"], "tool_choice", "{body}");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "calculator",
        "{body}"
    );
    // None: never a call; the router's `tool` falls back to simple.
    let (_, headers, body) = post_chat_with_headers(
        server,
        &chat(
            "what's the weather in Paris",
            json!({"tools": tools(), "tool_choice": "none", "max_tokens": 4}),
        ),
    )
    .await;
    assert_eq!(headers["x-switchyard-route"], "simple", "{body}");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
    // Streamed: a tool_calls delta, then finish_reason tool_calls, then [DONE].
    let streamed = stream_chat(
        server,
        &chat(
            "open a high priority ticket: git push fails with 403",
            json!({"tools": tools(), "tool_choice": "required", "max_tokens": 80, "stream": true}),
        ),
    )
    .await;
    assert!(streamed.ended_with_done());
    let chunks = streamed.chunks();
    assert_eq!(chunks[0]["routing"]["route"], "tool");
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .expect("a tool_calls delta");
    assert_eq!(call["index"], 0);
    assert!(call["function"]["arguments"].is_string());
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    // Bad tools and choices are 400s.
    for extra in [
        json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}),
        json!({"tool_choice": "required"}),
        json!({"tools": tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
    ] {
        let (status, _, body) = post_chat_with_headers(server, &chat("hi", extra.clone())).await;
        assert_eq!(status, 400, "{extra} -> {body}");
        assert_eq!(body["error"]["code"], "invalid_value");
    }
}

#[tokio::test]
async fn below_threshold_the_router_abstains_to_the_fallback_route() {
    // A copy of the router whose thresholds no prediction reaches.
    let dir = tempfile::tempdir().unwrap();
    let source = trained_router().await;
    for name in ["router.safetensors", "router.json"] {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    let meta_path = dir.path().join("router.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    for threshold in meta["thresholds"].as_object_mut().unwrap().values_mut() {
        *threshold = json!(1.0);
    }
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let index = tempfile::tempdir().unwrap();
    let mut config = rag_config(index.path());
    config.router_dir = dir.path().to_path_buf();
    config.router_enabled = true;
    config.router_fallback_route = switchyard_server::config::Route::Simple;
    let server = TestServer::start_ready(config);
    server.wait_index_ready(Duration::from_secs(120));
    let (_, headers, body) = post_chat_with_headers(
        &server,
        &chat(
            "how do I rebase my branch onto main",
            json!({"max_tokens": 4}),
        ),
    )
    .await;
    assert_eq!(headers["x-switchyard-route"], "simple", "{body}");
    assert_eq!(body["routing"]["decided_by"], "router_abstained");
    assert_eq!(body["routing"]["predicted"], "rag");
    let metrics = scrape_metrics(&server).await;
    assert!(
        metrics.contains("switchyard_router_abstentions_total{predicted=\"rag\"} 1"),
        "{metrics}"
    );
}

/// A router that cannot be used is refused at start on its own: `/ready` says to retrain, the
/// documents API still serves (the router is not part of the index), and chat requests take
/// `default_route`, saying so and counted as a fallback.
#[tokio::test]
async fn a_router_of_another_embedding_model_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let source = trained_router().await;
    for name in ["router.safetensors", "router.json"] {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    let meta_path = dir.path().join("router.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["embedding_model"]["sha256"] = json!("0000");
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let index = tempfile::tempdir().unwrap();
    let mut config = rag_config(index.path());
    config.router_dir = dir.path().to_path_buf();
    config.router_enabled = true;
    let server = TestServer::start(config);
    let start = std::time::Instant::now();
    let ready = loop {
        let response = reqwest::get(server.url("/ready")).await.unwrap();
        let body: Value = response.json().await.unwrap();
        let loading = ["model_not_ready", "index_unavailable"]
            .contains(&body["error"]["code"].as_str().unwrap_or(""))
            || body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("still loading"));
        if !loading {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["error"]["code"], "router_unavailable", "{ready}");
    assert!(
        ready["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retrain"),
        "{ready}"
    );
    let documents = reqwest::get(server.url("/v1/documents")).await.unwrap();
    assert_eq!(documents.status(), 200);
    let (status, headers, body) = post_chat_with_headers(
        &server,
        &chat("hi there, how are you today?", json!({"max_tokens": 4})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-switchyard-route"], "rag", "{body}");
    assert_eq!(
        body["routing"]["decided_by"], "router_unavailable",
        "{body}"
    );
    let metrics = scrape_metrics(&server).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchyard_route_fallbacks_total{reason=\"router_unavailable\"}"
        ),
        1.0,
        "{metrics}"
    );
}

/// A tool as LangChain's `bind_tools` and most hand-written tools send it: no
/// `additionalProperties: false`. Arguments still hold only the declared keys, in compact
/// JSON; a call cut by `max_tokens` is `length` with neither a call nor raw JSON as content.
#[tokio::test]
async fn tools_without_additional_properties_get_declared_arguments_only() {
    let server = routed_server().await;
    let open_tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}]);
    let (status, _, body) = post_chat_with_headers(
        server,
        &chat(
            "What's the weather in Oslo?",
            json!({"tools": open_tools, "tool_choice": "required", "max_tokens": 60}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert!(choice["message"]["content"].is_null(), "{body}");
    let raw = choice["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    let arguments: Value = serde_json::from_str(raw).unwrap();
    let keys: Vec<&String> = arguments.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["city"], "{raw}");
    assert_eq!(raw, arguments.to_string(), "compact JSON");

    for stream in [false, true] {
        let body = chat(
            "What's the weather in Oslo?",
            json!({"tools": open_tools, "tool_choice": "required", "max_tokens": 3, "stream": stream}),
        );
        if stream {
            let streamed = stream_chat(server, &body).await;
            assert!(streamed.ended_with_done());
            let chunks = streamed.chunks();
            assert!(
                chunks
                    .iter()
                    .any(|c| c["choices"][0]["finish_reason"] == "length"),
                "{chunks:?}"
            );
            assert_eq!(streamed.text(), "", "no raw JSON as content: {chunks:?}");
            assert!(!chunks
                .iter()
                .any(|c| c["choices"][0]["delta"].get("tool_calls").is_some()));
        } else {
            let (status, _, response) = post_chat_with_headers(server, &body).await;
            assert_eq!(status, 200, "{response}");
            let choice = &response["choices"][0];
            assert_eq!(choice["finish_reason"], "length", "{response}");
            assert!(choice["message"]["content"].is_null(), "{response}");
            assert!(choice["message"].get("tool_calls").is_none(), "{response}");
        }
    }
}

/// While a maximal `/v1/embeddings` call holds the embedder, a chat request's routing
/// classification waits for one piece of it, not for the whole call.
#[tokio::test(flavor = "multi_thread")]
async fn routing_does_not_wait_behind_a_maximal_embeddings_call() {
    let index = tempfile::tempdir().unwrap();
    let mut config = rag_config(index.path());
    config.router_dir = trained_router().await.to_path_buf();
    config.router_enabled = true;
    let server = TestServer::start_ready(config);
    server.wait_index_ready(Duration::from_secs(120));
    let inputs: Vec<String> = (0..switchyard_server::handlers::embeddings::MAX_INPUTS)
        .map(|i| format!("note {i} on git branches"))
        .collect();
    let bulk = {
        let url = server.url("/v1/embeddings");
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = reqwest::Client::new()
                .post(url)
                .json(&json!({"model": "all-minilm-l6-v2", "input": inputs}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, body) = post_chat_with_headers(
        &server,
        &json!({"model": "smollm2-135m-instruct", "max_tokens": 2,
                "messages": [{"role": "user", "content": "Thanks, that was helpful!"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !bulk.is_finished(),
        "the embeddings call ended first: make it longer"
    );
    let metrics = scrape_metrics(&server).await;
    let routing = metric_value(
        &metrics,
        "switchyard_router_classification_duration_seconds_sum",
    );
    let bulk = bulk.await.unwrap();
    let decided_by = body["routing"]["decided_by"].as_str().unwrap();
    assert!(
        decided_by.starts_with("router") && decided_by != "router_timeout",
        "{body}"
    );
    assert!(
        Duration::from_secs_f64(routing) * 10 < bulk,
        "routing took {routing} s beside an embeddings call of {bulk:?}"
    );
}
