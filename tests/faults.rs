//! Faults injected under a real server, over real HTTP: a Qdrant server that refuses
//! connections or accepts and never answers, and an embedder kept busy past the stage timeout. The
//! `rag` route keeps answering 200 from BM25 alone, marked degraded with the cause, and the
//! degradation is counted; nothing answers 5xx.
//!
//! (A model that cannot load is in `tests/lifecycle.rs`; kill -9 during ingest and during an
//! adapter load in `tests/crash.rs`; vector-store errors at the retriever in
//! `retrieval/tests/ingest.rs`.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_server::config::VectorStoreKind;
use switchyard_server::Config;
use switchyard_tests::{
    corpus_text, metric_value, post_chat, rag_config, scrape_metrics, upsert_document, TestServer,
};

fn question(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "How do I stash my changes?"}],
        "temperature": 0,
        "max_tokens": 8
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn qdrant_down_or_silent_degrades_to_bm25_never_5xx() {
    // Refused connections: a port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, cause) in [(closed, "vector_error"), (silent_port, "vector_timeout")] {
        let index = tempfile::tempdir().unwrap();
        let config = Config {
            vector_store: VectorStoreKind::Qdrant,
            qdrant_url: format!("http://127.0.0.1:{port}"),
            retrieval_timeout_ms: 1500,
            ..rag_config(index.path())
        };
        let model = config.model_id.clone();
        let server = TestServer::start_ready(config);
        server.wait_index_ready(Duration::from_secs(120));
        for stream in [false, true] {
            let mut body = question(&model);
            body["stream"] = json!(stream);
            let response = reqwest::Client::new()
                .post(server.url("/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{cause}, stream {stream}");
            let text = response.text().await.unwrap();
            let retrieval: Value = if stream {
                let first = text
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("a first chunk");
                serde_json::from_str::<Value>(first).unwrap()["retrieval"].clone()
            } else {
                serde_json::from_str::<Value>(&text).unwrap()["retrieval"].clone()
            };
            assert_eq!(retrieval["degraded"], true, "{text}");
            assert_eq!(retrieval["degraded_causes"], json!([cause]), "{text}");
        }
        // Writes need the vector store: they are refused as unavailable, and lose nothing.
        let status = upsert_document(&server, "git-stash.txt", &corpus_text("git-stash.txt")).await;
        assert_eq!(status, 503, "{cause}");
        let metrics = scrape_metrics(&server).await;
        assert_eq!(
            metric_value(
                &metrics,
                &format!("switchyard_retrieval_degraded_total{{cause=\"{cause}\"}}")
            ),
            2.0,
            "{metrics}"
        );
    }
    drop(silent);
}

/// The embedder answers one call at a time. A bulk call steps aside for short ones, so what
/// makes a question wait is many short calls at once (here 24 threads embedding 4 texts at a
/// time with the server's own embedder, as many questions and routings would): the question's
/// embedding waits past the retrieval stage timeout, and it is answered from BM25 alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_embedder_degrades_to_bm25_with_hits() {
    let index = tempfile::tempdir().unwrap();
    let config = Config {
        retrieval_timeout_ms: 300,
        ..rag_config(index.path())
    };
    let model = config.model_id.clone();
    let server = TestServer::start_ready(config);
    server.wait_index_ready(Duration::from_secs(120));
    assert_eq!(
        upsert_document(&server, "git-stash.txt", &corpus_text("git-stash.txt")).await,
        201
    );

    let embedder = server.state.retrieval().unwrap().embedder().clone();
    let page = corpus_text("git-rebase.txt");
    let texts: Vec<String> = (0..24 * 40)
        .map(|i| {
            let at = (i * 97) % (page.len() - 600);
            let at = (at..).find(|&a| page.is_char_boundary(a)).unwrap();
            let end = (at + 500..).find(|&e| page.is_char_boundary(e)).unwrap();
            page[at..end].to_string()
        })
        .collect();
    let texts = Arc::new(texts);
    let busy: Vec<_> = (0..24)
        .map(|t| {
            let (embedder, texts) = (embedder.clone(), texts.clone());
            tokio::task::spawn_blocking(move || {
                let mut embedded = 0;
                for piece in texts[t * 40..(t + 1) * 40].chunks(4) {
                    embedded += embedder.embed(piece)?.len();
                }
                Ok::<_, retrieval::RetrievalError>(embedded)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = post_chat(&server, &question(&model)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retrieval"]["degraded"], true, "{body}");
    assert_eq!(
        body["retrieval"]["degraded_causes"],
        json!(["embedder_timeout"]),
        "{body}"
    );
    let citations = body["citations"].as_array().unwrap();
    assert!(
        citations.iter().any(|c| c["doc_id"] == "git-stash.txt"),
        "BM25 still finds the page: {body}"
    );
    let mut embedded = 0;
    for task in busy {
        embedded += task.await.unwrap().unwrap();
    }
    assert_eq!(embedded, 24 * 40);
    let metrics = scrape_metrics(&server).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchyard_retrieval_degraded_total{cause=\"embedder_timeout\"}"
        ),
        1.0,
        "{metrics}"
    );
    // With the embedder free again, the next answer is whole.
    let (status, body) = post_chat(&server, &question(&model)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retrieval"]["degraded"], false, "{body}");
}
