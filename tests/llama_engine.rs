//! The llama.cpp engine's own promises, over real HTTP with the real model: a client that goes
//! away frees its sequence at once, a prompt over the window is `context_length_exceeded`, and
//! constrained output ends when its JSON value closes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use switchyard_server::{Config, EngineKind};
use switchyard_tests::{
    chat_body, chat_text, open_stream, post_chat, post_place_request, test_config, TestServer,
};

fn llama_config() -> Config {
    Config {
        engine: EngineKind::LlamaCpp,
        ..test_config()
    }
}

/// A request whose grammar forces at least 300 numbers (several hundred tokens): it cannot
/// end early, whatever the model would rather say.
fn long_array_request() -> Value {
    let mut body = chat_body("List numbers.", 1500);
    body["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "numbers", "schema": {
            "type": "array", "items": {"type": "integer"}, "minItems": 300
        }}
    });
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_stream_frees_its_sequence_at_once() {
    // One sequence at a time: a request can only run once the one before it has left.
    let server = TestServer::start_ready(Config {
        engine_sequences: 1,
        ..llama_config()
    });
    let short = chat_body("Say hi.", 8);
    chat_text(&server, &short).await; // warm up
    let started = Instant::now();
    chat_text(&server, &short).await;
    let solo = started.elapsed();

    let response = open_stream(&server, &long_array_request()).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("readable");
    assert!(!first.is_empty());
    drop(body); // the client goes away mid-answer

    let started = Instant::now();
    chat_text(&server, &short).await;
    let after = started.elapsed();
    // Had the abandoned sequence kept its place, this request would wait for hundreds of
    // tokens, many times the short request's own time.
    assert!(
        after < solo * 10 + Duration::from_secs(1),
        "the next request took {after:?}, alone {solo:?}"
    );
}

#[tokio::test]
async fn a_prompt_over_the_window_is_context_length_exceeded() {
    let server = TestServer::start_ready(Config {
        engine_context_tokens: 256,
        ..llama_config()
    });
    let (status, response) = post_chat(&server, &chat_body(&"git commit ".repeat(200), 8)).await;
    assert_eq!(status, 400, "{response}");
    assert_eq!(
        response["error"]["code"], "context_length_exceeded",
        "{response}"
    );
    // The engine still serves what fits.
    let (status, response) = post_chat(&server, &chat_body("Say hi.", 8)).await;
    assert_eq!(status, 200, "{response}");
}

#[tokio::test]
async fn constrained_output_ends_when_the_value_closes() {
    let server = TestServer::start_ready(llama_config());
    let response = post_place_request(&server, false).await;
    let completion = response["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        completion < 80,
        "it stopped at the close, not at max_tokens: {response}"
    );
    // Compact JSON: no layout whitespace between tokens (the model spends no tokens on it).
    let content = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    let value: Value = serde_json::from_str(content).unwrap();
    assert_eq!(content, value.to_string(), "compact JSON");
}
