//! `switchyard bench-adapters`: adapter load time, swap latency (activation call → first
//! token of a request served by the new generation, p50/p99) and decode speed with an adapter
//! against the base model measured in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use adapters::{
    AdapterRegistry, Backend, ChatMessage, GenerationEvent, GenerationRequest, MistralRsBackend,
    RegistryConfig, Role, SamplingParams,
};

#[derive(Debug, clap::Args)]
pub struct BenchAdaptersArgs {
    /// The safetensors base (`switchyard convert`'s output).
    #[arg(long)]
    pub base_dir: PathBuf,
    /// Two PEFT adapter folders to swap between. Without them, two synthetic rank-8 adapters
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

/// Two deterministic synthetic adapters shaped for the base, in `dir`.
fn synthetic_adapters(
    base: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let shapes = adapters::lora::base_shapes(base)?;
    let mut out = Vec::new();
    for seed in 1..=2u64 {
        let folder = dir.join(format!("synthetic-{seed}"));
        adapters::synthetic::write_synthetic_adapter(&folder, &shapes, seed, false)?;
        out.push(folder);
    }
    Ok(out)
}

pub async fn run(args: BenchAdaptersArgs) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("switchyard-bench-adapters-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let adapter_dirs = if args.adapters.is_empty() {
        synthetic_adapters(&args.base_dir, &scratch)?
    } else {
        args.adapters.clone()
    };
    let root = adapter_dirs[0]
        .parent()
        .context("adapter folders need a parent")?
        .to_path_buf();
    let registry = AdapterRegistry::new(RegistryConfig {
        adapter_root: root,
        base_dir: args.base_dir.clone(),
        work_dir: scratch.join("generations"),
        max_rank: 64,
        max_resident: 2,
    })?;
    let base = MistralRsBackend::load_shared(args.base_dir.clone(), "base").await?;

    let mut load_times = Vec::new();
    let mut generations = Vec::new();
    for dir in &adapter_dirs {
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

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "adapter load (validate + merge + build instance): {:.0} ms and {:.0} ms",
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
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
