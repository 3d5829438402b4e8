//! `gradguard grads`: framework-agnostic statistics and cures for gradient dumps.
//!
//! A PyTorch or JAX user dumps gradients (and optionally weights) to safetensors, e.g.
//! `safetensors.torch.save_file({n: p.grad for n, p in model.named_parameters()}, "G.safetensors")`,
//! then:
//! - `gradguard grads stats --grads G.safetensors [--params P.safetensors] [--json]`: global L2
//!   and inf norms; per tensor L2 norm, max |g|, non-finite count (and weight norm with params).
//! - `gradguard grads apply --remedy SPEC --grads G.safetensors [--params P.safetensors] --out
//!   OUT.safetensors`: applies one gradient-level remedy. SPEC is inline JSON such as
//!   `'{"kind":"clip_global_norm","max_norm":1.0}'` or the path of a JSON or TOML file. The
//!   output keeps every name, shape and dtype (F32 native; F16, BF16, F64 converted to f32 and
//!   back) and the file's metadata.
//!
//! The work is done by `gradguard_dump`; this module is the command-line wrapper.
//! Every bad input (missing or truncated file, bad header, unsupported dtype, grads and params
//! that disagree, a bad spec, a remedy that withholds the update) is an error naming the file,
//! and the binary exits with status 1.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gradguard_dump::{self as dump, GradDump};

/// The `grads` subcommands.
#[derive(Debug, Subcommand)]
pub enum GradsCommand {
    /// Global and per-tensor norms of a safetensors gradient dump.
    Stats(StatsArgs),
    /// Apply one gradient-level remedy to a dump and write the cured gradients.
    Apply(ApplyArgs),
}

/// Arguments of `gradguard grads stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The gradients (safetensors; F32, F16, BF16 or F64).
    #[arg(long, value_name = "G.safetensors")]
    pub grads: PathBuf,
    /// The weights, same names, shapes and dtypes (adds weight norms).
    #[arg(long, value_name = "P.safetensors")]
    pub params: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `gradguard grads apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The remedy: inline JSON (`'{"kind":"clip_global_norm","max_norm":1.0}'`) or a JSON/TOML file.
    #[arg(long, value_name = "SPEC")]
    pub remedy: String,
    /// The gradients (safetensors; F32, F16, BF16 or F64).
    #[arg(long, value_name = "G.safetensors")]
    pub grads: PathBuf,
    /// The weights (needed by agc, l1, l2, l1_l2).
    #[arg(long, value_name = "P.safetensors")]
    pub params: Option<PathBuf>,
    /// Where to write the cured gradients (atomically: a temporary file renamed over it).
    #[arg(long, value_name = "OUT.safetensors")]
    pub out: PathBuf,
    /// Allow `--out` to be the `--grads` file itself (still written atomically).
    #[arg(long)]
    pub in_place: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Whether two paths name the same existing file: the same canonical path (symlinks
/// resolved), or, on Unix, the same device and inode (hard links).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    if let (Ok(x), Ok(y)) = (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        if x == y {
            return true;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

/// Runs a `grads` subcommand, printing to stdout.
pub fn run(cmd: &GradsCommand) -> Result<()> {
    let stdout = std::io::stdout();
    run_to(cmd, &mut stdout.lock())
}

fn load_pair(grads: &PathBuf, params: &Option<PathBuf>) -> Result<(GradDump, Option<GradDump>)> {
    let g = GradDump::load(grads)?;
    let p = match params {
        Some(p) => Some(GradDump::load(p)?),
        None => None,
    };
    Ok((g, p))
}

/// Runs a `grads` subcommand, printing to `out`.
pub fn run_to(cmd: &GradsCommand, out: &mut dyn Write) -> Result<()> {
    // Keeps the remedy registrations linked in (typetag registers at link time).
    let _ = gradguard_remedies::builtin_kinds();
    match cmd {
        GradsCommand::Stats(a) => {
            let (mut g, p) = load_pair(&a.grads, &a.params)?;
            let report = dump::report(&mut g, p.as_ref())?;
            if a.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                write!(out, "{}", report.to_text())?;
            }
        }
        GradsCommand::Apply(a) => {
            if !a.in_place && same_file(&a.grads, &a.out) {
                anyhow::bail!(
                    "--out {} is the --grads file: pass --in-place to rewrite it (atomically), or write elsewhere",
                    a.out.display()
                );
            }
            let (kind, mut remedy) = dump::parse_remedy(&a.remedy)?;
            let (mut g, p) = load_pair(&a.grads, &a.params)?;
            let report = dump::apply(&kind, remedy.as_mut(), &mut g, p.as_ref())?;
            g.write(&a.out)
                .with_context(|| format!("remedy `{kind}` ran, but the output was not written"))?;
            if a.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                write!(
                    out,
                    "{kind}: global L2 norm {:.6e} -> {:.6e} ({}); wrote {} ({} tensors)",
                    report.norm_before,
                    report.norm_after,
                    if report.changed {
                        "changed"
                    } else {
                        "unchanged"
                    },
                    a.out.display(),
                    g.tensors().len()
                )?;
                if report.penalty != 0.0 {
                    write!(out, "; penalty {:.6e}", report.penalty)?;
                }
                if let gradguard_core::Action::ScaleLr { factor, reason } = &report.action {
                    write!(
                        out,
                        "; asks to scale the learning rate by {factor} ({reason})"
                    )?;
                }
                writeln!(out)?;
            }
        }
    }
    Ok(())
}
