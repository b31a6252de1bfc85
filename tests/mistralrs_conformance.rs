//! The mistral.rs engine's conformance subset: whatever the default engine is, mistral.rs
//! keeps answering chat requests, streams, schema-constrained output and tool calls over the
//! same API.
//! (Its batching is covered by `tests/concurrency.rs`; adapters, which are served by merged
//! mistral.rs models, by `tests/adapters.rs` and `tests/format_adapter.rs`.)

use serde_json::json;
use switchyard_server::{Config, EngineKind};
use switchyard_tests::{
    chat_body, post_chat, post_place_request, stream_chat, test_config, TestServer,
};

#[tokio::test]
async fn mistralrs_chats_streams_and_constrains() {
    let server = TestServer::start_ready(Config {
        engine: EngineKind::MistralRs,
        ..test_config()
    });
    let body = chat_body("What is the capital of France?", 12);
    let (status, response) = post_chat(&server, &body).await;
    assert_eq!(status, 200, "{response}");
    let text = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(!text.trim().is_empty(), "{response}");
    let usage = &response["usage"];
    assert!(
        usage["completion_tokens"].as_u64().unwrap() <= 12,
        "{usage}"
    );

    let streamed = stream_chat(&server, &body).await;
    assert!(streamed.ended_with_done());
    assert_eq!(
        streamed.text(),
        text,
        "streamed and whole answers are the same (greedy)"
    );

    post_place_request(&server, true).await;

    // A tool call, with the tool declared as LangChain sends it (no `additionalProperties`):
    // the arguments hold the declared key only.
    let mut body = chat_body("What's the weather in Oslo?", 60);
    body["tools"] = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}]);
    body["tool_choice"] = json!("required");
    let (status, response) = post_chat(&server, &body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        response["choices"][0]["finish_reason"], "tool_calls",
        "{response}"
    );
    let raw = response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    let arguments: serde_json::Value = serde_json::from_str(raw).unwrap();
    let keys: Vec<&String> = arguments.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["city"], "{raw}");
}
