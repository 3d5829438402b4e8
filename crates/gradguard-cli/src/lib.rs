//! # gradguard-cli: the `gradguard` command line
//!
//! What this crate is for: parsing arguments with clap, setting up `tracing`, and calling
//! the pipeline; it maps errors to exit codes: 0 when the command completed (a run whose
//! verdict is `exploding` completed: the diagnosis is the product), 1 for bad input (a spec,
//! CSV, log or dump that cannot be used), 2 for usage errors, 3 when `diagnose` skipped lines and would otherwise call the run healthy.
//!
//! What it may depend on: gradguard-pipeline and, to make sure every plugin registration is
//! linked into the binary, each plugin crate (detectors, remedies, report).

#![warn(missing_docs)]

/// `println!` unless `-q` was given (see [`quiet`]). Data a flag asked for (`--json`) is
/// printed with plain `println!`: `-q` quiets the talk, not the requested output.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::quiet() {
            println!($($arg)*);
        }
    };
}

/// `print!` unless `-q` was given (see [`quiet`]).
macro_rules! say_text {
    ($($arg:tt)*) => {
        if !$crate::quiet() {
            print!($($arg)*);
        }
    };
}

pub mod check;
pub mod claims;
#[cfg(feature = "mpi")]
pub mod cluster;
pub mod diagnose;
pub mod grads;
pub mod plugins;
pub mod tb_log;
pub mod train;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

/// Find, explain and cure exploding gradients while a neural network trains.
///
/// A run is described by a spec file (TOML or JSON): the model, the data, how to train, and
/// the detectors, remedies and reporters to use. Start with `gradguard demo --list`.
#[derive(Debug, Parser)]
#[command(name = "gradguard", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). Logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Quiet: nothing on stdout (no progress, no diagnosis, even from a console reporter the
    /// spec lists; output asked for with `--json` is still printed) and only errors on
    /// stderr. The exit status still tells the result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour on the console: `auto` colours when stdout is a terminal and NO_COLOR is unset
    /// or empty; `always` and `never` decide regardless.
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,
    /// The memory a run may need (e.g. `8GiB`, `500MB`, or bytes); a spec whose estimate is
    /// above it is refused by `check` and before training. Default: half of this machine's
    /// memory.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--color`: when to colour the console's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    /// On a terminal, unless NO_COLOR is set to a non-empty value.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl From<ColorArg> for gradguard_report::color::ColorChoice {
    fn from(c: ColorArg) -> Self {
        match c {
            ColorArg::Auto => Self::Auto,
            ColorArg::Always => Self::Always,
            ColorArg::Never => Self::Never,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec file without training: syntax, unknown keys, plugin kinds, sizes.
    ///
    /// Exit status 0 when valid, 1 when not (the error names the file, line and column or
    /// key path, and what was expected), 2 for usage errors, 3 when `diagnose` skipped lines and would otherwise call the run healthy.
    Check(check::CheckArgs),
    /// List every registered detector, remedy and reporter kind with its parameters.
    Plugins(plugins::PluginsArgs),
    /// Train a spec, watching for exploding gradients; writes summary.json, events.jsonl and
    /// report.html. Exits 0 when the run completed, whatever the verdict.
    Run(train::RunArgs),
    /// Continue an interrupted run from its newest checkpoint (written every 30 s by default,
    /// and when Ctrl-C or SIGTERM stops a run): same spec, same outputs, and the same result
    /// as a run that was never interrupted.
    Resume(train::ResumeArgs),
    /// Run an embedded demo (`--list` to see them); without a name, a short tour.
    Demo(train::DemoArgs),
    /// Run the same spec under each cure (same seed and data order) and compare.
    Compare(train::CompareArgs),
    /// Run a finished run's top prescriptions over several seeds and rank them by what they
    /// did (updates its summary.json).
    Verify(train::VerifyRunArgs),
    /// Judge a model's risk of exploding gradients at initialisation, before training.
    Probe(train::ProbeArgs),
    /// Test the article's claims about exploding gradients with real runs (several seeds
    /// each); writes claims.md and claims.json.
    Claims(claims::ClaimsArgs),
    /// Diagnose a run offline from its events log.
    Diagnose(diagnose::DiagnoseArgs),
    /// Statistics and remedies for gradient dumps in safetensors (any framework).
    #[command(subcommand)]
    Grads(grads::GradsCommand),
}

/// The process's interrupt flag: SIGINT and SIGTERM raise it once [`install_signal_handlers`]
/// ran, and long commands (run, demo, compare, verify, claims) end after the current step.
pub fn interrupt() -> &'static gradguard_pipeline::Interrupt {
    static FLAG: std::sync::OnceLock<gradguard_pipeline::Interrupt> = std::sync::OnceLock::new();
    FLAG.get_or_init(gradguard_pipeline::Interrupt::new)
}

/// On the first SIGINT or SIGTERM, raise [`interrupt`] (the run finishes its step, writes
/// every output and exits 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM); on a second,
/// exit at once with that status (files already written are complete: they are replaced
/// atomically or appended line by line).
pub fn install_signal_handlers() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let armed = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The shutdown must be registered first: it fires only once `armed` is set.
        flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&armed))?;
        flag::register(sig, Arc::clone(&armed))?;
        flag::register_usize(sig, interrupt().flag(), sig as usize)?;
    }
    Ok(())
}

/// A run that a signal ended early: its outputs are written; exit status 128 + signal.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted by signal {}; the outputs so far are written",
            self.0
        )
    }
}

impl std::error::Error for Interrupted {}

/// Parses a size: a number with an optional unit (B, kB/KB, MB, GB, TB: powers of 1000;
/// KiB, MiB, GiB, TiB: powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("expected a size such as 8GiB or 500MB, got `{s}`"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = v * scale;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("expected a size of at least 1 byte, got `{s}`"));
    }
    Ok(bytes as u64)
}

/// An error that is the user's input, not a bug: printed without a backtrace, exit status 1.
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// A result that is printed but not complete (`diagnose` skipped lines and would call the run
/// healthy): the message is printed and the exit status is 3.
#[derive(Debug)]
pub struct Incomplete(pub String);

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Incomplete {}

/// An error and its causes on one line, `outer: cause: ...`, leaving out a cause whose text the
/// line already holds (errors such as `{path}: {source}` print their source themselves, and
/// anyhow's `{:#}` would print it again: "No such file or directory" twice).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Makes sure every built-in plugin crate is linked, so typetag's registrations are present.
/// Returns the number of built-in kinds.
pub fn link_plugins() -> usize {
    gradguard_detectors::builtin_kinds().len()
        + gradguard_remedies::builtin_kinds().len()
        + gradguard_report::builtin_kinds().len()
}

fn init_tracing(verbose: u8, quiet: bool) {
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRADGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

static QUIET: AtomicBool = AtomicBool::new(false);

/// Whether the command line asked for quiet (`-q`): the commands then print nothing on
/// stdout but what `--json` asked for. Set by [`run`].
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Runs a parsed command line; errors are returned for the caller to print.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    QUIET.store(cli.quiet, Ordering::Relaxed);
    gradguard_report::color::set_color_choice(cli.color.into());
    match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Plugins(args) => plugins::run(args),
        Command::Run(args) => train::run(args, cli.quiet),
        Command::Resume(args) => train::resume(args, cli.quiet),
        Command::Demo(args) => train::demo_cmd(args, cli.quiet),
        Command::Compare(args) => train::compare(args),
        Command::Verify(args) => train::verify(args),
        Command::Probe(args) => train::probe(args),
        Command::Claims(args) => claims::run(args),
        Command::Diagnose(args) => {
            // Quiet: the plain-words diagnosis goes nowhere (the exit status still tells an
            // incomplete log); JSON asked for with --json is still printed.
            let mut stdout: Box<dyn std::io::Write> = if cli.quiet && !args.json {
                Box::new(std::io::sink())
            } else {
                Box::new(std::io::stdout().lock())
            };
            let colored = gradguard_report::color::stdout_colored();
            diagnose::run_colored(args, &mut stdout, &mut std::io::stderr().lock(), colored)
        }
        Command::Grads(cmd) => grads::run(cmd),
    }
}

/// Restores the default SIGPIPE behaviour, so `gradguard ... | head` ends quietly instead of
/// failing on a closed pipe (Rust ignores SIGPIPE by default and `println!` then panics).
fn reset_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL at startup, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses the process arguments, runs, prints any error, and returns the exit status.
pub fn main() -> ExitCode {
    reset_sigpipe();
    link_plugins();
    gradguard_models::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version exit 0; usage errors exit 2 (clap's convention).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_tracing(cli.verbose, cli.quiet);
    if let Some(bytes) = cli.max_memory {
        gradguard_models::footprint::set_budget(bytes);
    }
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Resume(_)
            | Command::Demo(_)
            | Command::Compare(_)
            | Command::Verify(_)
            | Command::Claims(_)
    ) {
        if let Err(e) = install_signal_handlers() {
            tracing::warn!("Ctrl-C will stop the run at once: no signal handler ({e})");
        }
    }
    #[cfg(feature = "mpi")]
    let code = cluster::main(&cli);
    #[cfg(not(feature = "mpi"))]
    let code = code_of(run(&cli));
    ExitCode::from(code)
}

/// Where `compare` runs its runs: this process's threads, or (feature `mpi`, rank 0 of an
/// MPI job of several ranks) the job's ranks.
pub fn executor() -> gradguard_pipeline::compare::Executor {
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster::cluster() {
        return gradguard_pipeline::compare::Executor::Mpi(c.clone());
    }
    gradguard_pipeline::compare::Executor::Local
}

/// Prints a command's error, if any, and returns its exit status.
fn code_of(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(Interrupted(sig)) = e.downcast_ref::<Interrupted>() {
                eprintln!("gradguard: {e}");
                return u8::try_from(128 + sig).unwrap_or(130);
            }
            if e.downcast_ref::<Incomplete>().is_some() {
                eprintln!("gradguard: {e}");
                return 3;
            }
            if e.downcast_ref::<UserError>().is_some() {
                eprintln!("error: {e}");
            } else {
                eprintln!("error: {}", error_text(&e));
            }
            1
        }
    }
}

#[cfg(test)]
mod error_text_tests {
    use super::*;

    #[derive(Debug)]
    struct WithPath {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for WithPath {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for WithPath {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_printed_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(WithPath {
            path: "x.csv".into(),
            source: io,
        })
        .context("cannot run");
        let text = error_text(&e);
        let reason = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
        assert_eq!(text, format!("cannot run: x.csv: {reason}"));
        assert_eq!(format!("{e:#}").matches(&reason).count(), 2, "{e:#}");
    }
}
