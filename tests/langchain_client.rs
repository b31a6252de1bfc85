//! LangChain's `ChatOpenAI` against the real server: a plain answer, `bind_tools` with a tool
//! declared as a typed Python function (no `additionalProperties`), the tool-result
//! follow-up, and a stream. LangChain lives in the venv the test setup creates.

use switchyard_tests::{run_python_check, test_config, TestServer};

#[test]
fn langchain_chat_openai_calls_tools_as_declared() {
    let server = TestServer::start_ready(test_config());
    run_python_check(&server, "langchain_check.py");
}
