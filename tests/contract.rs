//! The API contract: schemathesis (PyPI, `tests/python/run_schemathesis.sh`) generates requests
//! for every operation of `server/openapi.json`, as served at `/openapi.json`, and sends them
//! to the real server (real model, real index, adapters on, keys on) over real HTTP. It fails
//! on any 5xx, any undocumented status or content type, and any body (JSON, or each SSE event)
//! that does not match the document.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use switchyard_server::Config;
use switchyard_tests::{corpus_text, get_text, rag_config, workspace_root, TestServer};

const KEY: &str = "sk-contract-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_5xx_and_no_schema_violation() {
    let scratch = tempfile::tempdir().unwrap();
    let keys = scratch.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"contract\"\nkey = \"{KEY}\"\nscopes = [\"inference\", \"admin\", \"metrics\"]\n"
        ),
    )
    .unwrap();
    let server = TestServer::start_ready(Config {
        auth_disabled: false,
        api_keys_file: Some(keys),
        // Short answers keep hundreds of generated requests within minutes.
        max_tokens_cap: 16,
        default_max_tokens: 16,
        // Short prompts too: each valid chat case runs the model.
        max_body_bytes: 4096,
        max_messages: 8,
        rag_top_k: 1,
        adapters_enabled: true,
        adapter_root: scratch.path().join("adapters"),
        adapter_work_dir: scratch.path().join("generations"),
        ..rag_config(&scratch.path().join("index"))
    });
    server.wait_index_ready(Duration::from_secs(120));
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v1/documents"))
        .bearer_auth(KEY)
        .json(&json!({"id": "git-stash.txt", "text": &corpus_text("git-stash.txt")[..3000]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The document served is the one in the tree.
    let served = get_text(&server, "/openapi.json").await;
    assert_eq!(
        served,
        std::fs::read_to_string(workspace_root().join("server/openapi.json")).unwrap()
    );

    let output = tokio::task::spawn_blocking({
        let base_url = server.url("");
        move || {
            Command::new(workspace_root().join("tests/python/run_schemathesis.sh"))
                .env("BASE_URL", base_url.trim_end_matches('/'))
                .env("API_KEY", KEY)
                .env(
                    "SCHEMA",
                    format!("{}/openapi.json", base_url.trim_end_matches('/')),
                )
                .env("MAX_EXAMPLES", "8")
                .output()
                .expect("schemathesis runs (scripts/setup-test-env.sh installs it into .venv)")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis failed:\n{stdout}");
}
