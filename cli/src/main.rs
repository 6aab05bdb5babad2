//! `meshnode`: the command-line front end. It parses arguments, calls the daemon's control
//! API and prints: human tables by default, JSON with `--json`.

mod client;
mod commands;
mod csvout;
mod demo;
mod exit;
mod jsonout;
mod mesh;
mod output;
mod progress;
mod share;
mod sql;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "meshnode",
    version,
    about = "A peer-to-peer data-mesh node: publish data products, share them under signed contracts, fetch them over QUIC",
    after_help = exit::HELP_TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--data-dir` shared by every command that talks to a daemon.
#[derive(Debug, clap::Args)]
struct DirArg {
    /// Data directory of the node (default: ~/.meshnode).
    #[arg(long, global = true, env = "MESHNODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node: config, identity key.
    Init(commands::InitArgs),
    /// Run the daemon in the foreground until Ctrl-C or SIGTERM.
    Run {
        /// Data directory of the node (default: ~/.meshnode).
        #[arg(long, env = "MESHNODE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Start even though the database is behind its audit anchor, replaced or emptied
        /// (after a restore from an old backup, or a damaged disk): what it lost stays lost,
        /// the loss is recorded in the audit log, and version numbers are not reused.
        #[arg(long)]
        accept_rollback: bool,
    },
    /// Publish a data product (a new version if the name exists).
    Publish(commands::PublishArgs),
    /// Browse the mesh catalog.
    Catalog(commands::CatalogArgs),
    /// Run the seed's e-commerce mesh on loopback and tell its story.
    Demo(demo::DemoArgs),
    /// Fetch a product you have an agreement for: into an Arrow IPC file, an Arrow IPC
    /// stream or Parquet, or to standard output.
    ///
    /// The received data is verified against the provider's signed digest before anything
    /// is written; a file appears at --out only complete and verified. With `--out -` the
    /// verified Arrow IPC stream goes to standard output and is checked again as it is
    /// written, which can only conclude at its end: a program reading the stream must treat
    /// a non-zero exit status of `meshnode` as "discard what was read" (6: the bytes did not
    /// match, 5: the stream broke off). Progress (bytes, rows, rate) is drawn on standard
    /// error when it is a terminal, never otherwise.
    #[command(
        after_help = "Example: meshnode fetch sales/orders --out - | python -c 'import sys, pyarrow.ipc as i; print(i.open_stream(sys.stdin.buffer).read_all().num_rows)'"
    )]
    Fetch(commands::FetchArgs),
    /// Run SQL over the products you hold agreements for: each is a table named by its
    /// product, in double quotes (`"sales/orders"`). Only the columns and rows the query
    /// needs are fetched (never more than the agreement grants); received data is cached
    /// under the data directory while its version is the latest.
    #[command(
        after_help = "Examples:\n  meshnode sql --tables\n  meshnode sql 'SELECT region, sum(amount) FROM \"sales/orders\" GROUP BY region'\n  meshnode sql --out result.parquet 'SELECT * FROM \"sales/orders\" WHERE amount > 100'"
    )]
    Sql(sql::SqlArgs),
    /// Show this node's status.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sharing contracts: request, list, accept, reject, revoke.
    Share(share::ShareArgs),
    /// Mesh membership: create from a charter, invite, join, members, remove.
    Mesh(mesh::MeshArgs),
    /// The mesh's global policies: show, propose an amendment, sign, status of motions.
    Governance(mesh::GovernanceArgs),
    /// Show the newest entries of the hash-chained audit log; `--verify` checks the whole chain.
    Audit(share::AuditArgs),
    /// List connected peers.
    Peers {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script, e.g. `meshnode completions bash > /etc/bash_completion.d/meshnode`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `meshnode man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_or_help(&e),
    };
    // Generated from the argument definitions: no daemon, runtime or logging needed.
    match cli.command {
        Command::Completions { shell } => return completions(shell),
        Command::Man => return man_page(),
        _ => {}
    }
    let default_filter = match cli.command {
        // libp2p-kad warns "Failed to trigger bootstrap: No known peers" whenever a node
        // starts listening before it has a DHT server in its routing table: every start.
        Command::Run { .. } => "info,libp2p_gossipsub=warn,libp2p_kad=error",
        _ => "warn",
    };
    mesh_node::logging::init("MESHNODE_LOG", default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(mesh_node::server::WORKER_STACK)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors carry the daemon's messages, and those quote what peers sent.
            eprintln!("error: {}", output::clean_lines(&format!("{e:#}")));
            ExitCode::from(exit::Failure::of(&e).code())
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => commands::init(args).await,
        Command::Run {
            data_dir,
            accept_rollback,
        } => commands::run(client::data_dir(data_dir)?, accept_rollback)
            .await
            .map_err(run_failure),
        Command::Publish(args) => commands::publish(args).await,
        Command::Catalog(args) => commands::catalog(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Fetch(args) => commands::fetch(args).await,
        Command::Sql(args) => sql::sql(args).await,
        Command::Status { dir, json } => {
            commands::status(client::data_dir(dir.data_dir)?, json).await
        }
        Command::Share(args) => share::share(args).await,
        Command::Mesh(args) => mesh::mesh(args).await,
        Command::Governance(args) => mesh::governance(args).await,
        Command::Audit(args) => share::audit(args).await,
        Command::Peers { dir, json } => {
            commands::peers(client::data_dir(dir.data_dir)?, json).await
        }
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
        Command::Man => {
            man_page();
            Ok(())
        }
    }
}

/// The kind of a failure of `meshnode run`: a data directory that was never initialised is
/// not found, as for every other command (its message says to run `meshnode init`); one of
/// another user or writable by others is a usage error (its message says what to change).
fn run_failure(error: anyhow::Error) -> anyhow::Error {
    match error.downcast_ref::<mesh_node::server::ServeError>() {
        Some(not_initialised @ mesh_node::server::ServeError::NotInitialised(_)) => {
            exit::fail(exit::Failure::NotFound, not_initialised.to_string())
        }
        Some(mesh_node::server::ServeError::DataDir(unfit)) if unfit.is_unfit() => {
            exit::fail(exit::Failure::Usage, unfit.to_string())
        }
        _ => error,
    }
}

/// `meshnode completions SHELL`: the script on standard output.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "meshnode", &mut script);
    write_raw(&script)
}

/// `meshnode man`: the roff manual page on standard output.
fn man_page() -> ExitCode {
    use clap::CommandFactory;
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        eprintln!("error: cannot render the manual page: {e}");
        return ExitCode::from(exit::Failure::Other.code());
    }
    write_raw(&page)
}

/// What clap stopped at: `--help` and `--version` go to standard output through
/// [`write_raw`], so that a full disk or a closed pipe behaves as for every other command
/// (clap's own printing ignores write errors); usage errors go to standard error with
/// clap's exit code.
fn usage_or_help(error: &clap::Error) -> ExitCode {
    use std::io::IsTerminal;
    if error.use_stderr() {
        // Standard error may be gone: nothing more to do then.
        let _ = error.print();
        return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
    }
    let text = error.render();
    let text = if std::io::stdout().is_terminal() {
        text.ansi().to_string()
    } else {
        text.to_string()
    };
    write_raw(text.as_bytes())
}

/// Bytes to standard output, with the broken-pipe rule of [`output::write_stdout`].
fn write_raw(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        output::stdout_failed(&e);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use mesh_node::server::ServeError;

    use super::*;

    #[test]
    fn run_on_an_uninitialised_data_directory_fails_as_not_found_and_says_to_init() {
        let error = run_failure(ServeError::NotInitialised("/tmp/x".into()).into());
        assert_eq!(exit::Failure::of(&error), exit::Failure::NotFound);
        assert!(
            error
                .to_string()
                .contains("run `meshnode init --data-dir /tmp/x --domain NAME` first"),
            "{error}"
        );
        // Other failures to start keep their kind.
        let error = run_failure(ServeError::Other("bad".into()).into());
        assert_eq!(exit::Failure::of(&error), exit::Failure::Other);
    }

    #[test]
    fn run_on_a_data_directory_others_may_write_fails_as_usage_and_says_what_to_change() {
        use mesh_node::keyfile::DataDirError;
        let error = run_failure(
            ServeError::DataDir(DataDirError::Writable {
                path: "/tmp/x".into(),
                mode: 0o777,
            })
            .into(),
        );
        assert_eq!(exit::Failure::of(&error), exit::Failure::Usage);
        assert!(error.to_string().contains("chmod 700 /tmp/x"), "{error}");
        // Failing to look at it is an I/O failure, with its cause.
        let error = run_failure(
            ServeError::DataDir(DataDirError::Io {
                path: "/tmp/x".into(),
                source: std::io::Error::other("gone"),
            })
            .into(),
        );
        assert_eq!(exit::Failure::of(&error), exit::Failure::Io);
    }
}
