//! The adapter registry on the real model: synthetic PEFT adapters (`adapters::fixtures`:
//! deterministic values, rank 8 on q_proj/v_proj of every layer) applied at runtime to the
//! shipped GGUF by the llama.cpp engine, and merged into the safetensors base converted from
//! it for mistral.rs; hot-swapped, rolled back with compare-and-set, with leases, refusals
//! that change nothing, serialised loads and LRU eviction, on both engines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapters::{
    collect, AdapterHost, AdapterRegistry, Backend, ChatMessage, GenerationRequest,
    LlamaAdapterHost, LlamaConfig, LlamaCppBackend, MergedHost, RegistryConfig, RegistryError,
    Role, SamplingParams,
};
use serde_json::json;
use switchyard_tests::model_path;

/// A scratch folder holding synthetic adapters (see `adapters::fixtures`) under
/// `adapters/`, `(name, seed, corrupt)` each, room for generations (`generations`), and
/// `base`: for mistral.rs (`merged`) the safetensors base converted from the GGUF, for
/// llama.cpp an empty folder beside the adapter root.
struct Scratch {
    dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

impl Scratch {
    fn new(adapters: &[(&str, u64, bool)], merged: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let shapes = if merged {
            adapters::convert::convert_gguf(&model_path(), &base).unwrap();
            adapters::lora::base_shapes(&base).unwrap()
        } else {
            std::fs::create_dir_all(&base).unwrap();
            adapters::convert::read_gguf_base(&model_path())
                .unwrap()
                .shapes
        };
        let root = dir.path().join("adapters");
        for &(name, seed, corrupt) in adapters {
            adapters::fixtures::write_synthetic_adapter(&root.join(name), &shapes, seed, corrupt)
                .unwrap();
        }
        Self { dir, base, root }
    }

    fn generations(&self) -> PathBuf {
        self.dir.path().join("generations")
    }
}

async fn answer(engine: &Arc<dyn Backend>) -> String {
    let request = GenerationRequest {
        messages: vec![ChatMessage::new(
            Role::User,
            "How do I undo my last git commit?",
        )],
        sampling: SamplingParams {
            temperature: 0.0,
            max_tokens: 10,
            ..SamplingParams::default()
        },
        json_schema: None,
    };
    collect(engine.generate(request).await.unwrap())
        .await
        .unwrap()
        .text
}

fn adapter_scratch(merged: bool) -> Scratch {
    Scratch::new(
        &[
            ("fmt-a", 1, false),
            ("fmt-b", 2, false),
            ("fmt-c", 3, false),
            ("corrupt", 4, true),
        ],
        merged,
    )
}

fn registry_config(work: &Scratch) -> RegistryConfig {
    RegistryConfig {
        adapter_root: work.root.clone(),
        work_dir: work.generations(),
        max_rank: 16,
        max_resident: 2,
    }
}

#[tokio::test]
async fn llama_cpp_adapters_swap_roll_back_refuse_and_evict() {
    let work = adapter_scratch(false);
    let engine = Arc::new(
        LlamaCppBackend::load(LlamaConfig::new(model_path(), "base"))
            .await
            .unwrap(),
    );
    let host = LlamaAdapterHost::new();
    host.attach(engine.clone()).unwrap();
    let registry = Arc::new(AdapterRegistry::new(registry_config(&work), Arc::new(host)).unwrap());
    swap_roll_back_refuse_and_evict(registry, engine).await;
}

#[tokio::test]
async fn mistralrs_adapters_swap_roll_back_refuse_and_evict() {
    let work = adapter_scratch(true);
    let host: Arc<dyn AdapterHost> = Arc::new(MergedHost::open(&work.base).unwrap());
    let registry = Arc::new(AdapterRegistry::new(registry_config(&work), host).unwrap());
    let base_engine: Arc<dyn Backend> = Arc::new(
        adapters::MistralRsBackend::load(adapters::EngineConfig {
            model_path: work.base.clone(),
            model_id: "base".into(),
            instances: 1,
        })
        .await
        .unwrap(),
    );
    swap_roll_back_refuse_and_evict(registry, base_engine).await;
}

async fn swap_roll_back_refuse_and_evict(
    registry: Arc<AdapterRegistry>,
    base_engine: Arc<dyn Backend>,
) {
    let base_text = answer(&base_engine).await;

    let a = registry.load("fmt", Path::new("fmt-a")).await.unwrap();
    let (engine_a, active) = registry.engine("fmt").unwrap();
    assert_eq!(active, a.generation);
    let text_a = answer(&engine_a).await;
    assert_ne!(text_a, base_text, "the adapter changes the model");
    // The base is unchanged beside it, alone and decoded at the same time as the adapter.
    assert_eq!(answer(&base_engine).await, base_text);
    let (base_again, a_again) = tokio::join!(answer(&base_engine), answer(&engine_a));
    assert_eq!((base_again, a_again), (base_text.clone(), text_a.clone()));

    let b = registry.load("fmt", Path::new("fmt-b")).await.unwrap();
    assert_ne!(a.generation, b.generation);
    let (engine_b, active) = registry.engine("fmt").unwrap();
    assert_eq!(active, b.generation);
    let text_b = answer(&engine_b).await;
    assert_ne!(text_b, text_a);
    // A request that leased generation A before the swap still runs on A.
    assert_eq!(answer(&engine_a).await, text_a);

    // Rollback with compare-and-set.
    let conflict = registry
        .activate("fmt", &a.generation, Some(&a.generation))
        .unwrap_err();
    assert!(
        matches!(conflict, RegistryError::Conflict { .. }),
        "{conflict}"
    );
    registry
        .activate("fmt", &a.generation, Some(&b.generation))
        .unwrap();
    let (engine, active) = registry.engine("fmt").unwrap();
    assert_eq!(active, a.generation);
    assert_eq!(
        answer(&engine).await,
        text_a,
        "same generation, same output"
    );

    // Refusals change nothing.
    for (path, reason) in [
        ("corrupt", "NaN"),
        ("../base", "outside the adapter root"),
        ("missing", "invalid adapter"),
    ] {
        let err = registry
            .load("fmt", Path::new(path))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(reason), "{path}: {err}");
        assert_eq!(registry.engine("fmt").unwrap().1, a.generation);
    }

    // Loads are serialised: a second one while the first runs is refused. `join!` polls the
    // first until it waits (on writing the generation off the runtime), then the second.
    let (first, second) = tokio::join!(
        registry.load("other", Path::new("fmt-c")),
        registry.load("fmt", Path::new("fmt-b"))
    );
    assert!(matches!(second, Err(RegistryError::Busy)), "{second:?}");
    let c = first.unwrap();

    // Budget 2: fmt's inactive generation B was the least recently used, and is evicted.
    let listed = registry.list();
    let fmt = listed.iter().find(|x| x.name == "fmt").unwrap();
    let b_info = fmt
        .generations
        .iter()
        .find(|g| g.generation == b.generation)
        .unwrap();
    assert!(!b_info.resident, "{listed:?}");
    assert!(
        fmt.generations
            .iter()
            .find(|g| g.generation == a.generation)
            .unwrap()
            .resident
    );
    assert_eq!(
        registry
            .list()
            .iter()
            .find(|x| x.name == "other")
            .unwrap()
            .active_generation,
        c.generation
    );
    let err = registry.activate("fmt", &b.generation, None).unwrap_err();
    assert!(
        matches!(err, RegistryError::UnknownGeneration { .. }),
        "{err}"
    );

    registry.unload("other").unwrap();
    assert!(registry.engine("other").is_none());
}

/// The admin API over HTTP, per-request selection by `model`, and a swap under load: 16
/// streaming clients while the active generation flips 100 times and a corrupt adapter is
/// refused once. No request fails, and every answer equals the reference answer of the
/// generation it reports (greedy decoding).
#[tokio::test]
async fn admin_api_and_swaps_under_load() {
    use switchyard_tests::{stream_chat, test_config, TestServer};

    let work = Scratch::new(
        &[
            ("fmt-a", 1, false),
            ("fmt-b", 2, false),
            ("corrupt", 4, true),
        ],
        false,
    );
    let mut config = test_config();
    config.adapters_enabled = true;
    config.adapter_root = work.root.clone();
    config.adapter_work_dir = work.generations();
    config.max_in_flight = 32;
    // Base-model requests on the simple route (this server's default) use `fmt` once loaded.
    config.route_adapters = [("simple".to_string(), "fmt".to_string())].into();
    // Leaked: the streaming clients below are 'static tasks; the process ends with the test.
    let server: &'static TestServer = Box::leak(Box::new(TestServer::start_ready(config)));
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let request = client.post(server.url(path)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (
                status,
                headers,
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "How do I undo my last git commit?"}],
               "temperature": 0, "max_tokens": 6})
    };

    let (status, _, a) = post(
        "/v1/load_lora_adapter",
        json!({"lora_name": "fmt", "lora_path": "fmt-a"}),
    )
    .await;
    assert_eq!(status, 200, "{a}");
    let gen_a = a["active_generation"].as_str().unwrap().to_string();
    let (_, headers, answer_a) = post("/v1/chat/completions", chat("fmt")).await;
    assert_eq!(
        headers["x-switchyard-adapter"],
        format!("fmt@{gen_a}").as_str()
    );
    assert_eq!(answer_a["adapter"], format!("fmt@{gen_a}"));
    let text_a = answer_a["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // The route's default adapter answers a base-model request...
    let base_id = switchyard_server::Config::default().model_id;
    let (_, headers, _) = post("/v1/chat/completions", chat(&base_id)).await;
    assert_eq!(
        headers["x-switchyard-adapter"],
        format!("fmt@{gen_a}").as_str()
    );
    // ...and the base answers on a route without one.
    let mut on_tool = chat(&base_id);
    on_tool["route"] = json!("tool");
    on_tool["tools"] = json!([{"type": "function", "function": {"name": "noop"}}]);
    let (status, headers, body) = post("/v1/chat/completions", on_tool).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-switchyard-adapter"], "base");
    let (status, models) = switchyard_tests::get_json(server, "/v1/models").await;
    assert_eq!(status, 200);
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "fmt"));

    let (status, _, b) = post(
        "/v1/load_lora_adapter",
        json!({"lora_name": "fmt", "lora_path": "fmt-b"}),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let gen_b = b["active_generation"].as_str().unwrap().to_string();
    let (_, _, answer_b) = post("/v1/chat/completions", chat("fmt")).await;
    let text_b = answer_b["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(text_a, text_b);

    // Compare-and-set.
    let activate = |generation: &str, expected: &str| {
        post(
            "/v1/lora_adapters/fmt/activate",
            json!({"generation": generation, "expected_generation": expected}),
        )
    };
    let (status, _, body) = activate(&gen_a, &gen_a).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("generation_conflict")),
        "{body}"
    );
    // Bad input: clear 4xx, nothing changes.
    for (body, status, code) in [
        (
            json!({"lora_name": "fmt", "lora_path": "corrupt"}),
            400,
            "invalid_adapter",
        ),
        (
            json!({"lora_name": "fmt", "lora_path": "../base"}),
            400,
            "invalid_adapter",
        ),
        (
            json!({"lora_name": "bad name", "lora_path": "fmt-a"}),
            400,
            "invalid_adapter",
        ),
        (json!({"lora_name": "fmt"}), 400, "invalid_json"),
    ] {
        let (got, _, error) = post("/v1/load_lora_adapter", body.clone()).await;
        assert_eq!(
            (got, error["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}: {error}"
        );
    }
    let (_, headers, _) = post("/v1/chat/completions", chat("fmt")).await;
    assert_eq!(
        headers["x-switchyard-adapter"],
        format!("fmt@{gen_b}").as_str()
    );
    let (status, _, body) = post("/v1/chat/completions", chat("no-such-adapter")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    // Swap under load.
    let reference = HashMap::from([
        (format!("fmt@{gen_a}"), text_a.clone()),
        (format!("fmt@{gen_b}"), text_b.clone()),
    ]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Generations served so far, seen by the swapping loop below.
    let served_by = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (stop, reference, served_by) = (stop.clone(), reference.clone(), served_by.clone());
        clients.push(tokio::spawn(async move {
            let mut served = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || served.is_empty() {
                let body = json!({"model": "fmt", "messages": [{"role": "user", "content": "How do I undo my last git commit?"}],
                                  "temperature": 0, "max_tokens": 6, "stream": true});
                let streamed = stream_chat(server, &body).await;
                assert_eq!(streamed.status, 200);
                assert!(streamed.ended_with_done(), "{:?}", streamed.events);
                let adapter = streamed.chunks()[0]["adapter"].as_str().unwrap().to_string();
                assert_eq!(&streamed.text(), reference.get(&adapter).expect("a known generation"), "{adapter}");
                served_by.lock().unwrap().insert(adapter.clone());
                served.push(adapter);
            }
            served
        }));
    }
    let mut active = gen_b.clone();
    // 100 swaps, then on until both generations have served a request (which one a request
    // gets depends on timing; the test needs both).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut i = 0;
    while i < 100 || served_by.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both generations never served"
        );
        let next = if active == gen_a {
            gen_b.clone()
        } else {
            gen_a.clone()
        };
        let (status, _, body) = activate(&next, &active).await;
        assert_eq!(status, 200, "{body}");
        active = next;
        if i == 50 {
            let (status, _, _) = post(
                "/v1/load_lora_adapter",
                json!({"lora_name": "fmt", "lora_path": "corrupt"}),
            )
            .await;
            assert_eq!(status, 400);
        }
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = Vec::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    let on_a = seen.iter().filter(|a| a.ends_with(&gen_a)).count();
    let on_b = seen.len() - on_a;
    assert!(
        on_a > 0 && on_b > 0,
        "both generations served: {on_a} / {on_b}"
    );
    println!(
        "swap under load: {i} switches, {} streamed requests ({on_a} on A, {on_b} on B), none failed",
        seen.len()
    );

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "switchyard_adapter_operations_total{operation=\"load\",outcome=\"ok\"} 2".to_string(),
        "switchyard_adapter_operations_total{operation=\"load\",outcome=\"refused\"} 4".to_string(),
        format!("switchyard_adapter_operations_total{{operation=\"activate\",outcome=\"ok\"}} {i}"),
        "switchyard_adapter_operations_total{operation=\"activate\",outcome=\"conflict\"} 1"
            .to_string(),
        "switchyard_adapter_resident_instances 2".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} missing:\n{metrics}"
        );
    }
    let active_short = &active[..12];
    assert!(
        metrics.contains(&format!(
            "switchyard_adapter_active_info{{adapter=\"fmt\",generation=\"{active_short}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("switchyard_adapter_resident_bytes ") && !l.ends_with(" 0")));
    let (status, _, _) = post("/v1/unload_lora_adapter", json!({"lora_name": "fmt"})).await;
    assert_eq!(status, 200);
    let (status, _, body) = post("/v1/unload_lora_adapter", json!({"lora_name": "fmt"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("adapter_not_found"))
    );
}

/// Each name the registry's recovery brought back (true) or not.
async fn recovered(registry: &AdapterRegistry) -> HashMap<String, bool> {
    registry
        .recover()
        .await
        .into_iter()
        .map(|(name, outcome)| (name, outcome.is_ok()))
        .collect()
}

/// Adapter state on disk: two names loaded from the same files share a folder that survives
/// unloading one of them; an evicted generation's folder is deleted; a name whose generation
/// does not come back at start stays listed with its error and saved, so an admin change
/// saves the whole set and the next start tries it again.
#[tokio::test]
async fn adapter_folders_and_failed_recoveries_are_kept_as_long_as_they_are_needed() {
    let work = adapter_scratch(false);
    let engine = Arc::new(
        LlamaCppBackend::load(LlamaConfig::new(model_path(), "base"))
            .await
            .unwrap(),
    );
    let registry = || {
        let host = LlamaAdapterHost::new();
        host.attach(engine.clone()).unwrap();
        AdapterRegistry::new(registry_config(&work), Arc::new(host)).unwrap()
    };
    let first = registry();
    let shared = first.load("x", Path::new("fmt-a")).await.unwrap();
    assert_eq!(
        first
            .load("y", Path::new("fmt-a"))
            .await
            .unwrap()
            .generation,
        shared.generation
    );
    let shared_dir = work.generations().join(&shared.generation);
    first.unload("x").unwrap();
    assert!(shared_dir.is_dir(), "unloading x deleted y's folder");
    assert!(first.engine("y").is_some());

    // z: fmt-b, then fmt-c; with y that is 3 loaded, over max_resident 2: fmt-b is evicted
    // and its folder goes.
    let old = first.load("z", Path::new("fmt-b")).await.unwrap();
    first.load("z", Path::new("fmt-c")).await.unwrap();
    let z = first.list().into_iter().find(|a| a.name == "z").unwrap();
    let evicted = z
        .generations
        .iter()
        .find(|g| g.generation == old.generation)
        .unwrap();
    assert!(!evicted.resident, "{z:?}");
    assert!(
        !work.generations().join(&old.generation).exists(),
        "the evicted generation's folder is still on disk"
    );
    assert!(shared_dir.is_dir());
    drop(first);

    // A restart brings both names back from their folders.
    let second = registry();
    assert_eq!(
        recovered(&second).await,
        HashMap::from([("y".into(), true), ("z".into(), true)])
    );
    drop(second);

    // y's folder is damaged: it fails to come back, stays listed with its error, and an
    // unload of z meanwhile saves y too, so the next start tries it again.
    for file in std::fs::read_dir(&shared_dir).unwrap() {
        std::fs::write(file.unwrap().path(), b"not a GGUF").unwrap();
    }
    let third = registry();
    assert_eq!(
        recovered(&third).await,
        HashMap::from([("y".into(), false), ("z".into(), true)])
    );
    let y = third.list().into_iter().find(|a| a.name == "y").unwrap();
    assert!(y.generations[0].error.is_some(), "{y:?}");
    assert!(third.engine("y").is_none());
    third.unload("z").unwrap();
    drop(third);
    let fourth = registry();
    let names: Vec<String> = fourth.recover().await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["y"],
        "the failed name was dropped from the saved set"
    );
}
