//! A validated PEFT adapter written as llama.cpp's GGUF LoRA file, which the llama.cpp
//! engine applies at runtime beside the unchanged base weights.
//!
//! The file holds, for each adapted base tensor `blk.N.attn_q.weight`, its two factors
//! `blk.N.attn_q.weight.lora_a` (`[r, in]`) and `.lora_b` (`[out, r]`) in f16 (half the
//! memory of f32; against the merged f32 weights the logits move by 0.012 either way, see
//! `tests/lora_numerics.rs`), and the
//! metadata llama.cpp checks: `general.type = adapter`, `adapter.type = lora`, the base's
//! `general.architecture`, and `adapter.lora.alpha`. llama.cpp scales by `alpha / r`, so
//! alpha is written as `scale · r`, which also carries rsLoRA's `alpha / √r`.
//!
//! llama.cpp stores `q_proj` and `k_proj` with their rows permuted (see `convert.rs`); an
//! adapter trained on the HF layout has its `lora_b` rows permuted the same way, since
//! `P(B·A) = (P·B)·A`. `lora_a` acts on the input side, which is not permuted.

use std::io::BufWriter;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::convert::{gguf_name, permute, permuted_heads, GgufBase};
use crate::error::{EngineError, Result};
use crate::lora::LoraAdapter;

/// The file name of a generation's adapter inside its folder.
pub const LORA_GGUF_FILE: &str = "adapter.gguf";

fn write_error(what: impl std::fmt::Display) -> EngineError {
    EngineError::Load(format!("writing the GGUF LoRA: {what}"))
}

/// Writes `adapter` for `base` as a GGUF LoRA file at `out`.
pub fn write_lora_gguf(adapter: &LoraAdapter, base: &GgufBase, out: &Path) -> Result<()> {
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(adapter.pairs.len() * 2);
    for pair in &adapter.pairs {
        let name = gguf_name(&pair.base_tensor).ok_or_else(|| {
            EngineError::InvalidRequest(format!(
                "invalid adapter: `{}` has no llama.cpp tensor",
                pair.base_tensor
            ))
        })?;
        let b = match permuted_heads(&pair.base_tensor, base.heads, base.kv_heads) {
            Some(heads) => permute(&pair.b, heads)?,
            None => pair.b.clone(),
        };
        let quantize = |t: &candle_core::Tensor| {
            QTensor::quantize(&t.contiguous().map_err(write_error)?, GgmlDType::F16)
                .map_err(write_error)
        };
        tensors.push((format!("{name}.lora_a"), quantize(&pair.a)?));
        tensors.push((format!("{name}.lora_b"), quantize(&b)?));
    }
    let alpha = (adapter.scale * adapter.config.r as f64) as f32;
    let metadata = [
        (
            "general.architecture",
            Value::String(base.architecture.clone()),
        ),
        ("general.type", Value::String("adapter".into())),
        ("adapter.type", Value::String("lora".into())),
        ("adapter.lora.alpha", Value::F32(alpha)),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let file =
        std::fs::File::create(out).map_err(|e| write_error(format!("{}: {e}", out.display())))?;
    let mut writer = BufWriter::new(file);
    gguf_file::write(&mut writer, &metadata, &tensors).map_err(write_error)?;
    let file = writer.into_inner().map_err(|e| write_error(e.error()))?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::Content;
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::lora::{AdapterConfig, LoraPair, TargetModules};

    fn tensor(values: Vec<f32>, shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// The written file reads back with llama.cpp's names, shapes (ggml order reversed by
    /// the reader), alpha, and `lora_b` of `q_proj` permuted while `v_proj`'s is not.
    #[test]
    fn writes_factors_under_llama_cpp_names_with_q_rows_permuted() {
        let (rows, cols, r) = (4, 3, 2);
        let a: Vec<f32> = (0..r * cols).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..rows * r).map(|i| i as f32 * 10.0).collect();
        let pair = |module: &str| LoraPair {
            base_tensor: format!("model.layers.1.self_attn.{module}.weight"),
            a: tensor(a.clone(), (r, cols)),
            b: tensor(b.clone(), (rows, r)),
        };
        let adapter = LoraAdapter {
            config: AdapterConfig {
                peft_type: Some("LORA".into()),
                r,
                lora_alpha: 8.0,
                target_modules: TargetModules::List(vec!["q_proj".into(), "v_proj".into()]),
                bias: None,
                fan_in_fan_out: false,
                use_rslora: false,
                use_dora: false,
                modules_to_save: None,
                rank_pattern: None,
                alpha_pattern: None,
            },
            pairs: vec![pair("q_proj"), pair("v_proj")],
            generation: "g".into(),
            scale: 4.0,
        };
        let base = GgufBase {
            architecture: "llama".into(),
            shapes: HashMap::new(),
            heads: 1,
            kv_heads: 1,
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(LORA_GGUF_FILE);
        write_lora_gguf(&adapter, &base, &out).unwrap();

        let mut file = std::fs::File::open(&out).unwrap();
        let content = Content::read(&mut file).unwrap();
        let text = |key: &str| content.metadata[key].to_string().unwrap().clone();
        assert_eq!(text("general.type"), "adapter");
        assert_eq!(text("adapter.type"), "lora");
        assert_eq!(text("general.architecture"), "llama");
        assert_eq!(
            content.metadata["adapter.lora.alpha"].to_f32().unwrap(),
            8.0
        );
        let mut read = |name: &str| {
            let t = content.tensor(&mut file, name, &Device::Cpu).unwrap();
            let t = t.dequantize(&Device::Cpu).unwrap();
            (
                t.dims().to_vec(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        assert_eq!(
            read("blk.1.attn_q.weight.lora_a"),
            (vec![r, cols], a.clone())
        );
        assert_eq!(
            read("blk.1.attn_v.weight.lora_b"),
            (vec![rows, r], b.clone())
        );
        // Rows 0..4 of B, halves interleaved: 0, 2, 1, 3.
        let permuted: Vec<f32> = [0, 2, 1, 3]
            .iter()
            .flat_map(|row| b[row * r..(row + 1) * r].to_vec())
            .collect();
        assert_eq!(
            read("blk.1.attn_q.weight.lora_b"),
            (vec![rows, r], permuted)
        );
    }
}
