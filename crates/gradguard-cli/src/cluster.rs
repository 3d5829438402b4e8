//! Under an MPI launcher (feature `mpi`): `mpirun -np N gradguard compare …` spreads the
//! comparison's runs over the ranks (see `gradguard_pipeline::distributed`). Rank 0 runs the
//! command as a single process would, and prints and writes everything; the other ranks run
//! the jobs it sends them and print nothing. Other commands are refused under more than one
//! rank (each rank would repeat the whole command). Started without a launcher, or as a job
//! of one rank, every command behaves as in a build without the feature.

use std::sync::OnceLock;

use gradguard_pipeline::distributed::{self, Cluster};

use crate::{code_of, run, Cli, Command};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The MPI job this process is rank 0 of, when `compare` runs distributed (set by [`main`]).
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get()
}

/// Runs `cli` in its place in the MPI job (or, without a launcher, as usual) and returns the
/// exit status. Rank 0's status is the command's; a rank that served jobs exits 0 unless
/// the protocol failed.
pub(crate) fn main(cli: &Cli) -> u8 {
    let launch = match distributed::init() {
        Ok(Some(launch)) => launch,
        Ok(None) => return code_of(run(cli)),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let c = launch.cluster().clone();
    if c.size() <= 1 {
        let code = code_of(run(cli));
        return launch.finish(code, false);
    }
    let code = match &cli.command {
        Command::Compare(args) if args.jobs.is_some() => {
            if c.is_root() {
                eprintln!(
                    "error: --jobs does not apply under mpirun ({} ranks): each rank runs one run at a time, so start one rank per core (mpirun -np <cores>)",
                    c.size()
                );
            }
            2
        }
        Command::Compare(_) if c.is_root() => {
            tracing::info!("compare: spreading the runs over {} MPI ranks", c.size());
            let _ = CLUSTER.set(c.clone());
            code_of(run(cli))
        }
        Command::Compare(_) => match distributed::serve(&c, Some(crate::interrupt())) {
            Ok(ran) => {
                tracing::debug!("rank {}: ran {ran} job(s)", c.rank());
                0
            }
            Err(e) => {
                // Rank 0 would wait for this rank's results: end the whole job.
                eprintln!("error (rank {}): {e}", c.rank());
                launch.abort(1)
            }
        },
        other => {
            if c.is_root() {
                eprintln!(
                    "error: under mpirun ({} ranks) only `gradguard compare` is distributed; run `gradguard {}` without mpirun (data-parallel training is planned: docs/DISTRIBUTED.md)",
                    c.size(),
                    command_name(other)
                );
            }
            2
        }
    };
    // A signal ended rank 0's command: some rank may no longer answer, and MPI_Finalize
    // would wait for it; Launch::finish aborts the job instead.
    launch.finish(code, c.is_root() && crate::interrupt().signal().is_some())
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Check(_) => "check",
        Command::Plugins(_) => "plugins",
        Command::Run(_) => "run",
        Command::Resume(_) => "resume",
        Command::Demo(_) => "demo",
        Command::Compare(_) => "compare",
        Command::Verify(_) => "verify",
        Command::Probe(_) => "probe",
        Command::Claims(_) => "claims",
        Command::Diagnose(_) => "diagnose",
        Command::Grads(_) => "grads",
    }
}
