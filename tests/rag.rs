//! The `rag` route end to end: documents ingested through the admin API into a real index
//! (tantivy + qdrant-edge + the real embedder), a real model answering with citations over
//! real HTTP, `/v1/embeddings`, and the retrieval metrics.
//!
//! Documents are pages of git's documentation (the sample corpus).

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::{
    char_slice, corpus_text, get_json, metric_value, post_chat_with_headers, rag_config,
    scrape_metrics, stream_chat, TestServer,
};
use tokio::sync::OnceCell;

/// Pages the shared server's default tenant holds.
const PAGES: [&str; 4] = [
    "git-stash.txt",
    "git-bisect.txt",
    "git-clean.txt",
    "git-cherry-pick.txt",
];

struct Shared {
    server: TestServer,
    _index: tempfile::TempDir,
}

async fn server() -> &'static TestServer {
    static SHARED: OnceCell<Shared> = OnceCell::const_new();
    &SHARED
        .get_or_init(|| async {
            let index = tempfile::tempdir().unwrap();
            let server = TestServer::start_ready(rag_config(index.path()));
            server.wait_index_ready(Duration::from_secs(120));
            for page in PAGES {
                let (status, body) =
                    upsert(&server, json!({"id": page, "text": corpus_text(page)})).await;
                assert!(status == 201 || status == 200, "{status} {body}");
            }
            Shared {
                server,
                _index: index,
            }
        })
        .await
        .server
}

async fn upsert(server: &TestServer, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/documents"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn delete(server: &TestServer, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .delete(server.url(path))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn rag_request(question: &str, stream: bool) -> Value {
    json!({
        "model": switchyard_server::Config::default().model_id,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": stream,
    })
}

/// Every citation's offsets slice its text out of the original corpus file.
fn assert_citations_exact(citations: &[Value]) {
    assert!(!citations.is_empty());
    for (i, citation) in citations.iter().enumerate() {
        assert_eq!(citation["index"], i + 1);
        let doc = citation["doc_id"].as_str().unwrap();
        assert!(PAGES.contains(&doc), "only ingested pages are cited: {doc}");
        let (start, end) = (
            citation["start"].as_u64().unwrap() as usize,
            citation["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            char_slice(&corpus_text(doc), start, end),
            citation["text"].as_str().unwrap(),
            "{}",
            citation["chunk_id"]
        );
        assert!(citation["chunk_id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{doc}#")));
    }
}

/// No `[n]` marker in `text` names a source that was not provided.
fn assert_markers_valid(text: &str, sources: usize) {
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find(']') {
            let inner = &rest[..close];
            if !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
            {
                for n in inner
                    .split(',')
                    .filter_map(|n| n.trim().parse::<usize>().ok())
                {
                    assert!((1..=sources).contains(&n), "marker [{n}] in {text:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_git_question_is_answered_with_citations_of_exact_source_text() {
    let server = server().await;
    let (status, headers, body) = post_chat_with_headers(
        server,
        &rag_request(
            "How do I put my uncommitted changes aside for later?",
            false,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-switchyard-route"], "rag");
    assert_eq!(body["route"], "rag");
    let citations = body["citations"].as_array().expect("citations");
    assert_citations_exact(citations);
    assert!(
        citations.iter().any(|c| c["doc_id"] == "git-stash.txt"),
        "the stash page is among the sources: {citations:?}"
    );
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_markers_valid(text, citations.len());
    let retrieval = &body["retrieval"];
    assert_eq!(retrieval["degraded"], false);
    for n in retrieval["cited"].as_array().unwrap() {
        assert!((1..=citations.len() as u64).contains(&n.as_u64().unwrap()));
    }
    assert!(retrieval["invalid_markers_removed"].is_u64());
    // The prompt carried the sources: far more prompt tokens than the question alone.
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() > 200,
        "{}",
        body["usage"]
    );
}

#[tokio::test]
async fn a_streamed_rag_answer_carries_citations_first_and_cited_sources_last() {
    let server = server().await;
    let streamed = stream_chat(
        server,
        &rag_request("find the commit that introduced a bug", true),
    )
    .await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.ended_with_done());
    let chunks = streamed.chunks();
    let first = &chunks[0];
    assert_eq!(first["route"], "rag");
    let citations = first["citations"]
        .as_array()
        .expect("citations on the first chunk");
    assert_citations_exact(citations);
    assert!(
        citations.iter().any(|c| c["doc_id"] == "git-bisect.txt"),
        "{citations:?}"
    );
    let last = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"].is_string())
        .expect("finish chunk");
    assert!(last["retrieval"]["cited"].is_array(), "{last}");
    assert_markers_valid(&streamed.text(), citations.len());
}

#[tokio::test]
async fn a_pinned_simple_route_does_not_retrieve() {
    let server = server().await;
    let mut request = rag_request("Say hello.", false);
    request["route"] = json!("simple");
    request["max_tokens"] = json!(8);
    let (_, headers, body) = post_chat_with_headers(server, &request).await;
    assert_eq!(headers["x-switchyard-route"], "simple");
    assert!(body.get("citations").is_none(), "{body}");
    // A route that does not exist is a clear 400.
    request["route"] = json!("nowhere");
    let (status, _, body) = post_chat_with_headers(server, &request).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_json");
}

#[tokio::test]
async fn documents_api_upserts_lists_skips_replaces_and_deletes() {
    let server = server().await;
    let tenant = "docs-api";
    let text = corpus_text("git-tag.txt");
    let (status, created) = upsert(
        server,
        json!({"id": "git-tag.txt", "text": text, "tenant": tenant}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "created");
    let chunks = created["chunks"].as_u64().unwrap();
    assert!(chunks > 3);
    let (status, again) = upsert(
        server,
        json!({"id": "git-tag.txt", "text": text, "tenant": tenant}),
    )
    .await;
    assert_eq!((status, again["status"].clone()), (200, json!("unchanged")));

    let (status, list) = get_json(server, &format!("/v1/documents?tenant={tenant}")).await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["chunks"], chunks);
    assert!(data[0]["title"].as_str().unwrap().starts_with("git-tag - "));
    // The default tenant's pages are not in this tenant's list.
    let (_, default_list) = get_json(server, "/v1/documents").await;
    assert!(default_list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["id"] != "git-tag.txt"));

    // A nested id (with '/') round-trips through the path.
    let (status, _) = upsert(
        server,
        json!({"id": "howto/notes.md", "text": "# Notes\n\nSign tags with -s.", "tenant": tenant}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, one) = get_json(
        server,
        &format!("/v1/documents/howto/notes.md?tenant={tenant}"),
    )
    .await;
    assert_eq!((status, one["format"].clone()), (200, json!("markdown")));

    let (status, replaced) = upsert(
        server,
        json!({"id": "howto/notes.md", "text": "# Notes\n\nTags can be annotated.", "tenant": tenant}),
    )
    .await;
    assert_eq!(
        (status, replaced["status"].clone()),
        (200, json!("updated"))
    );

    let (status, deleted) = delete(
        server,
        &format!("/v1/documents/howto/notes.md?tenant={tenant}"),
    )
    .await;
    assert_eq!((status, deleted["deleted"].clone()), (200, json!(true)));
    // The tenant it was deleted in, so a client (and the OpenAPI link to GET) can check it.
    assert_eq!(deleted["tenant"], json!(tenant));
    let (status, gone) = get_json(
        server,
        &format!("/v1/documents/howto/notes.md?tenant={tenant}"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(gone["error"]["code"], "document_not_found");

    // Bad input: clear 4xx in the OpenAI shape, nothing changed.
    for (body, code) in [
        (json!({"id": "x.txt", "text": "   "}), "invalid_document"),
        (json!({"id": "a#b", "text": "t"}), "invalid_document"),
        (
            json!({"id": "x.txt", "text": "t", "tenant": "no spaces"}),
            "invalid_document",
        ),
        (
            json!({"id": "x.txt", "text": "t", "colour": "red"}),
            "invalid_json",
        ),
        (json!({"text": "t"}), "invalid_json"),
    ] {
        let (status, error) = upsert(server, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {error}");
        assert_eq!(error["error"]["code"], code, "{body} -> {error}");
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
    }
    let (status, error) = delete(server, "/v1/documents/never-was.txt").await;
    assert_eq!(
        (status, error["error"]["code"].clone()),
        (404, json!("document_not_found"))
    );
    let (_, list) = get_json(server, &format!("/v1/documents?tenant={tenant}")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn embeddings_are_served_in_the_openai_shape() {
    let server = server().await;
    let post = |body: Value| async move {
        let response = reqwest::Client::new()
            .post(server.url("/v1/embeddings"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    let (status, body) = post(json!({
        "model": "all-minilm-l6-v2",
        "input": ["stash my changes", "save work in progress", "weather in Oslo"],
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    let vectors: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 384));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]));
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() >= 9);

    // base64 carries the same little-endian f32 values.
    let (_, encoded) = post(json!({"model": "all-minilm-l6-v2", "input": "stash my changes", "encoding_format": "base64"})).await;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!((decoded[0] as f64 - vectors[0][0]).abs() < 1e-6);

    for (body, status, code) in [
        (
            json!({"model": "text-embedding-3-small", "input": "x"}),
            404,
            "model_not_found",
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": [1, 2, 3]}),
            400,
            "invalid_value",
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": []}),
            400,
            "invalid_value",
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": ""}),
            400,
            "invalid_value",
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 256}),
            400,
            "invalid_value",
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"}),
            400,
            "invalid_value",
        ),
    ] {
        let (got, error) = post(body.clone()).await;
        assert_eq!(
            (got, error["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }
    // And the model is listed.
    let (_, models) = get_json(server, "/v1/models").await;
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "all-minilm-l6-v2"));
}

#[tokio::test]
async fn retrieval_metrics_move_with_a_rag_request() {
    let server = server().await;
    let before = scrape_metrics(server).await;
    let mut request = rag_request("remove untracked files", false);
    request["max_tokens"] = json!(4);
    let (status, _, _) = post_chat_with_headers(server, &request).await;
    assert_eq!(status, 200);
    let after = scrape_metrics(server).await;
    for series in [
        "switchyard_retrieval_stage_duration_seconds_count{stage=\"bm25\"}",
        "switchyard_retrieval_stage_duration_seconds_count{stage=\"embed\"}",
        "switchyard_retrieval_stage_duration_seconds_count{stage=\"vector\"}",
        "switchyard_retrieval_stage_duration_seconds_count{stage=\"fusion\"}",
        "switchyard_route_decisions_total{decided_by=\"default\",route=\"rag\"}",
        "switchyard_retrieval_results_count{route=\"rag\"}",
    ] {
        assert!(
            metric_value(&after, series) >= metric_value(&before, series) + 1.0,
            "{series} did not move:\n{after}"
        );
    }
    assert!(metric_value(&after, "switchyard_index_documents") >= PAGES.len() as f64);
    assert!(metric_value(&after, "switchyard_index_chunks") > 10.0);
}
