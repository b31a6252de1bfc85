//! `switchyard bench`: time to first token, decode speed, throughput and a long-prompt request
//! of OpenAI-compatible servers, measured in one run against a named baseline, printed as
//! ratios (each target against the baseline).
//!
//! Every server gets the same streamed, greedy requests. Decode tokens/s of one request is
//! (completion tokens − 1) / (time of last token − time of first token): the first token is
//! TTFT's, so prompt processing is counted once, in TTFT. Each request's system message starts
//! with a different number, so no server can skip prompt processing by reusing the previous
//! request's cache.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};

/// A server under test: a display name and its base URL (e.g. `http://127.0.0.1:8080`).
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub model: String,
}

impl std::str::FromStr for Target {
    type Err = String;
    /// `NAME=URL` or `NAME=URL#MODEL`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s.split_once('=').ok_or("expected NAME=URL[#MODEL]")?;
        let (url, model) = rest.split_once('#').unwrap_or((rest, ""));
        Ok(Self {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            model: model.to_string(),
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The servers measured, NAME=URL[#MODEL] (repeat the flag for several).
    #[arg(
        long = "target",
        env = "SWITCHYARD_BENCH_TARGET",
        value_delimiter = ' ',
        required = true
    )]
    pub targets: Vec<Target>,
    /// The baseline measured in the same run, NAME=URL[#MODEL].
    #[arg(long, env = "SWITCHYARD_BENCH_BASELINE")]
    pub baseline: Target,
    /// Requests per server for the latency table.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Concurrent clients for the throughput table (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Tokens per request in the throughput table.
    #[arg(long, default_value_t = 48)]
    pub throughput_max_tokens: usize,
    /// Words in the long prompt (about 1.3 tokens each), answered with 64 tokens: the size of
    /// a `rag` request, whose time is mostly prompt processing. 0 skips it.
    #[arg(long, default_value_t = 460)]
    pub long_prompt_words: usize,
    /// The fixed prompt.
    #[arg(
        long,
        default_value = "Explain in detail how a compiler turns source code into machine code, step by step."
    )]
    pub prompt: String,
}

/// Timings of one streamed request.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ttft: Duration,
    total: Duration,
    tokens: usize,
    prompt_tokens: usize,
}

impl Sample {
    fn decode_tps(&self) -> Option<f64> {
        let decode = self.total.saturating_sub(self.ttft).as_secs_f64();
        (self.tokens > 1 && decode > 0.0).then(|| (self.tokens - 1) as f64 / decode)
    }
}

async fn model_of(client: &reqwest::Client, target: &Target) -> anyhow::Result<String> {
    if !target.model.is_empty() {
        return Ok(target.model.clone());
    }
    let models: Value = client
        .get(format!("{}/v1/models", target.url))
        .send()
        .await
        .with_context(|| format!("{} is not reachable at {}", target.name, target.url))?
        .json()
        .await?;
    models["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .context("no model listed by /v1/models")
}

static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);

async fn one_request(
    client: &reqwest::Client,
    target: &Target,
    model: &str,
    prompt: &str,
    max_tokens: usize,
) -> anyhow::Result<Sample> {
    // A system message that differs from the first token on: servers that reuse the previous
    // request's KV cache for a shared prefix (llama.cpp does) must process the prompt anew.
    let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": format!("{nonce} You are a helpful assistant.")},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let response = client
        .post(format!("{}/v1/chat/completions", target.url))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "{} answered {}: {}",
            target.name,
            response.status(),
            response.text().await?
        );
    }
    let mut stream = response.bytes_stream();
    let (mut buffer, mut first, mut last, mut chunks, mut usage, mut prompt_tokens) =
        (String::new(), None, start, 0, None, 0);
    while let Some(bytes) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&bytes?));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                continue;
            }
            let chunk: Value = serde_json::from_str(data)?;
            if let Some(tokens) = chunk["usage"]["completion_tokens"].as_u64() {
                usage = Some(tokens as usize);
                prompt_tokens = chunk["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize;
            }
            let has_text = chunk["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty());
            if has_text {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                chunks += 1;
            }
        }
    }
    let first = first.context("no content streamed")?;
    Ok(Sample {
        ttft: first - start,
        total: last - start,
        tokens: usage.unwrap_or(chunks),
        prompt_tokens,
    })
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank]
}

fn median(mut values: Vec<f64>) -> f64 {
    percentile(&mut values, 50.0)
}

/// Median TTFT (ms) and decode tokens/s over `runs` sequential requests.
async fn latency(
    client: &reqwest::Client,
    target: &Target,
    args: &BenchArgs,
) -> anyhow::Result<(f64, f64, usize)> {
    let model = model_of(client, target).await?;
    // Warm-up: first-request costs (lazy allocation, page faults) are not what we compare.
    one_request(client, target, &model, &args.prompt, 8).await?;
    let mut ttft = Vec::new();
    let mut tps = Vec::new();
    let mut tokens = 0;
    for _ in 0..args.runs {
        let sample = one_request(client, target, &model, &args.prompt, args.max_tokens).await?;
        ttft.push(sample.ttft.as_secs_f64() * 1000.0);
        tps.extend(sample.decode_tps());
        tokens = sample.tokens;
    }
    if tps.is_empty() {
        bail!("{} produced too few tokens to time decoding", target.name);
    }
    Ok((median(ttft), median(tps), tokens))
}

/// Requests/s and completion tokens/s with `concurrency` clients sending `concurrency * 2`
/// requests (at least 4) in all.
async fn throughput(
    client: &reqwest::Client,
    target: &Target,
    args: &BenchArgs,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    let model = model_of(client, target).await?;
    let total = (concurrency * 2).max(4);
    let start = Instant::now();
    let results: Vec<anyhow::Result<Sample>> = futures::stream::iter(0..total)
        .map(|_| {
            one_request(
                client,
                target,
                &model,
                &args.prompt,
                args.throughput_max_tokens,
            )
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    let mut tokens = 0;
    for result in results {
        tokens += result?.tokens;
    }
    Ok((total as f64 / elapsed, tokens as f64 / elapsed))
}

/// A prompt of `words` words of documentation-like text that asks a question about it.
fn long_prompt(words: usize) -> String {
    const TEXT: &str = "git rebase reapplies commits on top of another base tip. If the upstream \
        branch is not given, the configured upstream is used. Conflicts stop the rebase until \
        they are resolved and the user runs git rebase --continue, or --abort to return to the \
        original branch. Interactive mode lets the user reorder, squash, edit or drop commits.";
    let source: Vec<&str> = TEXT.split_whitespace().collect();
    let body: Vec<&str> = source.iter().copied().cycle().take(words).collect();
    format!(
        "Answer from this documentation.\n\n{}\n\nQuestion: how do I stop a rebase?",
        body.join(" ")
    )
}

/// Median end-to-end seconds and prompt tokens of a long-prompt request with 64 new tokens.
async fn long_request(
    client: &reqwest::Client,
    target: &Target,
    args: &BenchArgs,
) -> anyhow::Result<(f64, usize)> {
    let model = model_of(client, target).await?;
    let prompt = long_prompt(args.long_prompt_words);
    let mut times = Vec::new();
    let mut prompt_tokens = 0;
    for _ in 0..args.runs.min(3) {
        let sample = one_request(client, target, &model, &prompt, 64).await?;
        times.push(sample.total.as_secs_f64());
        prompt_tokens = sample.prompt_tokens;
    }
    Ok((median(times), prompt_tokens))
}

/// Calls `line` with each target's name and its measurement (`values` holds the targets'
/// measurements in order, then the baseline's, which is left out).
fn for_each_target<T: Copy>(args: &BenchArgs, values: &[T], mut line: impl FnMut(&str, T)) {
    for (target, value) in args.targets.iter().zip(values) {
        line(&target.name, *value);
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1800))
        .build()?;
    let baseline = &args.baseline;
    let servers: Vec<&Target> = args.targets.iter().chain([baseline]).collect();
    println!(
        "bench: prompt {:?}, {} runs x {} tokens, greedy, streamed; baseline {}",
        args.prompt, args.runs, args.max_tokens, baseline.name
    );
    let mut latencies = Vec::new();
    for target in &servers {
        latencies.push(latency(&client, target, &args).await?);
    }
    println!();
    println!(
        "{:<18} {:>12} {:>16} {:>10}",
        "server", "TTFT p50 ms", "decode tok/s p50", "tokens"
    );
    for (target, (ttft, tps, tokens)) in servers.iter().zip(&latencies) {
        println!(
            "{:<18} {:>12.1} {:>16.2} {:>10}",
            target.name, ttft, tps, tokens
        );
    }
    let (b_ttft, b_tps, _) = *latencies.last().expect("the baseline");
    for_each_target(&args, &latencies, |name, (ttft, tps, _)| {
        println!(
            "ratio {name}/{}: decode tok/s x{:.2} (higher is better), TTFT x{:.2} (lower is better)",
            baseline.name,
            tps / b_tps,
            ttft / b_ttft
        );
    });
    println!();
    println!(
        "{:<18} {:>6} {:>10} {:>12}   ({} tokens per request)",
        "server", "conc", "req/s", "tok/s", args.throughput_max_tokens
    );
    for &concurrency in &args.concurrency {
        let mut rates = Vec::new();
        for target in &servers {
            let (rps, tok) = throughput(&client, target, &args, concurrency).await?;
            println!(
                "{:<18} {:>6} {:>10.3} {:>12.2}",
                target.name, concurrency, rps, tok
            );
            rates.push(tok);
        }
        let base = *rates.last().expect("the baseline");
        for_each_target(&args, &rates, |name, tok| {
            println!(
                "ratio at {concurrency}: {name}/{} tok/s x{:.2}",
                baseline.name,
                tok / base
            );
        });
    }
    if args.long_prompt_words > 0 {
        println!();
        println!(
            "{:<18} {:>14} {:>16}   (long prompt + 64 tokens, end to end)",
            "server", "prompt tokens", "seconds p50"
        );
        let mut times = Vec::new();
        for target in &servers {
            let (seconds, prompt_tokens) = long_request(&client, target, &args).await?;
            println!(
                "{:<18} {:>14} {:>16.2}",
                target.name, prompt_tokens, seconds
            );
            times.push(seconds);
        }
        let base = *times.last().expect("the baseline");
        for_each_target(&args, &times, |name, seconds| {
            println!(
                "ratio {name}/{}: long request time x{:.2} (lower is better)",
                baseline.name,
                seconds / base
            );
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parses_name_url_model() {
        let t: Target = "llama.cpp=http://127.0.0.1:1/#m".parse().unwrap();
        assert_eq!(
            (t.name.as_str(), t.url.as_str(), t.model.as_str()),
            ("llama.cpp", "http://127.0.0.1:1", "m")
        );
        assert!("no-equals".parse::<Target>().is_err());
    }

    #[test]
    fn decode_rate_excludes_first_token() {
        let s = Sample {
            ttft: Duration::from_millis(500),
            total: Duration::from_millis(1500),
            tokens: 11,
            prompt_tokens: 5,
        };
        assert!((s.decode_tps().unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), 2.0);
    }
}
