//! `switchyard eval`'s report (`switchyard_server::evaluation`) on a small subset, the way CI
//! runs it: the trained router on the first 30 queries of `router/data/routes-eval-traffic.jsonl`
//! (lines carry an `id`, which is ignored), the real index holding four git pages, the
//! `git-docs-dev.jsonl` queries answered by those pages, and two answers generated through the
//! request pipeline by the real model.

use std::io::Write;

use switchyard_server::evaluation::{evaluate, EvalPlan};
use switchyard_server::state::AppState;
use switchyard_server::{app::load_retrieval_and_routing, load_engine};
use switchyard_tests::{corpus_text, rag_config, trained_router, workspace_root};

const PAGES: [&str; 4] = [
    "git-stash.txt",
    "git-bisect.txt",
    "git-clean.txt",
    "git-cherry-pick.txt",
];

/// Indexes the four pages from the corpus into the default tenant.
async fn ingest_pages(ingestor: &retrieval::Ingestor) {
    for page in PAGES {
        ingestor
            .upsert(retrieval::NewDocument {
                tenant: "default".into(),
                doc_id: page.into(),
                text: corpus_text(page),
                title: None,
                format: None,
            })
            .await
            .unwrap();
    }
}

/// The first `n` lines of `source` that `keep` accepts, in a file of their own.
fn subset(
    source: &str,
    n: usize,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(workspace_root().join(source)).unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for line in text
        .lines()
        .filter(|l| keep(&serde_json::from_str(l).unwrap()))
        .take(n)
    {
        writeln!(file, "{line}").unwrap();
    }
    file
}

#[tokio::test]
async fn the_evaluation_reports_routing_retrieval_and_answers() {
    let index = tempfile::tempdir().unwrap();
    let mut config = rag_config(index.path());
    config.router_enabled = true;
    config.router_dir = trained_router().await.to_path_buf();
    config.default_max_tokens = 24;
    let state = AppState::new(config.clone());
    load_retrieval_and_routing(state.clone()).await;
    let retrieval = state.retrieval().unwrap();
    ingest_pages(&retrieval.ingestor).await;
    state.set_ready(load_engine(&config, None).await.unwrap());

    let routing = subset("router/data/routes-eval-traffic.jsonl", 30, |_| true);
    let answered_here = |q: &serde_json::Value| {
        q["relevant"]
            .as_object()
            .unwrap()
            .iter()
            .any(|(doc, grade)| grade == 2 && PAGES.contains(&doc.as_str()))
    };
    let questions = subset("retrieval/eval/git-docs-dev.jsonl", 3, answered_here);
    let plan = EvalPlan {
        routing: vec![routing.path().to_path_buf()],
        router_train_data: vec![workspace_root().join("router/data/routes.jsonl")],
        retrieval: vec![questions.path().to_path_buf()],
        answers: 2,
        tenant: "default".into(),
        ranked_lists_dir: Some(index.path().join("ranked")),
    };
    let report = evaluate(&state, &plan).await.unwrap();

    let routed = &report.routing[0];
    assert_eq!(routed.queries, 30);
    assert!(
        routed.classifier.accuracy > 0.6,
        "{}",
        routed.classifier.render("classifier")
    );
    assert!((0.0..=1.0).contains(&routed.baseline.accuracy));
    let latency = routed.latency.unwrap();
    assert!(latency.p50_ms > 0.0 && latency.p50_ms <= latency.p95_ms);

    let searched = &report.retrieval[0];
    assert_eq!(searched.report.queries, 3);
    // Pages judged but not ingested here are reported as missing; the ingested ones are not.
    assert!(!searched.missing.is_empty());
    assert!(
        searched
            .missing
            .iter()
            .all(|d| !PAGES.contains(&d.as_str())),
        "{:?}",
        searched.missing
    );
    assert_eq!(searched.report.scores.len(), 5);
    // Four pages in the index and each question's answering page among them: the default
    // fusion puts it among the chunks sent for at least two of the three.
    let rrf = &searched.report.scores[2];
    assert!(rrf.method.starts_with("rrf"), "{rrf:?}");
    assert!(
        rrf.answer_in_top_k >= 2.0 / 3.0,
        "{:?}",
        searched.report.scores
    );

    // The candidate lists written for offline study: one line per query, both retrievers'
    // chunks from the four pages, best first.
    let stem = questions.path().file_stem().unwrap().to_string_lossy();
    let dumped =
        std::fs::read_to_string(index.path().join(format!("ranked/{stem}.ranked.jsonl"))).unwrap();
    assert_eq!(dumped.lines().count(), 3);
    for line in dumped.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        for side in ["bm25", "dense"] {
            let hits = line[side].as_array().unwrap();
            assert!(!hits.is_empty(), "{line}");
            let scores: Vec<f64> = hits.iter().map(|h| h[1].as_f64().unwrap()).collect();
            assert!(
                scores.windows(2).all(|w| w[0] >= w[1]),
                "{side}: {scores:?}"
            );
            let doc = hits[0][0].as_str().unwrap().split('#').next().unwrap();
            assert!(PAGES.contains(&doc), "{doc}");
        }
    }

    let answers = &report.answers[0];
    assert_eq!((answers.answers, answers.failed), (2, 0));
    assert!(answers.routed_rag <= 2 && answers.sources_hold_answer <= answers.routed_rag);
    let (first, total) = (answers.first_event.unwrap(), answers.total.unwrap());
    assert!(
        first.p50_ms > 0.0 && first.p50_ms <= total.p95_ms,
        "{first:?} {total:?}"
    );
    assert!(answers.route.is_some());

    let printed = report.render(&config);
    for heading in [
        "## Routing",
        "## Retrieval",
        "## Answers through the pipeline",
    ] {
        assert!(printed.contains(heading), "{printed}");
    }
    // No adapter in this configuration's folder: the report says dense search ran without.
    assert!(printed.contains("query adapter off"), "{printed}");
}

#[tokio::test]
async fn extra_training_files_are_trained_on_whole_and_never_scored() {
    let router_dir = trained_router().await;
    let meta: router::RouterMeta = serde_json::from_str(
        &std::fs::read_to_string(router_dir.join(router::artifact::META_FILE)).unwrap(),
    )
    .unwrap();
    let chat = workspace_root().join("router/data/routes-chat.jsonl");
    let (chat_examples, chat_sha) = router::load_examples(&chat).unwrap();
    let training = &meta.training;
    assert_eq!(training.extra_data.len(), 1, "{training:?}");
    assert_eq!(training.extra_data[0].sha256, chat_sha);
    // Every extra example is on the training side; the held-out split is routes.jsonl's alone.
    assert_eq!(
        training.train_examples + training.heldout_examples,
        training.examples
    );
    assert_eq!(
        training.examples - chat_examples.len(),
        router::load_examples(&workspace_root().join("router/data/routes.jsonl"))
            .unwrap()
            .0
            .len()
    );
    let embedder = retrieval::Embedder::load(&retrieval::EmbedderConfig::from_models_dir(
        &workspace_root().join("models"),
    ))
    .unwrap();
    let refused = switchyard_server::routing::eval_router(
        &embedder,
        router_dir,
        &chat,
        &[workspace_root().join("router/data/routes.jsonl")],
    )
    .expect_err("a file trained on whole is refused as test data")
    .to_string();
    assert!(refused.contains("trained on whole"), "{refused}");
}

/// The query adapter trained on the real index (the four pages; the training questions whose
/// answering page is not there have no positive and are skipped) changes what dense search
/// scores once loaded, and one recorded for another embedding model is refused at open.
#[tokio::test]
async fn a_query_adapter_trained_on_the_index_moves_dense_search_and_a_mismatched_one_is_refused() {
    use retrieval::query_adapter::{train_for_index, META_FILE};
    use switchyard_server::index::open_retrieval;

    let (index, adapter_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = rag_config(index.path());
    config.query_adapter_dir = adapter_dir.path().to_path_buf();
    let query = "how do I put my uncommitted changes aside for a moment";
    let plain = {
        let retrieval = open_retrieval(&config).await.unwrap();
        assert!(
            retrieval.retriever.query_adapter().is_none(),
            "the folder is empty"
        );
        ingest_pages(&retrieval.ingestor).await;
        let training = retrieval::AdapterTrainConfig {
            steps: 40,
            ..Default::default()
        };
        let questions = workspace_root().join("retrieval/train/git-docs-train.jsonl");
        let adapter = train_for_index(retrieval.store(), "default", &[questions], &training)
            .await
            .unwrap();
        let meta = adapter.meta();
        let chunks = retrieval.store().chunk_records("default").len();
        assert_eq!(meta.chunks, chunks);
        assert!(meta.synthetic_pairs > 0 && meta.question_files[0].questions > 200);
        assert!(meta.loss_after < meta.loss_before, "{meta:?}");
        adapter.save(adapter_dir.path()).unwrap();
        retrieval
            .retriever
            .ranked_lists("default", query, 10)
            .await
            .dense
            .unwrap()
    };

    let retrieval = open_retrieval(&config).await.unwrap();
    assert!(retrieval.retriever.query_adapter().is_some());
    let adapted = retrieval
        .retriever
        .ranked_lists("default", query, 10)
        .await
        .dense
        .unwrap();
    assert_eq!(plain.len(), adapted.len());
    assert!(
        plain
            .iter()
            .zip(&adapted)
            .any(|(a, b)| (a.score - b.score).abs() > 1e-4),
        "dense search scored the same with the adapter: {plain:?}"
    );
    drop(retrieval);

    let meta_path = adapter_dir.path().join(META_FILE);
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["embedding_model_sha256"] = "0".repeat(64).into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let Err(err) = open_retrieval(&config).await else {
        panic!("an adapter recorded for another embedding model was loaded");
    };
    assert!(err.to_string().contains("train it again"), "{err}");
}
