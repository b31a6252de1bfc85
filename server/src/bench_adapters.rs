//! `switchyard bench-adapters`: adapter load time, swap latency (activation call → first
//! token of a request served by the new generation, p50/p99), decode speed with an adapter
//! against the base measured in the same run, and (llama.cpp) the process's resident memory
//! with 1, 10 and 50 adapters loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use adapters::{
    AdapterHost, AdapterRegistry, Backend, BaseShapes, ChatMessage, GenerationEvent,
    GenerationRequest, LlamaAdapterHost, LlamaConfig, LlamaCppBackend, RegistryConfig, Role,
    SamplingParams,
};

use switchyard_server::EngineKind;

#[derive(Debug, clap::Args)]
pub struct BenchAdaptersArgs {
    /// The engine whose adapters are measured.
    #[arg(long, value_enum, default_value = "llama.cpp")]
    pub engine: EngineKind,
    /// llama.cpp: the GGUF adapters apply to.
    #[arg(
        long,
        default_value = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: PathBuf,
    /// mistral.rs: the safetensors base (`switchyard convert`'s output).
    #[arg(long)]
    pub base_dir: Option<PathBuf>,
    /// Two PEFT adapter folders to swap between. Without them, synthetic rank-8 adapters
    /// on every layer's q/v projections are written to a temporary folder.
    #[arg(long, num_args = 2)]
    pub adapters: Vec<PathBuf>,
    /// Swaps measured.
    #[arg(long, default_value_t = 50)]
    pub swaps: usize,
    /// Tokens per decode-speed run (3 runs each, median).
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
}

fn request(max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        messages: vec![ChatMessage::new(
            Role::User,
            "Explain what a git rebase does, step by step.",
        )],
        sampling: SamplingParams {
            temperature: 0.0,
            max_tokens,
            ..SamplingParams::default()
        },
        json_schema: None,
    }
}

/// Time to the first token of a request on `engine`.
async fn first_token(engine: &Arc<dyn Backend>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut events = engine.generate(request(1)).await?;
    while let Some(event) = events.next().await {
        if matches!(
            event?,
            GenerationEvent::Delta(_) | GenerationEvent::Done { .. }
        ) {
            return Ok(started.elapsed());
        }
    }
    anyhow::bail!("no token")
}

/// Decode tokens/s after the first token, median of 3 runs.
async fn decode_rate(engine: &Arc<dyn Backend>, tokens: usize) -> anyhow::Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..3 {
        let mut events = engine.generate(request(tokens)).await?;
        let mut first = None;
        let mut generated = 0;
        while let Some(event) = events.next().await {
            match event? {
                GenerationEvent::Delta(_) => {
                    first.get_or_insert_with(Instant::now);
                }
                GenerationEvent::Done { usage, .. } => {
                    generated = usage.completion_tokens;
                    break;
                }
            }
        }
        let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        rates.push(generated.saturating_sub(1) as f64 / secs.max(1e-9));
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `count` deterministic synthetic adapters shaped for the base, in `dir`.
fn synthetic_adapters(shapes: &BaseShapes, dir: &Path, count: u64) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for seed in 1..=count {
        let folder = dir.join(format!("synthetic-{seed}"));
        adapters::fixtures::write_synthetic_adapter(&folder, shapes, seed, false)?;
        out.push(folder);
    }
    Ok(out)
}

/// The process's resident memory (`VmRSS`), in bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

/// Resident memory with 1, 10 and 50 adapters loaded (each under its own name and served
/// once, so its memory is in use) against `N × (generation size + 1 MB)`; the adapters are
/// unloaded again after.
async fn memory_table(
    registry: &AdapterRegistry,
    adapter_dirs: &[PathBuf],
    resident_before: u64,
) -> anyhow::Result<()> {
    let mut loaded = 0;
    let mut generation_bytes = 0;
    for target in [1usize, 10, 50] {
        while loaded < target {
            let dir = &adapter_dirs[loaded];
            let name = format!("memory-{loaded}");
            let info = registry
                .load(&name, dir.file_name().context("adapter folder")?.as_ref())
                .await?;
            // What one generation writes (its GGUF LoRA): the budget's unit.
            generation_bytes = info.resident_bytes;
            let (engine, _) = registry.engine(&name).context("loaded adapter")?;
            first_token(&engine).await?;
            loaded += 1;
        }
        let extra = resident_bytes()?.saturating_sub(resident_before);
        let budget = target as u64 * (generation_bytes + 1024 * 1024);
        println!(
            "resident memory with {target} adapters loaded: +{:.1} MB over the base (budget {target} x (file {:.2} MB + 1 MB) = {:.1} MB: x{:.2})",
            extra as f64 / 1e6,
            generation_bytes as f64 / 1e6,
            budget as f64 / 1e6,
            extra as f64 / budget as f64
        );
    }
    for i in 0..loaded {
        registry.unload(&format!("memory-{i}"))?;
    }
    Ok(())
}

/// The base engine and the host its adapters are served by.
async fn open_engine(
    args: &BenchAdaptersArgs,
) -> anyhow::Result<(Arc<dyn Backend>, Arc<dyn AdapterHost>)> {
    Ok(match args.engine {
        EngineKind::LlamaCpp => {
            let engine = Arc::new(
                LlamaCppBackend::load(LlamaConfig::new(args.model.clone(), "base")).await?,
            );
            let host = LlamaAdapterHost::new();
            host.attach(engine.clone())?;
            (engine, Arc::new(host))
        }
        #[cfg(feature = "mistralrs")]
        EngineKind::MistralRs => {
            let base_dir = args
                .base_dir
                .as_ref()
                .context("--engine mistralrs needs --base-dir (switchyard convert's output)")?;
            let base = adapters::MistralRsBackend::load_shared(base_dir.clone(), "base").await?;
            (base, Arc::new(adapters::MergedHost::open(base_dir)?))
        }
        #[cfg(not(feature = "mistralrs"))]
        EngineKind::MistralRs => {
            anyhow::bail!("this build has no mistral.rs engine: build with `--features mistralrs`")
        }
    })
}

pub async fn run(args: BenchAdaptersArgs) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("switchyard-bench-adapters-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let (base, host) = open_engine(&args).await?;
    let shapes = host.shapes().await?;
    // The memory table loads 50 adapters on llama.cpp; mistral.rs swaps two (each a model).
    let count = match args.engine {
        EngineKind::LlamaCpp => 50,
        EngineKind::MistralRs => 2,
    };
    let adapter_dirs = if args.adapters.is_empty() {
        synthetic_adapters(&shapes, &scratch.join("adapters"), count)?
    } else {
        args.adapters.clone()
    };
    let root = adapter_dirs[0]
        .parent()
        .context("adapter folders need a parent")?
        .to_path_buf();
    let registry = AdapterRegistry::new(
        RegistryConfig {
            adapter_root: root,
            work_dir: scratch.join("generations"),
            max_rank: 64,
            max_resident: count as usize + 1,
        },
        host,
    )?;
    // Warm the base (first-request allocations) before measuring memory.
    first_token(&base).await?;
    let resident_before = resident_bytes()?;
    if args.engine == EngineKind::LlamaCpp && adapter_dirs.len() >= 50 {
        memory_table(&registry, &adapter_dirs, resident_before).await?;
    }

    let mut load_times = Vec::new();
    let mut generations = Vec::new();
    for dir in &adapter_dirs[..2] {
        let started = Instant::now();
        let info = registry
            .load(
                "bench",
                dir.file_name().context("adapter folder name")?.as_ref(),
            )
            .await?;
        load_times.push(started.elapsed());
        generations.push(info.generation);
    }

    let mut swaps = Vec::with_capacity(args.swaps);
    for i in 0..args.swaps {
        let target = &generations[i % 2];
        let started = Instant::now();
        registry.activate("bench", target, None)?;
        let (engine, generation) = registry.engine("bench").context("active adapter")?;
        anyhow::ensure!(&generation == target, "swap did not take");
        first_token(&engine).await?;
        swaps.push(started.elapsed());
    }
    swaps.sort();
    let base_ttft = {
        let mut times = Vec::new();
        for _ in 0..args.swaps.min(20) {
            times.push(first_token(&base).await?);
        }
        times.sort();
        percentile(&times, 0.5)
    };

    let (adapter_engine, _) = registry.engine("bench").context("active adapter")?;
    let base_rate = decode_rate(&base, args.tokens).await?;
    let adapter_rate = decode_rate(&adapter_engine, args.tokens).await?;
    // Two streams at once: both on the base (one group), or one base and one adapter (two
    // groups taking turns, the adapter switched on and off).
    let pair_rate = |a: Arc<dyn Backend>, b: Arc<dyn Backend>| async move {
        let (x, y) = tokio::join!(decode_rate(&a, args.tokens), decode_rate(&b, args.tokens));
        anyhow::Ok(x? + y?)
    };
    let same_group = pair_rate(base.clone(), base.clone()).await?;
    let mixed_groups = pair_rate(base.clone(), adapter_engine.clone()).await?;

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "adapter load (validate + write + load into the engine): {:.0} ms and {:.0} ms",
        ms(load_times[0]),
        ms(load_times[1])
    );
    println!(
        "swap latency, activation to first token of the new generation ({} swaps): p50 {:.1} ms, p99 {:.1} ms",
        swaps.len(),
        ms(percentile(&swaps, 0.5)),
        ms(percentile(&swaps, 0.99))
    );
    println!(
        "baseline: first token on the base with no swap, p50 {:.1} ms (swap p50 / this: x{:.2})",
        ms(base_ttft),
        percentile(&swaps, 0.5).as_secs_f64() / base_ttft.as_secs_f64()
    );
    println!(
        "decode tok/s ({} tokens, median of 3): base {:.2}, adapter {:.2} (adapter/base x{:.2})",
        args.tokens,
        base_rate,
        adapter_rate,
        adapter_rate / base_rate
    );
    println!(
        "two streams at once, decode tok/s summed: base + base {same_group:.2}, base + adapter {mixed_groups:.2} (mixed/same x{:.2})",
        mixed_groups / same_group
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
