//! Deterministic synthetic LoRA adapters in PEFT layout, shaped for a base: rank 8 on every
//! layer's `q_proj` and `v_proj`, values from a seeded xorshift. `switchyard bench-adapters`
//! swaps between two of them, and the registry tests use them (one can be made corrupt).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::lora::{CONFIG_FILE, WEIGHTS_FILE};
use crate::{EngineError, Result};

const RANK: usize = 8;

/// Values in [-amplitude, amplitude], the same for the same seed.
fn values(seed: u64, n: usize, amplitude: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % 2001) as f32 / 1000.0 - 1.0) * amplitude
        })
        .collect()
}

/// Writes an adapter for the base whose weight shapes are `shapes` (`lora::base_shapes`) into
/// `dir`. With `corrupt`, one `lora_A` value is NaN, which validation must refuse.
pub fn write_synthetic_adapter(
    dir: &Path,
    shapes: &HashMap<String, Vec<usize>>,
    seed: u64,
    corrupt: bool,
) -> Result<()> {
    let io = |e: std::io::Error| EngineError::Load(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut modules: Vec<(&String, &Vec<usize>)> = shapes
        .iter()
        .filter(|(name, shape)| {
            shape.len() == 2 && (name.ends_with("q_proj.weight") || name.ends_with("v_proj.weight"))
        })
        .collect();
    modules.sort();
    let mut tensors = HashMap::new();
    for (n, (name, shape)) in modules.iter().enumerate() {
        let (rows, cols) = (shape[0], shape[1]);
        let key = format!(
            "base_model.model.{}",
            name.strip_suffix(".weight").expect("filtered on .weight")
        );
        let mut a = values(seed * 100_003 + n as u64, RANK * cols, 0.1);
        if corrupt && n == modules.len() / 2 {
            a[3] = f32::NAN;
        }
        let b = values(seed * 700_001 + n as u64, rows * RANK, 0.1);
        let tensor = |v: Vec<f32>, shape: (usize, usize)| {
            Tensor::from_vec(v, shape, &Device::Cpu).map_err(|e| EngineError::Load(e.to_string()))
        };
        tensors.insert(format!("{key}.lora_A.weight"), tensor(a, (RANK, cols))?);
        tensors.insert(format!("{key}.lora_B.weight"), tensor(b, (rows, RANK))?);
    }
    candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))
        .map_err(|e| EngineError::Load(e.to_string()))?;
    let config = serde_json::json!({
        "peft_type": "LORA", "r": RANK, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"], "bias": "none"
    });
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).map_err(io)
}
