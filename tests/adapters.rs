//! The adapter registry on the real model: synthetic PEFT adapters (deterministic values
//! written here, rank 8 on q_proj/v_proj of every layer) merged into the safetensors base
//! converted from the shipped GGUF, hot-swapped, rolled back with compare-and-set, with
//! leases, refusals that change nothing, serialised loads and LRU eviction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use adapters::{
    collect, AdapterRegistry, Backend, ChatMessage, GenerationRequest, RegistryConfig,
    RegistryError, Role, SamplingParams,
};
use candle_core::{Device, Tensor};
use serde_json::json;
use switchyard_tests::model_path;

const LAYERS: usize = 30;
const HIDDEN: usize = 576;
const KV: usize = 192;
const RANK: usize = 8;

/// Deterministic values in [-amp, amp].
fn values(seed: u64, n: usize, amp: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % 2001) as f32 / 1000.0 - 1.0) * amp
        })
        .collect()
}

fn write_adapter(dir: &Path, seed: u64, nan: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors = HashMap::new();
    for layer in 0..LAYERS {
        for (module, out) in [("q_proj", HIDDEN), ("v_proj", KV)] {
            let key = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
            let mut a = values(seed * 1000 + layer as u64, RANK * HIDDEN, 0.1);
            if nan && layer == 7 {
                a[3] = f32::NAN;
            }
            let b = values(seed * 7000 + layer as u64, out * RANK, 0.1);
            tensors.insert(
                format!("{key}.lora_A.weight"),
                Tensor::from_vec(a, (RANK, HIDDEN), &Device::Cpu).unwrap(),
            );
            tensors.insert(
                format!("{key}.lora_B.weight"),
                Tensor::from_vec(b, (out, RANK), &Device::Cpu).unwrap(),
            );
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    let config = json!({"peft_type": "LORA", "r": RANK, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "bias": "none"});
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
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

#[tokio::test]
async fn adapters_swap_roll_back_refuse_and_evict() {
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    adapters::convert::convert_gguf(&model_path(), &base).unwrap();
    let root = work.path().join("adapters");
    write_adapter(&root.join("fmt-a"), 1, false);
    write_adapter(&root.join("fmt-b"), 2, false);
    write_adapter(&root.join("fmt-c"), 3, false);
    write_adapter(&root.join("corrupt"), 4, true);
    let registry = Arc::new(
        AdapterRegistry::new(RegistryConfig {
            adapter_root: root.clone(),
            base_dir: base.clone(),
            work_dir: work.path().join("generations"),
            max_rank: 16,
            max_resident: 2,
        })
        .unwrap(),
    );
    let base_engine: Arc<dyn Backend> = Arc::new(
        adapters::MistralRsBackend::load(adapters::EngineConfig {
            model_path: base.clone(),
            model_id: "base".into(),
            instances: 1,
        })
        .await
        .unwrap(),
    );
    let base_text = answer(&base_engine).await;

    let a = registry.load("fmt", Path::new("fmt-a")).await.unwrap();
    let (engine_a, active) = registry.engine("fmt").unwrap();
    assert_eq!(active, a.generation);
    let text_a = answer(&engine_a).await;
    assert_ne!(text_a, base_text, "the adapter changes the model");

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

    // Loads are serialised: a second one while the first runs is refused.
    let first = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.load("other", Path::new("fmt-c")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let second = registry.load("fmt", Path::new("fmt-b")).await;
    assert!(matches!(second, Err(RegistryError::Busy)), "{second:?}");
    let c = first.await.unwrap().unwrap();

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
