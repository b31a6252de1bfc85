//! No cross-talk: concurrent requests get exactly the answers they get alone, on both
//! engines.
//!
//! mistral.rs 0.8.1 mixes answers of sequences decoded in one CPU batch (see the engine's
//! module doc), so it runs one sequence per instance; llama.cpp decodes all eight in one
//! batch per step. This test fails if either engine ever lets answers cross.

use futures::future::join_all;
use switchyard_server::{Config, EngineKind};
use switchyard_tests::{chat_body, chat_text, stream_chat, test_config, TestServer};

const PROMPTS: [&str; 8] = [
    "What is a cat?",
    "What is a tree?",
    "What is a boat?",
    "Name a red fruit.",
    "Why is the sky blue?",
    "Give me a synonym for happy.",
    "How many legs does a spider have?",
    "Write one sentence about winter.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mistralrs_concurrent_answers_equal_solo_answers() {
    concurrent_answers_equal_solo_answers(Config {
        engine: EngineKind::MistralRs,
        engine_instances: 2,
        ..test_config()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn llama_cpp_batched_answers_equal_solo_answers() {
    concurrent_answers_equal_solo_answers(Config {
        engine: EngineKind::LlamaCpp,
        ..test_config()
    })
    .await;
}

async fn concurrent_answers_equal_solo_answers(config: Config) {
    let server = TestServer::start_ready(config);
    let mut solo = Vec::new();
    for prompt in PROMPTS {
        solo.push(chat_text(&server, &chat_body(prompt, 24)).await);
    }
    let distinct: std::collections::HashSet<_> = solo.iter().collect();
    assert!(
        distinct.len() >= 6,
        "prompts should give different answers: {solo:#?}"
    );

    // All eight at once, half streamed and half not, twice over.
    for round in 0..2 {
        let answers = join_all(PROMPTS.iter().enumerate().map(|(i, prompt)| {
            let server = &server;
            async move {
                let body = chat_body(prompt, 24);
                if (i + round) % 2 == 0 {
                    chat_text(server, &body).await
                } else {
                    let streamed = stream_chat(server, &body).await;
                    assert!(streamed.ended_with_done());
                    streamed.text()
                }
            }
        }))
        .await;
        for (i, (alone, together)) in solo.iter().zip(&answers).enumerate() {
            assert_eq!(alone, together, "round {round}, prompt {:?}", PROMPTS[i]);
        }
    }
}
