//! The OpenAI-compatible API over real HTTP with the real model: shapes, streaming, errors.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_server::Config;
use switchyard_tests::{
    chat_body, chat_text, get_json, metric_value, open_stream, post_chat, scrape_metrics,
    stream_chat, test_config, TestServer,
};

fn assert_openai_error(body: &Value, code: &str) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].as_str().is_some(), "{body}");
    assert_eq!(error["code"], code, "{body}");
}

#[tokio::test]
async fn chat_completion_has_openai_shape_and_usage() {
    let server = TestServer::shared();
    let (status, body) = post_chat(server, &chat_body("What is the capital of France?", 24)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], Config::default().model_id);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty());
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let usage = &body["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(
        prompt > 5,
        "the chat template adds tokens around the question: {usage}"
    );
    assert!((1..=24).contains(&completion), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
}

#[tokio::test]
async fn max_tokens_stops_with_length() {
    let server = TestServer::shared();
    let mut body = chat_body(
        "Write a long story about a dragon who learns to bake bread.",
        3,
    );
    body["max_completion_tokens"] = json!(3);
    let (status, value) = post_chat(server, &body).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["choices"][0]["finish_reason"], "length");
    assert_eq!(value["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn stop_sequence_ends_generation() {
    let server = TestServer::shared();
    let prompt = "Count from 1 to 10, separated by commas.";
    let free = chat_text(server, &chat_body(prompt, 40)).await;
    assert!(free.contains('5'), "the model counts: {free}");
    let mut body = chat_body(prompt, 40);
    body["stop"] = json!(["5"]);
    let (status, value) = post_chat(server, &body).await;
    assert_eq!(status, 200, "{value}");
    let stopped = value["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        !stopped.contains('5'),
        "stop sequence is not in the output: {stopped}"
    );
    assert_eq!(value["choices"][0]["finish_reason"], "stop");
    assert!(
        free.starts_with(stopped.trim_end()),
        "{free:?} vs {stopped:?}"
    );
}

#[tokio::test]
async fn streaming_matches_non_streaming_and_ends_with_done() {
    let server = TestServer::shared();
    let body = chat_body("Name three colours.", 20);
    let plain = chat_text(server, &body).await;
    let mut streamed_body = body.clone();
    streamed_body["stream_options"] = json!({"include_usage": true});
    let streamed = stream_chat(server, &streamed_body).await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.ended_with_done(), "{:?}", streamed.events);
    let chunks = streamed.chunks();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let ids: std::collections::HashSet<_> = chunks.iter().map(|c| c["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one id per completion");
    assert_eq!(
        streamed.text(),
        plain,
        "greedy streaming equals greedy non-streaming"
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .expect("a finish chunk");
    assert!(["stop", "length"].contains(&finish));
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(
        usage_chunk["choices"],
        json!([]),
        "usage chunk has no choices"
    );
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_chunk() {
    let server = TestServer::shared();
    let streamed = stream_chat(server, &chat_body("Say hello.", 5)).await;
    assert!(streamed.ended_with_done());
    assert!(streamed.chunks().iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn models_health_ready() {
    let server = TestServer::shared();
    let client = reqwest::Client::new();
    let (status, models) = get_json(server, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], Config::default().model_id);
    let health = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let server = TestServer::shared();
    for raw in ["{not json", "{\"model\": 3, \"messages\": []}", "[]", ""] {
        let response = reqwest::Client::new()
            .post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{raw}");
        assert_openai_error(&response.json().await.unwrap(), "invalid_json");
    }
}

#[tokio::test]
async fn unknown_model_is_404() {
    let server = TestServer::shared();
    let mut body = chat_body("hi", 4);
    body["model"] = json!("gpt-17");
    let (status, value) = post_chat(server, &body).await;
    assert_eq!(status, 404);
    assert_openai_error(&value, "model_not_found");
    assert_eq!(value["error"]["param"], "model");
}

#[tokio::test]
async fn max_tokens_over_cap_is_400() {
    let server = TestServer::shared();
    let cap = Config::default().max_tokens_cap as u32;
    let (status, value) = post_chat(server, &chat_body("hi", cap + 1)).await;
    assert_eq!(status, 400);
    assert_openai_error(&value, "max_tokens_exceeded");
}

#[tokio::test]
async fn invalid_values_are_400() {
    let server = TestServer::shared();
    for (field, value) in [
        ("n", json!(3)),
        ("temperature", json!(-1)),
        ("messages", json!([])),
    ] {
        let mut body = chat_body("hi", 4);
        body[field] = value;
        let (status, value) = post_chat(server, &body).await;
        assert_eq!(status, 400, "{field}: {value}");
        assert_openai_error(&value, "invalid_value");
        assert_eq!(value["error"]["param"], field);
    }
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_openai_errors() {
    let server = TestServer::shared();
    let client = reqwest::Client::new();
    let response = client.get(server.url("/v1/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_openai_error(&response.json().await.unwrap(), "not_found");
    let response = client
        .get(server.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_openai_error(&response.json().await.unwrap(), "method_not_allowed");
}

#[tokio::test]
async fn body_over_limit_is_413() {
    let server = TestServer::start_ready(Config {
        max_body_bytes: 2048,
        ..test_config()
    });
    let body = chat_body(&"a".repeat(4096), 4);
    let (status, value) = post_chat(&server, &body).await;
    assert_eq!(status, 413);
    assert_openai_error(&value, "payload_too_large");
    let (status, _) = post_chat(&server, &chat_body("short", 2)).await;
    assert_eq!(status, 200, "a body under the limit still passes");
}

#[tokio::test]
async fn waiting_and_running_gauges_follow_the_llama_cpp_sequences() {
    // One llama.cpp sequence and room for two admitted requests: the second waits for it.
    waiting_and_running_gauges(Config {
        max_in_flight: 2,
        engine_sequences: 1,
        ..test_config()
    })
    .await;
}

#[tokio::test]
async fn waiting_and_running_gauges_follow_the_mistralrs_instances() {
    // One mistral.rs engine instance and room for two admitted requests: the second waits.
    waiting_and_running_gauges(Config {
        max_in_flight: 2,
        engine: switchyard_server::EngineKind::MistralRs,
        engine_instances: 1,
        ..test_config()
    })
    .await;
}

async fn waiting_and_running_gauges(config: Config) {
    let server = TestServer::start_ready(config);
    let long = chat_body("Write a very long essay about the history of bridges.", 400);
    let holder = open_stream(&server, &long).await;
    assert_eq!(holder.status(), 200);
    let waiter = {
        let url = server.url("/v1/chat/completions");
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .json(&chat_body("hi", 2))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let gauges = |metrics: &str| {
        (
            metric_value(metrics, "switchyard_requests_waiting "),
            metric_value(metrics, "switchyard_requests_running "),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = scrape_metrics(&server).await;
        if gauges(&metrics) == (1.0, 1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw one waiting and one running: {:?}",
            gauges(&metrics)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Freeing the instance lets the waiter run and finish; both gauges return to zero.
    drop(holder);
    assert_eq!(waiter.await.unwrap().unwrap(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gauges(&scrape_metrics(&server).await) != (0.0, 0.0) {
        assert!(std::time::Instant::now() < deadline, "gauges never fell");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn overload_is_429_with_retry_after_and_slot_is_freed() {
    let server = TestServer::start_ready(Config {
        max_in_flight: 1,
        ..test_config()
    });
    // Hold the only slot with a long streamed generation.
    let long = chat_body("Write a very long essay about the history of bridges.", 400);
    let holder = open_stream(&server, &long).await;
    assert_eq!(holder.status(), 200);
    assert_eq!(server.state.in_flight(), 1);

    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(&chat_body("hi", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_openai_error(&response.json().await.unwrap(), "server_overloaded");
    let metrics = scrape_metrics(&server).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchyard_rejections_total{reason=\"overloaded\"}"
        ),
        1.0,
        "{metrics}"
    );

    // A client that goes away frees its slot (and its engine request).
    drop(holder);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.state.in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, value) = post_chat(&server, &chat_body("hi", 2)).await;
    assert_eq!(status, 200, "{value}");
}

#[tokio::test]
async fn prompt_longer_than_context_is_400_streamed_or_not() {
    let server = TestServer::shared();
    // SmolLM2's context is 8192 tokens; this is well over it and well under the body limit.
    let body = chat_body(&"git ".repeat(10_000), 4);
    let (status, value) = post_chat(server, &body).await;
    assert_eq!(status, 400, "{value}");
    assert_openai_error(&value, "context_length_exceeded");
    let streamed = stream_chat(server, &body).await;
    assert_eq!(
        streamed.status, 400,
        "the refusal comes before any SSE: {:?}",
        streamed.events
    );
}

#[tokio::test]
async fn seed_makes_sampling_repeatable() {
    let server = TestServer::shared();
    let sampled = |seed: u64| {
        let mut body = chat_body("Invent a name for a new fruit and describe its taste.", 16);
        body["temperature"] = json!(1.3);
        body["seed"] = json!(seed);
        body
    };
    let a = chat_text(server, &sampled(7)).await;
    let b = chat_text(server, &sampled(7)).await;
    assert_eq!(a, b, "same seed, same text");
    let others = [
        chat_text(server, &sampled(8)).await,
        chat_text(server, &sampled(9)).await,
    ];
    assert!(
        others.iter().any(|o| o != &a),
        "other seeds sample other text: {a:?} {others:?}"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_and_request_metrics_move() {
    let server = TestServer::shared();
    let before = scrape_metrics(server).await;
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .header("x-request-id", "trace-me-42")
        .json(&chat_body("Say hi.", 4))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    assert_eq!(response.status(), 200);
    // Without one, the server makes one up.
    let response = reqwest::get(server.url("/health")).await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 32, "{generated}");
    let after = scrape_metrics(server).await;
    for series in [
        "switchyard_http_requests_total{endpoint=\"/v1/chat/completions\",method=\"POST\",status=\"2xx\"}",
        "switchyard_http_request_duration_seconds_count{endpoint=\"/v1/chat/completions\"}",
        "switchyard_time_to_first_token_seconds_count{route=\"simple\"}",
        "switchyard_inter_token_latency_seconds_count{route=\"simple\"}",
        "switchyard_completion_tokens_total{route=\"simple\"}",
        "switchyard_prompt_tokens_total{route=\"simple\"}",
    ] {
        assert!(
            metric_value(&after, series) > metric_value(&before, series),
            "{series} did not move:\n{after}"
        );
    }
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("switchyard_build_info{") && l.ends_with(" 1")),
        "{after}"
    );
    assert!(after.contains("switchyard_requests_running "), "{after}");
}

/// A route this server does not serve is never taken: `tool_choice` cannot force `tool` when
/// `routes` leaves it out (400 on `tool_choice`), and with tools offered but not forced the
/// answer comes on a served route.
#[tokio::test(flavor = "multi_thread")]
async fn a_route_not_served_is_never_taken() {
    use switchyard_server::config::Route;
    let server = TestServer::start_ready(Config {
        routes: vec![Route::Simple],
        default_route: Route::Simple,
        router_fallback_route: Route::Simple,
        ..switchyard_tests::test_config()
    });
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    for tool_choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let mut body = chat_body("Weather in Paris?", 16);
        body["tools"] = tools.clone();
        body["tool_choice"] = tool_choice.clone();
        let (status, answer) = post_chat(&server, &body).await;
        assert_eq!(status, 400, "{tool_choice}: {answer}");
        assert_eq!(answer["error"]["param"], "tool_choice", "{answer}");
    }
    let mut body = chat_body("Weather in Paris?", 4);
    body["tools"] = tools;
    let (status, answer) = post_chat(&server, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["route"], "simple", "{answer}");
}
