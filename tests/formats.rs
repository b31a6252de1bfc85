//! Schema-enforced output on the real model: OpenAI `response_format` (`json_object`,
//! `json_schema`) through constrained decoding, and the `rag` route's JSON answer whose
//! quotes the server checks against the cited sources.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::{chat_body, corpus_text, post_chat, rag_config, TestServer};

#[tokio::test]
async fn json_schema_output_parses_validates_and_stops_when_complete() {
    let server = TestServer::shared();
    let mut body = chat_body("Name one city in France and its country.", 80);
    body["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "place", "strict": true, "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city", "country"],
            "additionalProperties": false
        }}
    });
    let (status, response) = post_chat(server, &body).await;
    assert_eq!(status, 200, "{response}");
    let content = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    let value: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["city", "country"], "{value}");
    assert!(value["city"].is_string() && value["country"].is_string());
    assert_eq!(
        response["choices"][0]["finish_reason"], "stop",
        "the grammar completed: {response}"
    );

    let mut body = chat_body("Describe git in JSON.", 60);
    body["response_format"] = json!({"type": "json_object"});
    let (status, response) = post_chat(server, &body).await;
    assert_eq!(status, 200, "{response}");
    let content = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    if response["choices"][0]["finish_reason"] == "stop" {
        let value: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(value.is_object());
    } else {
        assert!(content.trim_start().starts_with('{'), "{content}");
    }
}

#[tokio::test]
async fn bad_response_formats_are_400() {
    let server = TestServer::shared();
    for (format, code) in [
        (
            json!({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}),
            "invalid_value",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": "nope"}}),
            "invalid_value",
        ),
        (json!({"type": "xml"}), "invalid_json"),
    ] {
        let mut body = chat_body("hi", 4);
        body["response_format"] = format.clone();
        let (status, response) = post_chat(server, &body).await;
        assert_eq!(status, 400, "{format} -> {response}");
        assert_eq!(response["error"]["code"], code, "{format} -> {response}");
    }
}

#[tokio::test]
async fn json_rag_answers_keep_only_quotes_found_in_their_source() {
    let index = tempfile::tempdir().unwrap();
    let mut config = rag_config(index.path());
    config.rag_answer_format = switchyard_server::config::AnswerFormat::Json;
    config.rag_top_k = 2;
    let server = TestServer::start_ready(config);
    server.wait_index_ready(Duration::from_secs(120));
    let response = reqwest::Client::new()
        .post(server.url("/v1/documents"))
        .json(&json!({"id": "git-stash.txt", "text": corpus_text("git-stash.txt")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Room for the longest answer the schema allows (every string has a `maxLength`), so the
    // JSON always closes, the grammar ends the generation there, and the quotes are checked.
    let max_tokens = switchyard_server::pipeline::sources::ANSWER_JSON_MAX_CHARS as u32;
    let (status, body) = post_chat(
        &server,
        &chat_body("How do I stash my changes?", max_tokens),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let citations = body["citations"].as_array().unwrap();
    let retrieval = &body["retrieval"];
    assert!(retrieval["invalid_quotes"].is_u64(), "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        body["choices"][0]["finish_reason"], "stop",
        "the JSON answer closed: {body}"
    );
    let answer: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(answer["answer"].is_string(), "{answer}");
    let normalize = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    for quote in answer["citations"].as_array().unwrap() {
        let index = quote["index"].as_u64().unwrap() as usize;
        let source = citations
            .iter()
            .find(|c| c["index"] == index)
            .expect("cited source exists");
        assert!(
            normalize(source["text"].as_str().unwrap())
                .contains(&normalize(quote["quote"].as_str().unwrap())),
            "{quote} not in source {index}"
        );
    }
    let cited: Vec<u64> = retrieval["cited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let quoted: std::collections::BTreeSet<u64> = answer["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["index"].as_u64().unwrap())
        .collect();
    assert_eq!(cited, quoted.into_iter().collect::<Vec<_>>());
}
