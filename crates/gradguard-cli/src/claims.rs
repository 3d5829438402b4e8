//! `gradguard claims`: runs the claims book and writes claims.md and claims.json.

use std::path::PathBuf;

use gradguard_pipeline::claims::{parse_ids, run_claims, ClaimsError, ClaimsOptions};

use crate::UserError;

/// Arguments of `gradguard claims`.
#[derive(Debug, clap::Args)]
pub struct ClaimsArgs {
    /// Seeds per experiment (seeds 1..=N).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=crate::train::MAX_SEEDS))]
    pub seeds: u64,
    /// Where the runs, claims.md and claims.json go.
    #[arg(long, default_value = "runs/claims")]
    pub out: PathBuf,
    /// Only these claims, comma-separated (e.g. `C1,C3`).
    #[arg(long, value_name = "IDS")]
    pub only: Option<String>,
    /// Cut every training run to this many steps (a quick check; the numbers are then not
    /// the book's).
    #[arg(long, hide = true)]
    pub steps: Option<u64>,
}

/// Runs `gradguard claims`.
pub fn run(args: &ClaimsArgs) -> anyhow::Result<()> {
    if args.seeds == 0 {
        return Err(UserError("--seeds must be at least 1".into()).into());
    }
    let only = match &args.only {
        Some(list) => {
            let ids = parse_ids(list).map_err(|e| UserError(e.to_string()))?;
            if ids.is_empty() {
                return Err(UserError(format!(
                    "--only names no claim: the claims are {}",
                    gradguard_pipeline::claims::CLAIM_IDS.join(", ")
                ))
                .into());
            }
            ids
        }
        None => Vec::new(),
    };
    let opts = ClaimsOptions {
        seeds: args.seeds,
        only,
        out_dir: args.out.clone(),
        steps: args.steps,
        interrupt: Some(crate::interrupt().clone()),
    };
    say!(
        "gradguard claims: {} seed(s) per experiment, runs under {}",
        opts.seeds,
        opts.out_dir.join("runs").display()
    );
    let book = run_claims(&opts, &mut |c| {
        say!(
            "{:>3}  {:<13}  {:>5.1} s  {}",
            c.id,
            c.verdict.as_str(),
            c.seconds,
            c.why
        );
    })
    .map_err(|e| match e {
        ClaimsError::UnknownClaim(_) => anyhow::Error::new(UserError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    let (md, json) = book.write(&args.out)?;
    say!(
        "the claims book ({:.0} s): {} (and {})",
        book.seconds,
        md.display(),
        json.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(only: &str) -> ClaimsArgs {
        ClaimsArgs {
            seeds: 1,
            out: std::env::temp_dir().join("gradguard-claims-cli-never-written"),
            only: Some(only.into()),
            steps: Some(1),
        }
    }

    #[test]
    fn claims_bad_only_is_a_user_error_listing_the_ids() {
        for bad in ["C11", " , "] {
            let e = run(&args(bad)).unwrap_err();
            let user = e.downcast_ref::<UserError>().expect("a UserError (exit 1)");
            assert!(user.0.contains("C1, C2, C3"), "{}", user.0);
        }
    }
}
