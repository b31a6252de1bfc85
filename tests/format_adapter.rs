//! The committed format adapter (`adapters/format/fmt-v1`, trained by
//! `adapters/format/train.py`) on the real converted base, behind the real server: loaded at
//! start (`startup_adapters`) as the `rag` route's default adapter, it answers held-out questions
//! (from the retrieval dev set, never trained on) in the answer schema with quotes the server
//! verifies against the cited chunks, both with constrained decoding (the server's setting)
//! and without it.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_server::config::AnswerFormat;
use switchyard_server::format_eval::{measure, rag_prompt};
use switchyard_server::pipeline::sources::matches_answer_schema;
use switchyard_tests::{
    corpus_text, post_chat_with_headers, rag_config, workspace_root, TestServer,
};

/// The pages the questions below are about (their relevant documents in the dev set).
const PAGES: [&str; 3] = ["git-stash.txt", "git-bisect.txt", "git-reset.txt"];

/// Held-out questions: retrieval/eval/git-docs-dev.jsonl q003, q004 and q011.
const QUESTIONS: [&str; 3] = [
    "how do i undo my last commit but keep the changes in my files",
    "git stash -u vs --all, how do I stash untracked files aswell?",
    "the app worked fine a month ago and now it's broken. how can I figure out which change caused it?",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_trained_format_adapter_answers_in_the_schema_with_verbatim_quotes() {
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("index");
    let mut config = rag_config(&index);
    config.adapters_enabled = true;
    config.adapter_root = workspace_root().join("adapters/format");
    config.adapter_work_dir = work.path().join("generations");
    config.rag_answer_format = AnswerFormat::Json;
    config.route_adapters = [("rag".to_string(), "format".to_string())].into();
    config.startup_adapters = [("format".to_string(), "fmt-v1".into())].into();
    let server = TestServer::start_ready(config);
    server.wait_index_ready(Duration::from_secs(120));
    let client = reqwest::Client::new();
    for page in PAGES {
        let response = client
            .post(server.url("/v1/documents"))
            .json(&json!({"id": page, "text": corpus_text(page)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // Loaded at start (`startup_adapters`), in the background: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let generation = loop {
        if let Some((_, generation)) = server.state.adapters().unwrap().engine("format") {
            break generation;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "format adapter never loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Through the server: constrained decoding plus the adapter, quotes checked by the server.
    let mut kept_quotes = 0;
    for question in QUESTIONS {
        let request = json!({
            "model": switchyard_server::Config::default().model_id,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0, "max_tokens": 200
        });
        let (status, headers, body) = post_chat_with_headers(&server, &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            headers["x-switchyard-adapter"],
            format!("format@{generation}").as_str()
        );
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        eprintln!(
            "{question}\n  -> {content}\n  retrieval {}",
            body["retrieval"]
        );
        let answer: Value = serde_json::from_str(content).expect("the answer is JSON");
        let sources = body["citations"].as_array().unwrap().len();
        assert!(matches_answer_schema(&answer, sources), "{answer}");
        assert!(!answer["answer"].as_str().unwrap().trim().is_empty());
        kept_quotes += answer["citations"].as_array().unwrap().len();
    }
    // The server keeps only quotes it found in their source; at least one survives.
    assert!(kept_quotes >= 1, "{kept_quotes} verified quotes");

    // The adapter alone, constraints off: the schema and the verbatim quotes come from the
    // training, not from the grammar.
    let retrieval = server.state.retrieval().unwrap();
    let mut prompts = Vec::new();
    for question in QUESTIONS {
        prompts.push(rag_prompt(&retrieval, "default", question).await.unwrap());
    }
    let (engine, _) = server
        .state
        .adapters()
        .unwrap()
        .engine("format")
        .expect("loaded");
    let free = measure(engine.as_ref(), &prompts, false, 200)
        .await
        .unwrap();
    eprintln!("{}", free.line("adapter, constraints off"));
    assert_eq!(free.valid, QUESTIONS.len(), "{}", free.line("adapter, off"));
    assert!(free.verbatim >= 1, "{}", free.line("adapter, off"));
}
