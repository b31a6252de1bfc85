//! Converts a llama-architecture GGUF (as shipped: SmolLM2-135M-Instruct Q4_1) into a Hugging
//! Face-layout safetensors model that mistral.rs can load with LoRA adapters merged in:
//! `model.safetensors` (f32), `config.json`, `tokenizer.json` and `tokenizer_config.json`
//! (with the chat template), all rebuilt from the GGUF.
//!
//! - Weights are dequantized to f32 and renamed from GGUF (`blk.N.attn_q.weight`) to HF
//!   (`model.layers.N.self_attn.q_proj.weight`) names.
//! - llama.cpp's converter permutes the rows of `q_proj` and `k_proj` (it interleaves the
//!   two rotary halves of each head); that permutation is undone here, otherwise a LoRA
//!   adapter trained on the HF layout would hit the wrong rows.
//! - The tokenizer is the GGUF's byte-level BPE (`tokenizer.ggml.model = gpt2`): vocabulary,
//!   merges, control tokens as special added tokens, digits split one by one before the
//!   byte-level pre-tokenizer (llama.cpp's `smollm` pre-tokenizer).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::{json, Map};

use crate::error::{EngineError, Result};

fn convert_error(what: impl std::fmt::Display) -> EngineError {
    EngineError::Load(format!("converting GGUF: {what}"))
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionReport {
    pub tensors: usize,
    pub parameters: usize,
    pub vocab_size: usize,
    pub tied_embeddings: bool,
}

/// The hyper-parameters a llama GGUF states.
#[derive(Debug, Clone, PartialEq)]
struct LlamaShape {
    layers: usize,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    context: usize,
    rope_theta: f32,
    rms_eps: f32,
}

fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| convert_error(format!("metadata `{key}` missing")))
}

fn meta_usize(content: &Content, key: &str) -> Result<usize> {
    let value = meta(content, key)?;
    value
        .to_u32()
        .map(|v| v as usize)
        .or_else(|_| value.to_u64().map(|v| v as usize))
        .map_err(convert_error)
}

fn meta_f32(content: &Content, key: &str) -> Result<f32> {
    meta(content, key)?.to_f32().map_err(convert_error)
}

fn meta_strings(content: &Content, key: &str) -> Result<Vec<String>> {
    meta(content, key)?
        .to_vec()
        .map_err(convert_error)?
        .iter()
        .map(|v| v.to_string().cloned().map_err(convert_error))
        .collect()
}

/// Whole-model tensors, GGUF name and HF name.
const TOP_TENSORS: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Per-layer tensors, GGUF suffix after `blk.N.` and HF suffix after `model.layers.N.`.
const LAYER_TENSORS: [(&str, &str); 9] = [
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
];

/// The HF name of a GGUF tensor.
fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = TOP_TENSORS.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let (layer, part) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, module) = LAYER_TENSORS.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{module}"))
}

/// The GGUF name of an HF tensor (the inverse of `hf_name`).
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some((gguf, _)) = TOP_TENSORS.iter().find(|(_, h)| *h == hf) {
        return Some(gguf.to_string());
    }
    let (layer, part) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (tensor, _) = LAYER_TENSORS.iter().find(|(_, h)| *h == part)?;
    Some(format!("blk.{layer}.{tensor}"))
}

/// The heads whose rotary permutation llama.cpp applies to an HF tensor's rows: `q_proj` by
/// attention heads, `k_proj` by KV heads, nothing else.
pub fn permuted_heads(hf: &str, heads: usize, kv_heads: usize) -> Option<usize> {
    if hf.ends_with("self_attn.q_proj.weight") {
        Some(heads)
    } else if hf.ends_with("self_attn.k_proj.weight") {
        Some(kv_heads)
    } else {
        None
    }
}

/// llama.cpp's rotary permutation of a `[heads * head_dim, cols]` HF projection (its
/// converter's `permute`), which `unpermute` undoes.
pub fn permute(weight: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = weight.dims2().map_err(convert_error)?;
    let half = rows / heads / 2;
    weight
        .reshape((heads, 2, half, cols))
        .and_then(|t| t.transpose(1, 2))
        .and_then(|t| t.contiguous())
        .and_then(|t| t.reshape((rows, cols)))
        .map_err(convert_error)
}

/// What LoRA adapters for a llama GGUF need to know of it, read from its header only.
#[derive(Debug, Clone)]
pub struct GgufBase {
    /// `general.architecture`, which an adapter file must repeat.
    pub architecture: String,
    /// Weight shapes by HF name, `[out, in]`, as `lora::base_shapes` gives them for a
    /// safetensors base.
    pub shapes: HashMap<String, Vec<usize>>,
    pub heads: usize,
    pub kv_heads: usize,
}

/// Reads the header of the llama GGUF at `path` (no tensor data).
pub fn read_gguf_base(path: &Path) -> Result<GgufBase> {
    let mut file =
        File::open(path).map_err(|e| convert_error(format!("{}: {e}", path.display())))?;
    let content = Content::read(&mut file).map_err(convert_error)?;
    let architecture = meta(&content, "general.architecture")?
        .to_string()
        .map_err(convert_error)?
        .clone();
    if architecture != "llama" {
        return Err(convert_error(format!(
            "architecture `{architecture}`: only llama is supported"
        )));
    }
    let shapes = content
        .tensor_infos
        .iter()
        .filter_map(|(name, info)| Some((hf_name(name)?, info.shape.dims().to_vec())))
        .collect();
    Ok(GgufBase {
        architecture,
        shapes,
        heads: meta_usize(&content, "llama.attention.head_count")?,
        kv_heads: meta_usize(&content, "llama.attention.head_count_kv")?,
    })
}

/// Undoes llama.cpp's rotary permutation of a `[heads * head_dim, in]` projection.
fn unpermute(weight: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = weight.dims2().map_err(convert_error)?;
    let half = rows / heads / 2;
    weight
        .reshape((heads, half, 2, cols))
        .and_then(|t| t.transpose(1, 2))
        .and_then(|t| t.contiguous())
        .and_then(|t| t.reshape((rows, cols)))
        .map_err(convert_error)
}

/// Converts `gguf` into an HF-layout folder `out` (created; files replaced).
pub fn convert_gguf(gguf: &Path, out: &Path) -> Result<ConversionReport> {
    let mut file =
        File::open(gguf).map_err(|e| convert_error(format!("{}: {e}", gguf.display())))?;
    let content = Content::read(&mut file).map_err(convert_error)?;
    let arch = meta(&content, "general.architecture")?
        .to_string()
        .map_err(convert_error)?;
    if arch != "llama" {
        return Err(convert_error(format!(
            "architecture `{arch}`: only llama is supported"
        )));
    }
    let shape = LlamaShape {
        layers: meta_usize(&content, "llama.block_count")?,
        hidden: meta_usize(&content, "llama.embedding_length")?,
        intermediate: meta_usize(&content, "llama.feed_forward_length")?,
        heads: meta_usize(&content, "llama.attention.head_count")?,
        kv_heads: meta_usize(&content, "llama.attention.head_count_kv")?,
        context: meta_usize(&content, "llama.context_length")?,
        rope_theta: meta_f32(&content, "llama.rope.freq_base")?,
        rms_eps: meta_f32(&content, "llama.attention.layer_norm_rms_epsilon")?,
    };

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let hf = hf_name(name).ok_or_else(|| convert_error(format!("unknown tensor `{name}`")))?;
        let weight = content
            .tensor(&mut file, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .map_err(convert_error)?;
        let weight = if name.ends_with("attn_q.weight") {
            unpermute(&weight, shape.heads)?
        } else if name.ends_with("attn_k.weight") {
            unpermute(&weight, shape.kv_heads)?
        } else {
            weight
        };
        tensors.insert(hf, weight);
    }
    let tied = !tensors.contains_key("lm_head.weight");
    let parameters = tensors.values().map(|t| t.elem_count()).sum();
    std::fs::create_dir_all(out).map_err(convert_error)?;
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))
        .map_err(convert_error)?;

    let tokens = meta_strings(&content, "tokenizer.ggml.tokens")?;
    let merges = meta_strings(&content, "tokenizer.ggml.merges")?;
    let token_types: Vec<i64> = meta(&content, "tokenizer.ggml.token_type")?
        .to_vec()
        .map_err(convert_error)?
        .iter()
        .map(|v| match v {
            Value::I32(x) => *x as i64,
            Value::U32(x) => *x as i64,
            _ => 1,
        })
        .collect();
    let bos = meta_usize(&content, "tokenizer.ggml.bos_token_id")?;
    let eos = meta_usize(&content, "tokenizer.ggml.eos_token_id")?;
    let chat_template = meta(&content, "tokenizer.chat_template")?
        .to_string()
        .map_err(convert_error)?
        .clone();

    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": shape.context,
        "rms_norm_eps": shape.rms_eps,
        "rope_theta": shape.rope_theta,
        "vocab_size": tokens.len(),
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    });
    write_json(&out.join("config.json"), &config)?;
    write_json(
        &out.join("tokenizer.json"),
        &tokenizer_json(&tokens, &merges, &token_types),
    )?;
    write_json(
        &out.join("tokenizer_config.json"),
        &json!({
            "bos_token": tokens[bos],
            "eos_token": tokens[eos],
            "chat_template": chat_template,
            "add_bos_token": false,
            "model_max_length": shape.context,
        }),
    )?;
    write_json(
        &out.join("generation_config.json"),
        &json!({"bos_token_id": bos, "eos_token_id": eos}),
    )?;
    Ok(ConversionReport {
        tensors: tensors.len(),
        parameters,
        vocab_size: tokens.len(),
        tied_embeddings: tied,
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON serialises");
    std::fs::write(path, text).map_err(|e| convert_error(format!("{}: {e}", path.display())))
}

/// A Hugging Face `tokenizer.json` for the GGUF's byte-level BPE.
fn tokenizer_json(tokens: &[String], merges: &[String], types: &[i64]) -> serde_json::Value {
    let vocab: Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), json!(id)))
        .collect();
    // GGUF token type 3 is "control": the chat markers and end of text.
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| types.get(*id) == Some(&3))
        .map(|(id, token)| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf_names() {
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_name("blk.12.attn_k.weight").unwrap(),
            "model.layers.12.self_attn.k_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert!(hf_name("blk.x.attn_q.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
        for name in [
            "output.weight",
            "blk.7.attn_v.weight",
            "blk.29.ffn_down.weight",
        ] {
            assert_eq!(gguf_name(&hf_name(name).unwrap()).unwrap(), name);
        }
        assert!(gguf_name("model.layers.1.self_attn.rotary_emb.inv_freq").is_none());
    }

    /// llama.cpp's permutation, then undone.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, head_dim, cols) = (3usize, 4usize, 2usize);
        let rows = heads * head_dim;
        let original: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let hf = Tensor::from_vec(original.clone(), (rows, cols), &Device::Cpu).unwrap();
        let permuted = permute(&hf, heads).unwrap();
        // One head of four rows: the two rotary halves (0, 1 | 2, 3) are interleaved.
        let one = Tensor::from_vec(vec![0f32, 1., 2., 3.], (4, 1), &Device::Cpu).unwrap();
        assert_eq!(
            permute(&one, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![0., 2., 1., 3.]
        );
        // Two heads: each head's halves interleaved, heads kept in place.
        let two =
            Tensor::from_vec((0..8).map(|i| i as f32).collect(), (8, 1), &Device::Cpu).unwrap();
        assert_eq!(
            permute(&two, 2)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![0., 2., 1., 3., 4., 6., 5., 7.]
        );
        // q_proj by attention heads, k_proj by KV heads, nothing else.
        let smollm = |name: &str| permuted_heads(name, 9, 3);
        assert_eq!(smollm("model.layers.4.self_attn.q_proj.weight"), Some(9));
        assert_eq!(smollm("model.layers.4.self_attn.k_proj.weight"), Some(3));
        assert_eq!(smollm("model.layers.4.self_attn.v_proj.weight"), None);
        assert_ne!(
            permuted.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            original
        );
        let back = unpermute(&permuted, heads).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            original
        );
    }
}
