//! The official `openai` Python client against the real server: a chat completion, a streamed
//! one with usage, typed errors, embeddings, and the `rag` route's extension fields. The client
//! lives in the venv the test setup creates.

use switchyard_tests::{rag_config, run_python_check, TestServer};

#[test]
fn official_openai_client_chat_stream_and_errors() {
    let index = tempfile::tempdir().unwrap();
    let mut config = rag_config(index.path());
    // Chat checks are quick on `simple`; the script pins `rag` where it wants it.
    config.default_route = switchyard_server::config::Route::Simple;
    let server = TestServer::start_ready(config);
    server.wait_index_ready(std::time::Duration::from_secs(120));
    run_python_check(&server, "openai_client_check.py");
}
