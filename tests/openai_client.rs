//! The official `openai` Python client against the real server: a chat completion, a streamed
//! one with usage, typed errors, embeddings, and the `rag` route's extension fields. The client
//! lives in the venv the test setup creates.

use std::path::PathBuf;
use std::process::Command;

use switchyard_server::Config;
use switchyard_tests::{rag_config, workspace_root, TestServer};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_TEST_PYTHON") {
        return p.into();
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.is_file(),
        "no test venv at {}: run `scripts/setup-test-env.sh` (the README's test command does)",
        venv.display()
    );
    venv
}

#[test]
fn official_openai_client_chat_stream_and_errors() {
    let index = tempfile::tempdir().unwrap();
    let mut config = rag_config(index.path());
    // Chat checks are quick on `simple`; the script pins `rag` where it wants it.
    config.default_route = switchyard_server::config::Route::Simple;
    let server = TestServer::start_ready(config);
    server.wait_index_ready(std::time::Duration::from_secs(120));
    let output = Command::new(python())
        .arg(workspace_root().join("tests/python/openai_client_check.py"))
        .arg(format!("{}/v1", server.base))
        .arg(Config::default().model_id)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "openai client check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ALL CHECKS PASSED"), "{stdout}");
}
