//! The `tool` route's engine part: constrained decoding with a JSON schema built from tool
//! parameter schemas, on the real model.

use adapters::{collect, ChatMessage, GenerationRequest, Role, SamplingParams};
use serde_json::{json, Value};
use switchyard_tests::TestServer;

#[tokio::test]
async fn constrained_decoding_follows_a_tool_call_schema() {
    let server = TestServer::shared();
    let backend = server.state.backend().unwrap();
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "arguments": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": false
            }
        },
        "required": ["name", "arguments"],
        "additionalProperties": false
    });
    let request = GenerationRequest {
        messages: vec![
            ChatMessage::new(Role::System, "Call the get_weather tool. Reply with JSON only."),
            ChatMessage::new(Role::User, "What's the weather in Oslo?"),
        ],
        sampling: SamplingParams {
            temperature: 0.0,
            max_tokens: 60,
            ..SamplingParams::default()
        },
        json_schema: Some(schema),
    };
    let output = collect(backend.generate(request).await.unwrap()).await.unwrap();
    let call: Value = serde_json::from_str(&output.text).unwrap_or_else(|e| panic!("{e}: {:?}", output.text));
    assert_eq!(call["name"], "get_weather", "{call}");
    assert!(call["arguments"]["city"].is_string(), "{call}");
}
