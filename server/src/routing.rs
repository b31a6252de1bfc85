//! The trained router in the server: training and evaluating it on the running embedder
//! (`switchyard router train|eval`), loading it at start, and classifying a query.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use retrieval::{Embedder, EMBEDDING_DIMS, EMBEDDING_MODEL_ID};

use crate::config::Config;
use router::artifact::{self, META_FILE};
use router::{
    evaluate, load_examples, router_input, stratified_split, Decision, EmbeddingModelRef,
    Evaluation, Example, ExtraData, IntentClassifier, NearestNeighbours, RouterError, RouterMeta,
    TrainConfig, TrainingInfo,
};

/// Neighbours the baseline looks at (semantic-router's default top_k is 5).
pub const BASELINE_K: usize = 5;

/// A loaded router.
pub struct RouterHandle {
    pub classifier: IntentClassifier,
    pub meta: RouterMeta,
}

/// The embedding model this server runs, as a router records it.
pub fn embedding_ref(embedder: &Embedder) -> EmbeddingModelRef {
    EmbeddingModelRef {
        id: EMBEDDING_MODEL_ID.to_string(),
        sha256: embedder.model_sha256().to_string(),
        dims: EMBEDDING_DIMS,
    }
}

/// Loads the router in `dir`; `None` when the folder has none.
pub fn load_router(dir: &Path, embedder: &Embedder) -> Result<Option<RouterHandle>, RouterError> {
    if !dir.join(META_FILE).is_file() {
        return Ok(None);
    }
    let (classifier, meta) = artifact::load(dir, &embedding_ref(embedder))?;
    Ok(Some(RouterHandle { classifier, meta }))
}

/// The router a server with this configuration serves: `None` when routing is off or
/// `router_dir` holds none (requests take `default_route`); an error when it cannot be used
/// (another embedding model, or a route this server does not serve).
pub fn load_served_router(
    config: &Config,
    embedder: &Embedder,
) -> Result<Option<SharedRouter>, RouterError> {
    if !config.router_enabled {
        return Ok(None);
    }
    let Some(router) = load_router(&config.router_dir, embedder)? else {
        tracing::warn!(
            dir = %config.router_dir.display(),
            "no trained router there: requests take `default_route` (train one with `switchyard router train`)"
        );
        return Ok(None);
    };
    let served: Vec<&str> = config.routes.iter().map(|r| r.as_str()).collect();
    if let Some(label) = router
        .meta
        .routes
        .iter()
        .find(|r| !served.contains(&r.as_str()))
    {
        return Err(RouterError::Artifact {
            path: config.router_dir.join(META_FILE).display().to_string(),
            reason: format!(
                "the router predicts `{label}`, which is not in this server's routes {served:?}"
            ),
        });
    }
    Ok(Some(Arc::new(router)))
}

/// Classifies one query; returns the decision and the time it took (embedding included).
pub fn classify(
    embedder: &Embedder,
    router: &RouterHandle,
    query: &str,
    fallback: &str,
) -> retrieval::Result<(Decision, Duration)> {
    let started = Instant::now();
    let vector = embedder.embed(&[query])?.remove(0);
    let input = router_input(&vector, query, router.meta.lexical_buckets);
    Ok((
        router.classifier.decide(&input, fallback),
        started.elapsed(),
    ))
}

/// Training options besides the model's own.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Share of each route held out for evaluation.
    pub holdout: f64,
    pub split_seed: u64,
    /// Default threshold for every route.
    pub threshold: f32,
    /// Buckets of lexical features beside the embedding (0: the embedding alone).
    pub lexical_buckets: usize,
    /// Files trained on whole, beside the training split of `data` (none held out), so the
    /// held-out split stays the same queries whatever is added.
    pub extra_data: Vec<PathBuf>,
    pub config: TrainConfig,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            holdout: 0.2,
            split_seed: 42,
            threshold: 0.5,
            // Chosen on both routing sets (held-out split / routes-eval-traffic.jsonl): 0
            // gave 0.903 / 0.854, 2048 0.930 / 0.875, 4096 0.930 / 0.879, 8192 0.919 / 0.883.
            lexical_buckets: 4096,
            extra_data: Vec::new(),
            config: TrainConfig::default(),
        }
    }
}

/// What training produced and how both models scored on the held-out split.
pub struct TrainReport {
    pub meta: RouterMeta,
    pub classifier: Evaluation,
    pub baseline: Evaluation,
}

fn route_indexes(routes: &[String], examples: &[&Example]) -> Vec<usize> {
    examples
        .iter()
        .map(|e| {
            routes
                .iter()
                .position(|r| *r == e.route)
                .expect("route listed")
        })
        .collect()
}

/// Embeds the examples in batches, calling `progress(done, total)`.
fn embed_all(
    embedder: &Embedder,
    examples: &[Example],
    progress: &mut dyn FnMut(usize, usize),
) -> retrieval::Result<Vec<Vec<f32>>> {
    let mut vectors = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(32) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.query.as_str()).collect();
        vectors.extend(embedder.embed(&texts)?);
        progress(vectors.len(), examples.len());
    }
    Ok(vectors)
}

/// Trains a router on `data` (stratified held-out split), evaluates it and the
/// nearest-neighbour baseline on the held-out part, and writes it to `out`.
pub fn train_router(
    embedder: &Embedder,
    data: &Path,
    out: &Path,
    options: &TrainOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<TrainReport, RoutingError> {
    let (examples, data_sha256) = load_examples(data)?;
    let mut routes: Vec<String> = examples.iter().map(|e| e.route.clone()).collect();
    routes.sort();
    routes.dedup();
    if let Some(unknown) = routes
        .iter()
        .find(|r| crate::config::Route::from_label(r).is_none())
    {
        return Err(RouterError::Data(format!(
            "route `{unknown}` is not one the server serves (simple, rag, tool)"
        ))
        .into());
    }
    let vectors = embed_all(embedder, &examples, &mut |done, total| {
        progress("embedding", done, total)
    })?;
    let (train, held) = stratified_split(&examples, options.holdout, options.split_seed);
    let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<&Example>) {
        (
            idx.iter().map(|&i| vectors[i].clone()).collect(),
            idx.iter().map(|&i| &examples[i]).collect(),
        )
    };
    let (mut train_e, mut train_ex) = pick(&train);
    let (held_e, held_ex) = pick(&held);
    let mut extras = Vec::new();
    let mut extra_examples = Vec::new();
    for file in &options.extra_data {
        let (more, sha256) = load_examples(file)?;
        if let Some(e) = more.iter().find(|e| !routes.contains(&e.route)) {
            return Err(RouterError::Data(format!(
                "{}: route `{}` is not in {}",
                file.display(),
                e.route,
                data.display()
            ))
            .into());
        }
        extras.push(ExtraData {
            file: file.display().to_string(),
            sha256,
            examples: more.len(),
        });
        extra_examples.extend(more);
    }
    train_e.extend(embed_all(embedder, &extra_examples, &mut |done, total| {
        progress("embedding", done, total)
    })?);
    train_ex.extend(extra_examples.iter());
    let inputs = |vectors: &[Vec<f32>], examples: &[&Example]| -> Vec<Vec<f32>> {
        vectors
            .iter()
            .zip(examples)
            .map(|(v, e)| router_input(v, &e.query, options.lexical_buckets))
            .collect()
    };
    let (train_x, held_x) = (inputs(&train_e, &train_ex), inputs(&held_e, &held_ex));
    let train_y = route_indexes(&routes, &train_ex);
    let held_y = route_indexes(&routes, &held_ex);
    let epochs = options.config.epochs;
    let mut classifier = IntentClassifier::train(
        routes.clone(),
        &train_x,
        &train_y,
        &options.config,
        &mut |epoch, _loss| progress("training", epoch, epochs),
    );
    classifier.thresholds = vec![options.threshold; routes.len()];
    let predicted: Vec<usize> = held_x.iter().map(|x| classifier.predict(x)).collect();
    let classifier_eval = evaluate(&routes, &held_y, &predicted);
    // The baseline is semantic-router's: cosine over the embeddings alone.
    let baseline = NearestNeighbours::new(train_e, train_y, BASELINE_K);
    let predicted: Vec<usize> = held_e.iter().map(|x| baseline.predict(x)).collect();
    let baseline_eval = evaluate(&routes, &held_y, &predicted);
    let meta = RouterMeta {
        format_version: artifact::FORMAT_VERSION,
        routes: routes.clone(),
        thresholds: routes
            .iter()
            .map(|r| (r.clone(), options.threshold))
            .collect(),
        embedding_model: embedding_ref(embedder),
        lexical_buckets: options.lexical_buckets,
        training: TrainingInfo {
            data_sha256,
            examples: examples.len() + extra_examples.len(),
            train_examples: train_ex.len(),
            heldout_examples: held.len(),
            heldout_accuracy: classifier_eval.accuracy,
            baseline_heldout_accuracy: baseline_eval.accuracy,
            holdout: options.holdout,
            split_seed: options.split_seed,
            config: options.config.clone(),
            extra_data: extras,
        },
    };
    artifact::save(out, &classifier, &meta)?;
    Ok(TrainReport {
        meta,
        classifier: classifier_eval,
        baseline: baseline_eval,
    })
}

/// Evaluates the router in `router_dir` on `data`, and the baseline built from the utterances
/// the router was trained on: `train_data`, and the extra files its metadata records (read
/// from their recorded paths when `train_data` has none with their sha256). When
/// `data` is the router's own training file, only its held-out split is scored (and the
/// baseline indexes only that file's training split), so neither sees its test queries; a
/// file the router trained on whole is refused as test data.
pub fn eval_router(
    embedder: &Embedder,
    router_dir: &Path,
    data: &Path,
    train_data: &[PathBuf],
) -> Result<(Evaluation, Evaluation, usize), RoutingError> {
    let router = load_router(router_dir, embedder)?.ok_or_else(|| RouterError::Artifact {
        path: router_dir.display().to_string(),
        reason: "no router here (train one with `switchyard router train`)".into(),
    })?;
    let routes = router.meta.routes.clone();
    let training = &router.meta.training;
    let (eval_examples, eval_sha) = load_examples(data)?;
    if training.extra_data.iter().any(|e| e.sha256 == eval_sha) {
        return Err(RouterError::Data(format!(
            "{} is a file the router was trained on whole (--extra-data): it cannot test it",
            data.display()
        ))
        .into());
    }
    let mut files = Vec::new();
    for file in train_data {
        files.push(load_examples(file)?);
    }
    for extra in &training.extra_data {
        if files.iter().all(|(_, sha)| *sha != extra.sha256) {
            let (examples, sha) = load_examples(Path::new(&extra.file)).map_err(|e| {
                RouterError::Data(format!(
                    "the extra training file {} that router.json records: {e} (name it with --train-data)",
                    extra.file
                ))
            })?;
            if sha != extra.sha256 {
                return Err(RouterError::Data(format!(
                    "{} changed since the router was trained on it: retrain, or name the file it was trained on with --train-data",
                    extra.file
                ))
                .into());
            }
            files.push((examples, sha));
        }
    }
    let mut baseline_examples = Vec::new();
    for (examples, sha) in files {
        if sha == training.data_sha256 {
            let (train_idx, _) = stratified_split(&examples, training.holdout, training.split_seed);
            baseline_examples.extend(train_idx.iter().map(|&i| examples[i].clone()));
        } else {
            baseline_examples.extend(examples);
        }
    }
    let eval_set: Vec<Example> = if eval_sha == training.data_sha256 {
        let (_, held_idx) = stratified_split(&eval_examples, training.holdout, training.split_seed);
        held_idx.iter().map(|&i| eval_examples[i].clone()).collect()
    } else {
        eval_examples
    };
    if let Some(e) = eval_set.iter().find(|e| !routes.contains(&e.route)) {
        return Err(RouterError::Data(format!(
            "route `{}` is not one of the router's {routes:?}",
            e.route
        ))
        .into());
    }
    let eval_refs: Vec<&Example> = eval_set.iter().collect();
    let labels = route_indexes(&routes, &eval_refs);
    let eval_x = embed_all(embedder, &eval_set, &mut |_, _| {})?;
    let buckets = router.meta.lexical_buckets;
    let predicted: Vec<usize> = eval_x
        .iter()
        .zip(&eval_set)
        .map(|(x, e)| {
            router
                .classifier
                .predict(&router_input(x, &e.query, buckets))
        })
        .collect();
    let classifier_eval = evaluate(&routes, &labels, &predicted);

    let baseline_examples: Vec<Example> = baseline_examples
        .into_iter()
        .filter(|e| routes.contains(&e.route))
        .collect();
    let baseline_refs: Vec<&Example> = baseline_examples.iter().collect();
    let baseline_x = embed_all(embedder, &baseline_examples, &mut |_, _| {})?;
    let baseline = NearestNeighbours::new(
        baseline_x,
        route_indexes(&routes, &baseline_refs),
        BASELINE_K,
    );
    let predicted: Vec<usize> = eval_x.iter().map(|x| baseline.predict(x)).collect();
    Ok((
        classifier_eval,
        evaluate(&routes, &labels, &predicted),
        eval_set.len(),
    ))
}

/// Errors of training and evaluating: the router's or the embedder's.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Retrieval(#[from] retrieval::RetrievalError),
}

/// Shared handle type for the state.
pub type SharedRouter = Arc<RouterHandle>;
