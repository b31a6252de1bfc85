//! LoRA adapters in PEFT layout (`adapter_config.json` + `adapter_model.safetensors`):
//! validation against a safetensors base before anything changes, the generation id (sha256
//! of the adapter's files), and merging into a new model folder (`W + scale · B·A`).
//!
//! Merging here, rather than through mistral.rs, is deliberate: mistral.rs 0.8.1 merges
//! adapters only when it builds a model, fetches them through the hub API (a local folder
//! makes it try the network), and its GGUF path ignores them. A merged folder is a plain
//! safetensors model that the engine loads offline like the base.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

pub mod gguf;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Files of the base copied next to a merged model.
const BASE_SIDE_FILES: [&str; 4] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

fn invalid(what: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidRequest(format!("invalid adapter: {what}"))
}

/// `adapter_config.json`, the fields that matter for merging.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    #[serde(default)]
    pub peft_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub bias: Option<String>,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub modules_to_save: Option<serde_json::Value>,
    /// Per-module ranks and alphas (PEFT writes `{}`): not supported, the scale is global.
    #[serde(default)]
    pub rank_pattern: Option<serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: Option<serde_json::Value>,
}

/// PEFT writes target modules as a list or a regex string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

/// One adapted projection: the base tensor it changes and its low-rank factors.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// e.g. `model.layers.3.self_attn.q_proj.weight`.
    pub base_tensor: String,
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
}

/// A validated adapter, ready to merge.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub config: AdapterConfig,
    pub pairs: Vec<LoraPair>,
    /// sha256 of `adapter_config.json` and `adapter_model.safetensors`.
    pub generation: String,
    pub scale: f64,
}

/// The shapes of a safetensors base, by tensor name.
pub fn base_shapes(base_dir: &Path) -> Result<HashMap<String, Vec<usize>>> {
    let path = base_dir.join("model.safetensors");
    let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }
        .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
    Ok(tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect())
}

/// The sha256 (hex) of an adapter's two files, in a fixed order.
pub fn generation_of(dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for name in [CONFIG_FILE, WEIGHTS_FILE] {
        let bytes = std::fs::read(dir.join(name)).map_err(|e| invalid(format!("{name}: {e}")))?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Resolves `path` inside `root`: relative paths are taken from the root, and the result
/// (after following symlinks) must stay inside it.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let root = root
        .canonicalize()
        .map_err(|e| EngineError::Load(format!("adapter root {}: {e}", root.display())))?;
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let resolved = joined
        .canonicalize()
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if !resolved.starts_with(&root) {
        return Err(invalid(format!(
            "{} is outside the adapter root",
            path.display()
        )));
    }
    Ok(resolved)
}

/// The base tensor a PEFT `lora_A` key adapts: `base_model.model.<module>.lora_A.weight` →
/// `<module>.weight`.
fn base_tensor_of(key: &str) -> Option<String> {
    let module = key
        .strip_prefix("base_model.model.")?
        .strip_suffix(".lora_A.weight")?;
    Some(format!("{module}.weight"))
}

fn module_targeted(base_tensor: &str, targets: &TargetModules) -> bool {
    let module = base_tensor.trim_end_matches(".weight");
    let leaf = module.rsplit('.').next().unwrap_or(module);
    match targets {
        TargetModules::List(names) => names.iter().any(|n| n == leaf || n == module),
        // A regex over module names; accept the common `.*(q_proj|v_proj)` style by substring.
        TargetModules::Pattern(pattern) => pattern
            .split(['|', '(', ')', '.', '*', '$', '^'])
            .filter(|p| !p.is_empty())
            .any(|p| p == leaf),
    }
}

/// Reads and validates the adapter in `dir` against a base with `shapes`: PEFT LoRA,
/// `0 < r <= max_rank`, no bias/DoRA/fan-in-fan-out/extra modules, every `lora_A` with its
/// `lora_B`, targets that exist in the base with matching shapes, finite values.
pub fn load_adapter(
    dir: &Path,
    shapes: &HashMap<String, Vec<usize>>,
    max_rank: usize,
) -> Result<LoraAdapter> {
    let config_text = std::fs::read_to_string(dir.join(CONFIG_FILE))
        .map_err(|e| invalid(format!("{CONFIG_FILE}: {e}")))?;
    let config: AdapterConfig =
        serde_json::from_str(&config_text).map_err(|e| invalid(format!("{CONFIG_FILE}: {e}")))?;
    if config.peft_type.as_deref().is_some_and(|t| t != "LORA") {
        return Err(invalid(format!(
            "peft_type {:?} is not LORA",
            config.peft_type
        )));
    }
    if config.r == 0 || config.r > max_rank {
        return Err(invalid(format!(
            "rank {} is not in 1..={max_rank}",
            config.r
        )));
    }
    if config.bias.as_deref().is_some_and(|b| b != "none") {
        return Err(invalid(
            "bias training is not supported (bias must be \"none\")",
        ));
    }
    if config.fan_in_fan_out || config.use_dora {
        return Err(invalid(
            "fan_in_fan_out and DoRA adapters are not supported",
        ));
    }
    if config
        .modules_to_save
        .as_ref()
        .is_some_and(|m| !m.is_null())
    {
        return Err(invalid("modules_to_save is not supported"));
    }
    let non_empty = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .is_some_and(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty()))
    };
    if non_empty(&config.rank_pattern) || non_empty(&config.alpha_pattern) {
        return Err(invalid(
            "rank_pattern and alpha_pattern are not supported (one rank and alpha for every module)",
        ));
    }
    if !(config.lora_alpha.is_finite() && config.lora_alpha > 0.0) {
        return Err(invalid("lora_alpha must be a positive number"));
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .map_err(|e| invalid(format!("{WEIGHTS_FILE} is not a safetensors file: {e}")))?;
    let mut pairs = Vec::new();
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    for key in keys {
        if key.ends_with(".lora_B.weight") {
            let a_key = key.replace(".lora_B.weight", ".lora_A.weight");
            if !tensors.contains_key(&a_key) {
                return Err(invalid(format!("{key} has no lora_A")));
            }
            continue;
        }
        let base_tensor = base_tensor_of(key)
            .ok_or_else(|| invalid(format!("unexpected tensor `{key}` (only LoRA A/B weights)")))?;
        if !module_targeted(&base_tensor, &config.target_modules) {
            return Err(invalid(format!("{key} is not in target_modules")));
        }
        let base_shape = shapes
            .get(&base_tensor)
            .ok_or_else(|| invalid(format!("target `{base_tensor}` does not exist in the base")))?;
        let b_key = key.replace(".lora_A.weight", ".lora_B.weight");
        let b = tensors
            .get(&b_key)
            .ok_or_else(|| invalid(format!("{key} has no lora_B")))?;
        let a = &tensors[key];
        let (out_dim, in_dim) = match base_shape.as_slice() {
            [o, i] => (*o, *i),
            other => return Err(invalid(format!("base `{base_tensor}` has shape {other:?}"))),
        };
        if a.dims() != [config.r, in_dim] || b.dims() != [out_dim, config.r] {
            return Err(invalid(format!(
                "{key}: A {:?} and B {:?} do not fit base {base_shape:?} with rank {}",
                a.dims(),
                b.dims(),
                config.r
            )));
        }
        let a = a.to_dtype(DType::F32).map_err(invalid)?;
        let b = b.to_dtype(DType::F32).map_err(invalid)?;
        for (name, t) in [("lora_A", &a), ("lora_B", &b)] {
            let finite = t
                .flatten_all()
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(invalid)?
                .iter()
                .all(|v| v.is_finite());
            if !finite {
                return Err(invalid(format!("{key}: {name} has NaN or infinite values")));
            }
        }
        pairs.push(LoraPair { base_tensor, a, b });
    }
    if pairs.is_empty() {
        return Err(invalid("no LoRA weights in the adapter"));
    }
    let scale = if config.use_rslora {
        config.lora_alpha / (config.r as f64).sqrt()
    } else {
        config.lora_alpha / config.r as f64
    };
    Ok(LoraAdapter {
        generation: generation_of(dir)?,
        config,
        pairs,
        scale,
    })
}

/// Writes the base with `adapter` merged into `out` (model.safetensors + the base's config
/// and tokenizer files).
pub fn merge_into(base_dir: &Path, adapter: &LoraAdapter, out: &Path) -> Result<()> {
    let base_path = base_dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&base_path, &Device::Cpu)
        .map_err(|e| EngineError::Load(format!("{}: {e}", base_path.display())))?;
    for pair in &adapter.pairs {
        let weight = tensors
            .get(&pair.base_tensor)
            .ok_or_else(|| invalid(format!("base has no {}", pair.base_tensor)))?;
        let delta = pair
            .b
            .matmul(&pair.a)
            .and_then(|d| d.affine(adapter.scale, 0.0))
            .and_then(|d| d.to_dtype(weight.dtype()))
            .map_err(|e| EngineError::Load(format!("merging {}: {e}", pair.base_tensor)))?;
        let merged = (weight + delta)
            .map_err(|e| EngineError::Load(format!("merging {}: {e}", pair.base_tensor)))?;
        tensors.insert(pair.base_tensor.clone(), merged);
    }
    std::fs::create_dir_all(out)
        .map_err(|e| EngineError::Load(format!("{}: {e}", out.display())))?;
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))
        .map_err(|e| EngineError::Load(format!("{}: {e}", out.display())))?;
    for name in BASE_SIDE_FILES {
        let from = base_dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name))
                .map_err(|e| EngineError::Load(format!("{}: {e}", from.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const Q: &str = "model.layers.0.self_attn.q_proj.weight";

    /// A base with one 4x3 projection, and an adapter folder writer.
    fn base(dir: &Path) {
        let w =
            Tensor::from_vec((0..12).map(|i| i as f32).collect(), (4, 3), &Device::Cpu).unwrap();
        let mut tensors = HashMap::new();
        tensors.insert(Q.to_string(), w);
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
    }

    fn adapter(dir: &Path, r: usize, a: Vec<f32>, b: Vec<f32>, config: serde_json::Value) {
        std::fs::create_dir_all(dir).unwrap();
        let mut tensors = HashMap::new();
        let key = "base_model.model.model.layers.0.self_attn.q_proj";
        tensors.insert(
            format!("{key}.lora_A.weight"),
            Tensor::from_vec(a, (r, 3), &Device::Cpu).unwrap(),
        );
        tensors.insert(
            format!("{key}.lora_B.weight"),
            Tensor::from_vec(b, (4, r), &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE)).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), config.to_string()).unwrap();
    }

    fn config(r: usize) -> serde_json::Value {
        json!({"peft_type": "LORA", "r": r, "lora_alpha": 2.0 * r as f64, "target_modules": ["q_proj"], "bias": "none"})
    }

    #[test]
    fn merge_adds_scaled_b_times_a() {
        let root = tempfile::tempdir().unwrap();
        base(root.path());
        let dir = root.path().join("fmt");
        // A = [[1,0,0]], B = [[1],[0],[0],[2]], alpha/r = 2 → delta rows 0 and 3 gain 2 and 4 at col 0.
        adapter(
            &dir,
            1,
            vec![1.0, 0.0, 0.0],
            vec![1.0, 0.0, 0.0, 2.0],
            config(1),
        );
        let shapes = base_shapes(root.path()).unwrap();
        let lora = load_adapter(&dir, &shapes, 16).unwrap();
        assert_eq!(lora.generation.len(), 64);
        let out = root.path().join("merged");
        merge_into(root.path(), &lora, &out).unwrap();
        let merged =
            candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
        let w = merged[Q].to_vec2::<f32>().unwrap();
        assert_eq!(w[0], [2.0, 1.0, 2.0]);
        assert_eq!(w[1], [3.0, 4.0, 5.0]);
        assert_eq!(w[3], [13.0, 10.0, 11.0]);
        assert!(out.join("config.json").is_file());
        // Same files, same generation; other files, another one.
        assert_eq!(generation_of(&dir).unwrap(), lora.generation);
        adapter(
            &dir,
            1,
            vec![1.0, 0.0, 0.0],
            vec![1.0, 0.0, 0.0, 3.0],
            config(1),
        );
        assert_ne!(generation_of(&dir).unwrap(), lora.generation);
    }

    #[test]
    fn bad_adapters_are_refused_with_the_reason() {
        let root = tempfile::tempdir().unwrap();
        base(root.path());
        let shapes = base_shapes(root.path()).unwrap();
        let dir = root.path().join("bad");
        // (rank, A, B, adapter_config.json, expected reason)
        type Case = (usize, Vec<f32>, Vec<f32>, serde_json::Value, &'static str);
        let cases: Vec<Case> = vec![
            (
                2,
                vec![0.0; 6],
                vec![0.0; 8],
                config(2),
                "rank 2 is not in 1..=1",
            ),
            (1, vec![f32::NAN, 0.0, 0.0], vec![0.0; 4], config(1), "NaN"),
            (
                1,
                vec![0.0; 3],
                vec![0.0; 4],
                json!({"r": 2, "lora_alpha": 1.0, "target_modules": ["q_proj"]}),
                "do not fit",
            ),
            (
                1,
                vec![0.0; 3],
                vec![0.0; 4],
                json!({"r": 1, "lora_alpha": 1.0, "target_modules": ["v_proj"]}),
                "not in target_modules",
            ),
            (
                1,
                vec![0.0; 3],
                vec![0.0; 4],
                json!({"peft_type": "IA3", "r": 1, "lora_alpha": 1.0, "target_modules": ["q_proj"]}),
                "not LORA",
            ),
            (
                1,
                vec![0.0; 3],
                vec![0.0; 4],
                json!({"r": 1, "lora_alpha": 1.0, "target_modules": ["q_proj"], "use_dora": true}),
                "DoRA",
            ),
            (
                1,
                vec![0.0; 3],
                vec![0.0; 4],
                json!({"r": 1, "lora_alpha": 1.0, "target_modules": ["q_proj"], "rank_pattern": {"q_proj": 4}}),
                "rank_pattern",
            ),
        ];
        for (r, a, b, cfg, reason) in cases {
            adapter(&dir, r, a, b, cfg.clone());
            let max_rank = if reason.starts_with("rank") { 1 } else { 16 };
            let err = load_adapter(&dir, &shapes, max_rank)
                .unwrap_err()
                .to_string();
            assert!(err.contains(reason), "{cfg}: {err}");
        }
        // Not safetensors at all.
        std::fs::write(dir.join(WEIGHTS_FILE), b"not a tensor file").unwrap();
        std::fs::write(dir.join(CONFIG_FILE), config(1).to_string()).unwrap();
        let err = load_adapter(&dir, &shapes, 16).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
        // A target the base does not have.
        let mut other = HashMap::new();
        other.insert(
            "model.layers.9.self_attn.q_proj.weight".to_string(),
            vec![4, 3],
        );
        adapter(&dir, 1, vec![0.0; 3], vec![0.0; 4], config(1));
        let err = load_adapter(&dir, &other, 16).unwrap_err().to_string();
        assert!(err.contains("does not exist in the base"), "{err}");
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("a");
        std::fs::create_dir_all(&inside).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), Path::new("a")).unwrap(),
            inside.canonicalize().unwrap()
        );
        let outside = tempfile::tempdir().unwrap();
        assert!(resolve_in_root(root.path(), Path::new("../")).is_err());
        assert!(resolve_in_root(root.path(), outside.path()).is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
            let err = resolve_in_root(root.path(), Path::new("link"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("outside the adapter root"), "{err}");
        }
    }
}
