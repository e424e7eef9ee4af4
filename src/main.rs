//! The `tidings` binary: parses the command line and runs the subcommand; the only place that uses `anyhow`.

// rustc overflows its default query depth (128) on a constant of the binary's tests; 256 is its own suggestion.
#![recursion_limit = "256"]

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tidings::bench::args::BenchMode;
use tidings::bench::dm::{DmArgs, DmBench};
use tidings::bench::tracking::{TrackingArgs, TrackingBench};
use tidings::bench::{Bench, BenchArgs};
use tidings::cli::{Cli, Command, LogFormat, ServeArgs};
use tidings::config::DEFAULT_CONFIG_TOML;
use tracing_subscriber::EnvFilter;

/// Counts live heap blocks by size for `bench/memory.sh` (`CENSUS=1`); see `tidings::alloc_census`.
#[cfg(feature = "alloc-census")]
#[global_allocator]
static ALLOC: tidings::alloc_census::CensusAlloc = tidings::alloc_census::CensusAlloc;

/// jemalloc: no per-block header and size classes close to the node's blocks, measured at 140 bytes less per
/// idle connection than glibc's malloc (see the README's design notes).
#[cfg(not(feature = "alloc-census"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole chain, no backtrace: these are operator errors, not bugs.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Gentoken(args) => print_stdout(&format!("{}\n", args.mint()?)),
        Command::Genconfig => print_stdout(DEFAULT_CONFIG_TOML),
        Command::Bench(args) => bench(&args),
    }
}

/// Runs `tidings bench dm`, writing its table to the benchmarks file when asked.
fn bench_dm(args: &DmArgs) -> anyhow::Result<()> {
    let bench = DmBench::new(args)?;
    let report = block_on_bench(bench.run())?;
    if let Some(title) = &args.write_benchmarks {
        let body = format!(
            "`tidings bench dm`, {} node(s), {} senders, {} users × {} devices, {} s at {} msg/s.\n\n{report}",
            report.nodes, report.senders, report.recipients, report.devices, args.duration, args.rate
        );
        tidings::bench::dm::report::write_section(&args.benchmarks_file, title, &body)
            .with_context(|| format!("cannot write {}", args.benchmarks_file.display()))?;
    }
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        report.to_string()
    };
    print_stdout(&text)?;
    fail_on_shortfalls(&report.shortfalls())
}

/// Runs a bench on a runtime of its own and returns its report.
fn block_on_bench<T>(
    run: impl std::future::Future<Output = Result<T, tidings::bench::BenchError>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("tidings-bench")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(run)?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(report)
}

/// Runs `tidings bench tracking` (case E).
fn bench_tracking(args: &TrackingArgs) -> anyhow::Result<()> {
    let bench = TrackingBench::new(args)?;
    let report = block_on_bench(bench.run())?;
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        report.to_string()
    };
    print_stdout(&text)?;
    fail_on_shortfalls(&report.shortfalls())
}

/// An error (non-zero exit) naming every shortfall of a bench run, after its report was printed.
fn fail_on_shortfalls(shortfalls: &[String]) -> anyhow::Result<()> {
    if shortfalls.is_empty() {
        return Ok(());
    }
    anyhow::bail!("the run fell short: {}", shortfalls.join("; "))
}

/// Runs `tidings bench` (or one of its worker processes, which re-run this command line with worker flags).
fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.mode {
        Some(BenchMode::Dm(dm)) => return bench_dm(dm),
        Some(BenchMode::Tracking(tracking)) => return bench_tracking(tracking),
        None => {}
    }
    let program = std::env::current_exe().context("cannot find the tidings binary")?;
    let argv = std::env::args_os().skip(1).collect();
    let bench = Bench::new(args)?.with_worker_command(program, argv);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bench.threads())
        .thread_name("tidings-bench")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    if bench.is_worker() {
        runtime.block_on(bench.run_worker())?;
    } else {
        let report = runtime.block_on(bench.run())?;
        let text = if bench.plan().json {
            format!("{}\n", report.to_json())
        } else {
            report.to_string()
        };
        print_stdout(&text)?;
        runtime.shutdown_timeout(Duration::from_millis(100));
        return fail_on_shortfalls(&report.shortfalls(args.min_delivered));
    }
    // Client tasks are aborted already; this only bounds stray blocking work (the worker's stdin reader).
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Loads the configuration and runs the server on a multi-thread runtime sized from it.
fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format)?;
    let config = args.load_config()?;
    let workers = config.worker_threads();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("tidings-worker")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    tracing::info!(listen = %config.listen, workers, "starting tidings");
    let banner = match args.log_format {
        LogFormat::Text => tidings::server::Banner::Text,
        LogFormat::Json => tidings::server::Banner::Log,
    };
    #[cfg(feature = "alloc-census")]
    tidings::alloc_census::init();
    let result = runtime.block_on(async {
        #[cfg(feature = "alloc-census")]
        tidings::alloc_census::spawn_dumper();
        tidings::server::run(config, banner).await
    });
    // The server drains its connections itself; this only bounds stray blocking tasks.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Writes `text` to stdout; a closed pipe (`tidings genconfig | head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Logs to stderr in `format`, filtered by `TIDINGS_LOG` (EnvFilter syntax, default `info`).
fn init_tracing(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("TIDINGS_LOG") {
        Ok(spec) if !spec.is_empty() => {
            EnvFilter::try_new(&spec).with_context(|| format!("invalid TIDINGS_LOG {spec:?}"))?
        }
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
