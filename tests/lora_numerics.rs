//! The GGUF LoRA that Switchyard writes (`adapters::lora::gguf`) checked numerically against
//! the merged weights, on the shipped GGUF through llama.cpp itself.
//!
//! A synthetic rank-8 adapter on every layer's q/v projections (`adapters::fixtures`) is
//! (a) written as a GGUF LoRA and applied at runtime to the base, and (b) merged into a copy
//! of the base, `W + scale · P(B·A)` for each adapted tensor (`P`, llama.cpp's row
//! permutation of `q_proj`, applied to the whole update, not to `B` alone as the LoRA writer
//! does). The base here is the shipped Q4_1 GGUF dequantized to f32: with quantized weights
//! llama.cpp quantizes the activations too (to 8 bits), and that rounding turns any small
//! change anywhere into logit noise of about 0.6 here, which would hide the comparison. In
//! f32, (a) and (b) differ only by the way the update is applied. The next-token logits of (a) and (b) must agree far more closely than
//! either agrees with the base: a LoRA with a wrong tensor name, a missing permutation or
//! the wrong scale lands about as far from the merge as the base is.

use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroU32;
use std::path::Path;

use adapters::convert::{gguf_name, permute, permuted_heads, read_gguf_base};
use adapters::lora::gguf::write_lora_gguf;
use adapters::lora::load_adapter;
use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use switchyard_tests::model_path;

/// Writes the base GGUF in f32, with `scale · P(B·A)` added to each adapted tensor when
/// `merge`.
fn write_base(base: &Path, adapter: &adapters::lora::LoraAdapter, merge: bool, out: &Path) {
    let shape = read_gguf_base(base).unwrap();
    let mut deltas = HashMap::new();
    for pair in &adapter.pairs {
        let delta = pair
            .b
            .matmul(&pair.a)
            .unwrap()
            .affine(adapter.scale, 0.0)
            .unwrap();
        let delta = match permuted_heads(&pair.base_tensor, shape.heads, shape.kv_heads) {
            Some(heads) => permute(&delta, heads).unwrap(),
            None => delta,
        };
        deltas.insert(gguf_name(&pair.base_tensor).unwrap(), delta);
    }
    let mut file = File::open(base).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let tensor = content.tensor(&mut file, name, &Device::Cpu).unwrap();
        let mut weight = tensor.dequantize(&Device::Cpu).unwrap();
        if let (Some(delta), true) = (deltas.get(name.as_str()), merge) {
            weight = (weight + delta).unwrap();
        }
        let tensor = QTensor::quantize(&weight, GgmlDType::F32).unwrap();
        tensors.push((name.clone(), tensor));
    }
    assert_eq!(
        tensors
            .iter()
            .filter(|(n, _)| deltas.contains_key(n))
            .count(),
        deltas.len(),
        "every adapted tensor is in the base"
    );
    // candle writes its own (default) alignment.
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::io::BufWriter::new(File::create(out).unwrap());
    gguf_file::write(&mut out, &metadata, &tensors).unwrap();
}

/// The logits after `prompt` on `model`, with the LoRA at `lora` applied when given.
fn last_logits(
    backend: &LlamaBackend,
    model: &Path,
    lora: Option<&Path>,
    prompt: &str,
) -> Vec<f32> {
    let mut model =
        LlamaModel::load_from_file(backend, model, &LlamaModelParams::default()).unwrap();
    let mut adapter = lora.map(|path| model.lora_adapter_init(path).unwrap());
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512))
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut context = model.new_context(backend, params).unwrap();
    if let Some(adapter) = adapter.as_mut() {
        context.lora_adapter_set(adapter, 1.0).unwrap();
    }
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    for (i, token) in tokens.iter().enumerate() {
        batch
            .add(*token, i as i32, &[0], i + 1 == tokens.len())
            .unwrap();
    }
    context.decode(&mut batch).unwrap();
    context.get_logits_ith(tokens.len() as i32 - 1).to_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

#[test]
fn gguf_lora_matches_the_merged_weights() {
    let work = tempfile::tempdir().unwrap();
    let shipped = model_path();
    let shape = read_gguf_base(&shipped).unwrap();
    // SmolLM2-135M: 9 attention heads, 3 KV heads (the permutation's parameters).
    assert_eq!((shape.heads, shape.kv_heads), (9, 3));
    let peft = work.path().join("peft");
    adapters::fixtures::write_synthetic_adapter(&peft, &shape.shapes, 1, false).unwrap();
    let adapter = load_adapter(&peft, &shape.shapes, 16).unwrap();
    assert!(
        adapter
            .pairs
            .iter()
            .any(|p| p.base_tensor.ends_with("q_proj.weight")),
        "the permuted projection is adapted"
    );
    let lora = work.path().join("adapter.gguf");
    write_lora_gguf(&adapter, &shape, &lora).unwrap();
    let base = work.path().join("base.gguf");
    write_base(&shipped, &adapter, false, &base);
    let merged = work.path().join("merged.gguf");
    write_base(&shipped, &adapter, true, &merged);

    let backend = LlamaBackend::init().unwrap();
    let prompt =
        "<|im_start|>user\nHow do I undo my last git commit?<|im_end|>\n<|im_start|>assistant\n";
    let plain = last_logits(&backend, &base, None, prompt);
    let with_lora = last_logits(&backend, &base, Some(&lora), prompt);
    let with_merge = last_logits(&backend, &merged, None, prompt);

    let effect = max_abs_diff(&plain, &with_merge);
    let error = max_abs_diff(&with_lora, &with_merge);
    println!("max |logit| difference: base vs merged {effect:.3}, LoRA vs merged {error:.4}");
    assert!(effect > 1.0, "the adapter changes the logits ({effect})");
    assert!(
        error < effect / 100.0,
        "the runtime LoRA is {error} from the merge, the base is {effect}"
    );
    assert_eq!(argmax(&with_lora), argmax(&with_merge));
}
