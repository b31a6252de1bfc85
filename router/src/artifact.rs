//! A trained router on disk: `router.safetensors` (tensors `weight` [routes × dims] and `bias`
//! [routes], f32) and `router.json` (routes, thresholds, the embedding model it was trained
//! on, and how it was trained). Loading refuses a router trained on another embedding model.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::classifier::{IntentClassifier, TrainConfig};
use crate::error::{Result, RouterError};

/// Version of the files' layout.
pub const FORMAT_VERSION: u32 = 1;
pub const WEIGHTS_FILE: &str = "router.safetensors";
pub const META_FILE: &str = "router.json";

/// The embedding model a router's inputs come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingModelRef {
    pub id: String,
    /// sha256 of the model file.
    pub sha256: String,
    pub dims: usize,
}

/// How a router was trained and how it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub data_sha256: String,
    pub examples: usize,
    pub train_examples: usize,
    pub heldout_examples: usize,
    pub heldout_accuracy: f64,
    pub baseline_heldout_accuracy: f64,
    /// Share of each route held out, and the split's seed: `router eval` re-creates the split.
    pub holdout: f64,
    pub split_seed: u64,
    pub config: TrainConfig,
    /// Files whose examples were all trained on, none held out (`--extra-data`); none in
    /// routers saved before they existed.
    #[serde(default)]
    pub extra_data: Vec<ExtraData>,
}

/// One training-only file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraData {
    /// The path as given to `router train`.
    pub file: String,
    pub sha256: String,
    pub examples: usize,
}

/// `router.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterMeta {
    pub format_version: u32,
    pub routes: Vec<String>,
    /// Per route: below this probability the router abstains.
    pub thresholds: BTreeMap<String, f32>,
    pub embedding_model: EmbeddingModelRef,
    /// Buckets of lexical features after the embedding (`lexical.rs`); 0 (and routers saved
    /// before they existed): the embedding alone.
    #[serde(default)]
    pub lexical_buckets: usize,
    pub training: TrainingInfo,
}

fn artifact_error(path: &Path, reason: impl std::fmt::Display) -> RouterError {
    RouterError::Artifact {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the router into `dir` (created if needed); each file is replaced atomically.
pub fn save(dir: &Path, model: &IntentClassifier, meta: &RouterMeta) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let weight = f32_bytes(&model.weights);
    let bias = f32_bytes(&model.bias);
    let tensors = [
        (
            "weight",
            TensorView::new(Dtype::F32, vec![model.routes.len(), model.dims], &weight)
                .map_err(|e| artifact_error(dir, e))?,
        ),
        (
            "bias",
            TensorView::new(Dtype::F32, vec![model.routes.len()], &bias)
                .map_err(|e| artifact_error(dir, e))?,
        ),
    ];
    let bytes = safetensors::serialize(tensors, None).map_err(|e| artifact_error(dir, e))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(())
    };
    write(WEIGHTS_FILE, &bytes)?;
    write(
        META_FILE,
        serde_json::to_string_pretty(meta)
            .expect("meta serialises")
            .as_bytes(),
    )?;
    Ok(())
}

fn tensor_f32(tensors: &SafeTensors, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>> {
    let view = tensors
        .tensor(name)
        .map_err(|e| artifact_error(path, format!("tensor `{name}`: {e}")))?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(artifact_error(
            path,
            format!(
                "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
                view.dtype(),
                view.shape()
            ),
        ));
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(artifact_error(
            path,
            format!("tensor `{name}` has NaN or infinite values"),
        ));
    }
    Ok(values)
}

/// Loads a router from `dir`, refusing one trained on another embedding model than `running`.
pub fn load(dir: &Path, running: &EmbeddingModelRef) -> Result<(IntentClassifier, RouterMeta)> {
    let meta_path = dir.join(META_FILE);
    let meta: RouterMeta = serde_json::from_slice(&std::fs::read(&meta_path)?)
        .map_err(|e| artifact_error(&meta_path, e))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(artifact_error(
            &meta_path,
            format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                meta.format_version
            ),
        ));
    }
    if meta.embedding_model.sha256 != running.sha256 || meta.embedding_model.dims != running.dims {
        return Err(RouterError::EmbeddingMismatch {
            trained: format!(
                "{} ({})",
                meta.embedding_model.id, meta.embedding_model.sha256
            ),
            running: format!("{} ({})", running.id, running.sha256),
        });
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights_path)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| artifact_error(&weights_path, e))?;
    let (routes, dims) = (meta.routes.len(), running.dims + meta.lexical_buckets);
    let weights = tensor_f32(&tensors, "weight", &[routes, dims], &weights_path)?;
    let bias = tensor_f32(&tensors, "bias", &[routes], &weights_path)?;
    let thresholds = meta
        .routes
        .iter()
        .map(|r| {
            meta.thresholds
                .get(r)
                .copied()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| {
                    artifact_error(
                        &meta_path,
                        format!("route `{r}` needs a threshold in [0, 1]"),
                    )
                })
        })
        .collect::<Result<Vec<f32>>>()?;
    Ok((
        IntentClassifier {
            routes: meta.routes.clone(),
            dims,
            weights,
            bias,
            thresholds,
        },
        meta,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_and_meta() -> (IntentClassifier, RouterMeta) {
        let model = IntentClassifier {
            routes: vec!["a".into(), "b".into()],
            dims: 3,
            weights: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            bias: vec![0.1, -0.1],
            thresholds: vec![0.5, 0.6],
        };
        let meta = RouterMeta {
            format_version: FORMAT_VERSION,
            routes: model.routes.clone(),
            thresholds: [("a".to_string(), 0.5), ("b".to_string(), 0.6)].into(),
            embedding_model: EmbeddingModelRef {
                id: "m".into(),
                sha256: "abc".into(),
                dims: 3,
            },
            lexical_buckets: 0,
            training: TrainingInfo {
                data_sha256: "d".into(),
                examples: 10,
                train_examples: 8,
                heldout_examples: 2,
                heldout_accuracy: 1.0,
                baseline_heldout_accuracy: 0.5,
                holdout: 0.2,
                split_seed: 1,
                config: TrainConfig::default(),
                extra_data: Vec::new(),
            },
        };
        (model, meta)
    }

    #[test]
    fn round_trips_and_refuses_another_embedding_model() {
        let dir = tempfile::tempdir().unwrap();
        let (model, meta) = model_and_meta();
        save(dir.path(), &model, &meta).unwrap();
        let (loaded, loaded_meta) = load(dir.path(), &meta.embedding_model).unwrap();
        assert_eq!(loaded, model);
        assert_eq!(loaded_meta, meta);
        let other = EmbeddingModelRef {
            sha256: "def".into(),
            ..meta.embedding_model.clone()
        };
        let err = load(dir.path(), &other).unwrap_err();
        assert!(
            matches!(err, RouterError::EmbeddingMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("retrain"), "{err}");
    }

    #[test]
    fn lexical_features_widen_the_weights_and_older_files_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let (mut model, mut meta) = model_and_meta();
        meta.lexical_buckets = 2;
        model.dims = 5;
        model.weights = (0..10).map(|i| i as f32 / 10.0).collect();
        save(dir.path(), &model, &meta).unwrap();
        let (loaded, _) = load(dir.path(), &meta.embedding_model).unwrap();
        assert_eq!(loaded.dims, 5);
        // A router.json written before the field existed reads as the embedding alone, and
        // its [routes × 5] weights are then refused as the wrong shape.
        let path = dir.path().join(META_FILE);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("lexical_buckets");
        std::fs::write(&path, json.to_string()).unwrap();
        let err = load(dir.path(), &meta.embedding_model).unwrap_err();
        assert!(err.to_string().contains("weight"), "{err}");
    }

    #[test]
    fn nan_weights_and_wrong_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut model, meta) = model_and_meta();
        model.weights[2] = f32::NAN;
        save(dir.path(), &model, &meta).unwrap();
        let err = load(dir.path(), &meta.embedding_model)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NaN"), "{err}");
        let (mut model, meta) = model_and_meta();
        model.dims = 2;
        model.weights.truncate(4);
        save(dir.path(), &model, &meta).unwrap();
        let err = load(dir.path(), &meta.embedding_model)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected F32 [2, 3]"), "{err}");
    }
}
