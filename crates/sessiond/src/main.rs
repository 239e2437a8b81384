//! `sessiond`: the server (`serve`, `migrate`) and the CLI client in one binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod serve;

/// mimalloc rather than the system allocator: request handling allocates many small,
/// short-lived buffers across threads, where glibc's malloc spends a measurable share of
/// the CPU (and fragments more under long-lived SSE connections).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sessiond",
    version,
    about = "A durable session server for AI agents and LLM pipelines"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the server.
    Serve(Box<sessiond_server::config::ServeArgs>),
    /// Apply pending database migrations and print the schema version (`serve` also does this
    /// on start; safe to run from several nodes at once).
    Migrate {
        /// PostgreSQL URL; without it, the embedded SQLite database in --data-dir.
        #[arg(long, env = "SESSIOND_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Directory of the embedded database.
        #[arg(long, env = "SESSIOND_DATA_DIR", default_value = "./sessiond-data")]
        data_dir: std::path::PathBuf,
    },
    /// Create, inspect, change and delete sessions on a running server.
    Sessions {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::SessionsCmd,
    },
    /// Create accounts (admin key, or open mode).
    Accounts {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::AccountsCmd,
    },
    /// Create and revoke API keys (admin key, or open mode).
    Keys {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::KeysCmd,
    },
    /// Follow a channel live, resuming by itself after a dropped connection or server restart.
    ///
    /// Prints `seq  createdAt  data` per record (with --json, each record as one JSON line);
    /// exits 0 once the session is closed and every record has been printed.
    Tail {
        #[command(flatten)]
        args: cli::TailArgs,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Append records to a channel: one JSON argument, or JSON lines from stdin.
    Append {
        #[command(flatten)]
        args: cli::AppendArgs,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// List a session's channels.
    Channels {
        #[command(flatten)]
        args: cli::ChannelsArgs,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Mint session-scoped tokens.
    Tokens {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::TokensCmd,
    },
    /// Create, inspect and cancel a session's jobs.
    Jobs {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::JobsCmd,
    },
    /// Upload, list, show, delete and search a session's documents.
    Docs {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::DocsCmd,
    },
    /// Run jobs: claim them and run a shell command for each (stops cleanly on SIGTERM/SIGINT).
    Worker {
        #[command(flatten)]
        args: cli::WorkerArgs,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Commands::Serve(args) => serve::run(*args).await,
            Commands::Migrate {
                database_url,
                data_dir,
            } => serve::migrate(database_url.as_deref(), &data_dir).await,
            Commands::Sessions { client, cmd } => cli::run_sessions(&client, cmd).await,
            Commands::Accounts { client, cmd } => cli::run_accounts(&client, cmd).await,
            Commands::Keys { client, cmd } => cli::run_keys(&client, cmd).await,
            Commands::Tail { client, args } => cli::run_tail(&client, args).await,
            Commands::Append { client, args } => cli::run_append(&client, args).await,
            Commands::Channels { client, args } => cli::run_channels(&client, args).await,
            Commands::Tokens { client, cmd } => cli::run_tokens(&client, cmd).await,
            Commands::Jobs { client, cmd } => cli::run_jobs(&client, cmd).await,
            Commands::Docs { client, cmd } => cli::run_docs(&client, cmd).await,
            Commands::Worker { client, args } => cli::run_worker(&client, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
