//! The `switchyard` binary: `serve` runs the server, `ingest` fills the document index,
//! `eval` scores routing, retrieval and answers, `router train|eval` trains and scores the
//! intent router,
//! `bench` measures generation against a baseline.

mod bench;
mod bench_adapters;
mod cli_eval;
mod cli_format;
mod cli_ingest;
mod cli_query_adapter;
mod cli_router;

use anyhow::Context;
use clap::{Parser, Subcommand};

use switchyard_server::{Config, ConfigArgs, LogFormat, Server};

#[derive(Parser)]
#[command(name = "switchyard", version, about = "RAG + LoRA inference server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the OpenAI-compatible HTTP server.
    Serve(ConfigArgs),
    /// Add or replace documents (folders or files) in the document index.
    Ingest(cli_ingest::IngestArgs),
    /// Score routing, retrieval and end-to-end answers on query files.
    Eval(cli_eval::EvalArgs),
    /// Convert a llama GGUF into a Hugging Face-layout safetensors model (the LoRA base).
    Convert {
        #[arg(long)]
        gguf: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Train or evaluate the intent router.
    #[command(subcommand)]
    Router(cli_router::RouterCommand),
    /// Train the query adapter dense search maps queries through.
    #[command(subcommand)]
    QueryAdapter(cli_query_adapter::QueryAdapterCommand),
    /// The format adapter: build its training set, measure it against the base.
    #[command(subcommand)]
    Format(cli_format::FormatCommand),
    /// Measure TTFT, decode tok/s and throughput against a baseline server.
    Bench(bench::BenchArgs),
    /// Measure adapter load time, swap latency and decode speed with an adapter vs the base.
    BenchAdapters(bench_adapters::BenchAdaptersArgs),
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Keeps glibc's mmap threshold fixed at its default (128 KiB). glibc otherwise raises it
/// each time a large block is freed, so that later large blocks (an adapter's tensors
/// while it is validated and converted, about its file's size each) come from the heap,
/// and the heap keeps them after they are freed: measured with 50 adapters loaded, +128 MB
/// resident with the moving threshold, +70 MB with it fixed (`switchyard bench-adapters`).
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> anyhow::Result<()> {
    fixed_mmap_threshold();
    tokio::runtime::Runtime::new()?.block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::resolve(&args)?;
            switchyard_server::logging::init(
                config.log_format,
                "info,mistralrs_core=warn,qdrant_edge=error,llama-cpp-2=warn",
            );
            let server = Server::bind(config.clone())
                .await
                .with_context(|| format!("cannot start serving on {}", config.listen))?;
            tracing::info!(addr = %server.local_addr(), model = %config.model_path.display(), "switchyard listening");
            server.run(shutdown_signal()).await?;
            tracing::info!("switchyard stopped");
        }
        Command::Ingest(args) => {
            // Warnings only: the progress bar is the output.
            switchyard_server::logging::init(LogFormat::Text, "warn,qdrant_edge=error");
            cli_ingest::run(args).await?
        }
        Command::Eval(args) => {
            switchyard_server::logging::init(LogFormat::Text, "warn,qdrant_edge=error");
            cli_eval::run(args).await?
        }
        Command::QueryAdapter(command) => {
            switchyard_server::logging::init(LogFormat::Text, "warn,qdrant_edge=error");
            cli_query_adapter::run(command).await?
        }
        Command::Format(command) => {
            switchyard_server::logging::init(LogFormat::Text, "warn,qdrant_edge=error");
            cli_format::run(command).await?
        }
        Command::Router(command) => {
            switchyard_server::logging::init(LogFormat::Text, "warn,qdrant_edge=error");
            cli_router::run(command)?
        }
        Command::Convert { gguf, out } => {
            let started = std::time::Instant::now();
            let report = adapters::convert::convert_gguf(&gguf, &out)?;
            println!(
                "wrote {}: {} tensors, {} parameters (f32), vocabulary {}, tied embeddings {}, in {:.1}s",
                out.display(),
                report.tensors,
                report.parameters,
                report.vocab_size,
                report.tied_embeddings,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Bench(args) => bench::run(args).await?,
        Command::BenchAdapters(args) => {
            switchyard_server::logging::init(LogFormat::Text, "warn,qdrant_edge=error");
            bench_adapters::run(args).await?
        }
    }
    Ok(())
}
