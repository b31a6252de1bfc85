//! Limits over real HTTP on the real model: a request past its deadline ends with 504
//! `deadline_exceeded` (an error event in a stream) and frees its slot; a streaming client that
//! stops reading does not hold a generation slot; per-key token buckets answer 429 with
//! `Retry-After`, per key.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_server::Config;
use switchyard_tests::{
    chat_body, metric_value, post_chat, read_stream, scrape_metrics, stream_chat, test_config,
    TestServer,
};

fn assert_error(body: &Value, kind: &str, code: &str) {
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

/// A prompt SmolLM2 answers at length.
fn long_request(max_tokens: u32) -> Value {
    chat_body(
        "Write a very long essay about the history of bridges.",
        max_tokens,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_its_deadline_is_stopped_and_frees_its_slot() {
    // The deadline comes from this machine's speed, not a constant: three times what 64
    // tokens of the same request take here, so the first token (inside those 64) comes well
    // before it, and the 2000-token answer (about 30 times as long) well after it.
    let measured = {
        let server = TestServer::start_ready(test_config());
        let started = Instant::now();
        let (status, body) = post_chat(&server, &long_request(64)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 64, "{body}");
        started.elapsed()
    };
    let deadline_secs = (measured.as_secs_f64() * 3.0).ceil().max(2.0) as u64;
    println!("64 tokens took {measured:?}: the deadline is {deadline_secs} s");
    let server = TestServer::start_ready(Config {
        request_timeout_secs: deadline_secs,
        max_in_flight: 1,
        ..test_config()
    });

    let started = Instant::now();
    let (status, body) = post_chat(&server, &long_request(2000)).await;
    assert_eq!(status, 504, "{body}");
    assert_error(&body, "timeout_error", "deadline_exceeded");
    assert!(
        started.elapsed() < Duration::from_secs(2 * deadline_secs + 5),
        "stopped at the deadline, not at the end: {:?}",
        started.elapsed()
    );
    assert_eq!(server.state.in_flight(), 0, "the slot is freed");

    // A stream past its deadline ends with the error event and no [DONE].
    let streamed = stream_chat(&server, &long_request(2000)).await;
    assert_eq!(streamed.status, 200);
    assert!(!streamed.ended_with_done(), "{:?}", streamed.events);
    let last: Value = serde_json::from_str(streamed.events.last().unwrap()).unwrap();
    assert_error(&last, "timeout_error", "deadline_exceeded");
    assert!(
        !streamed.text().is_empty(),
        "tokens came before the deadline"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.state.in_flight() > 0 {
        assert!(Instant::now() < deadline, "stream slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The next request is served (its deadline is its own).
    let (status, body) = post_chat(&server, &chat_body("Say hi.", 2)).await;
    assert_eq!(status, 200, "{body}");
    let metrics = scrape_metrics(&server).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchyard_rejections_total{reason=\"deadline_exceeded\"}"
        ),
        2.0,
        "{metrics}"
    );
}

/// Over HTTP/2 a client that does not read does not give the server flow-control window, so
/// the server cannot send it more than that window: the generation must not wait for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_client_that_stops_reading_does_not_hold_the_slot() {
    let server = TestServer::start_ready(Config {
        max_in_flight: 1,
        ..test_config()
    });
    let window = 1024;
    let slow = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(window)
        .build()
        .unwrap();
    let mut body = long_request(300);
    body["stream"] = json!(true);
    let held = slow
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(held.version(), reqwest::Version::HTTP_2);

    // While that client reads nothing, its generation runs to its end and the slot frees.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, value) = post_chat(&server, &chat_body("Say hi.", 2)).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{value}");
        assert!(
            Instant::now() < deadline,
            "the slot stayed held by a client that does not read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing was lost: the slow client reads the whole answer afterwards.
    let streamed = read_stream(held).await;
    assert!(streamed.ended_with_done(), "{:?}", streamed.events);
    let sent: usize = streamed.events.iter().map(String::len).sum();
    assert!(
        sent > 4 * window as usize,
        "the answer ({sent} bytes) must exceed the client's window for the test to hold"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_has_its_own_token_bucket() {
    const A: &str = "sk-rate-a-0123456789";
    const B: &str = "sk-rate-b-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"a\"\nkey = \"{A}\"\nscopes = [\"inference\"]\n\n\
             [[keys]]\nname = \"b\"\nkey = \"{B}\"\nscopes = [\"inference\"]\n"
        ),
    )
    .unwrap();
    let server = TestServer::start_ready(Config {
        auth_disabled: false,
        api_keys_file: Some(keys),
        rate_limit_per_second: 0.5,
        rate_limit_burst: 2,
        ..test_config()
    });
    let client = reqwest::Client::new();
    let models = |key: &'static str| client.get(server.url("/v1/models")).bearer_auth(key);

    for _ in 0..2 {
        assert_eq!(models(A).send().await.unwrap().status(), 200);
    }
    let refused = models(A).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_error(
        &refused.json().await.unwrap(),
        "rate_limit_error",
        "rate_limit_exceeded",
    );
    // Another key is not slowed down by the first.
    assert_eq!(models(B).send().await.unwrap().status(), 200);
    // After Retry-After, the first key is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(models(A).send().await.unwrap().status(), 200);

    let metrics = scrape_metrics(&server).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchyard_rejections_total{reason=\"rate_limited\"}"
        ),
        1.0,
        "{metrics}"
    );
}
