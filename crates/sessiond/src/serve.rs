//! `sessiond serve`: resolve the configuration, open the store, serve until SIGINT/SIGTERM.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use sessiond_server::app::DRAIN_TIMEOUT;
use sessiond_server::config::{mask_password, LogFormat, ServeArgs};
use sessiond_server::{App, AppOptions};
use sessiond_store::{Hub, Store};
use sessiond_store_postgres::{PgOptions, PgStore};
use sessiond_store_sqlite::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSIOND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The admin key: the configured one, else the one in the data dir, else a new one written
/// there with mode 0600.
fn admin_key(args: &ServeArgs) -> anyhow::Result<(String, String)> {
    if let Some(k) = &args.admin_key {
        return Ok((k.clone(), "from SESSIOND_ADMIN_KEY / --admin-key".into()));
    }
    let path = args.data_dir.join("admin.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => {
            return Ok((k.trim().to_owned(), format!("in {}", path.display())))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let key = format!(
        "adm_{}",
        sessiond_server::service::accounts::generate_secret().trim_start_matches("sk_")
    );
    write_private(&path, &key)?;
    Ok((key, format!("generated into {}", path.display())))
}

/// The token signing secret: configured, else from the data dir, else generated there (0600).
fn token_secret(args: &ServeArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &args.token_secret {
        if s.len() < 32 {
            bail!("SESSIOND_TOKEN_SECRET / --token-secret must be at least 32 characters");
        }
        return Ok(s.as_bytes().to_vec());
    }
    let path = args.data_dir.join("token.secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => bail!(
            "{} is shorter than 32 characters; delete it to generate a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let secret = sessiond_server::service::accounts::generate_secret();
    write_private(&path, &secret)?;
    Ok(secret.into_bytes())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Opens the configured store: PostgreSQL when `--database-url` is set (the store feeds the
/// returned hub from other nodes' NOTIFYs), else the embedded SQLite database in the data dir.
pub async fn open_store(args: &ServeArgs) -> anyhow::Result<(Arc<dyn Store>, Arc<Hub>)> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data dir {}", args.data_dir.display()))?;
    let hub = Hub::new();
    if let Some(url) = &args.database_url {
        let defaults = PgOptions::default();
        let opts = PgOptions {
            max_connections: args.database_pool.unwrap_or(defaults.max_connections),
            ..defaults
        };
        let store = PgStore::connect(url, opts, hub.clone())
            .await
            .with_context(|| format!("cannot open the database {}", mask_password(url)))?;
        return Ok((Arc::new(store), hub));
    }
    let path = args.data_dir.join("sessiond.db");
    let store = SqliteStore::open(
        &path,
        SqliteOptions {
            readers: args.sqlite_readers,
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot open the database {}", path.display()))?;
    Ok((Arc::new(store), hub))
}

/// `sessiond migrate`: applies pending migrations and prints the schema version.
pub async fn migrate(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<()> {
    match database_url {
        Some(url) => {
            PgStore::migrate(url)
                .await
                .with_context(|| format!("cannot migrate {}", mask_password(url)))?;
            println!(
                "{}: schema version {}",
                mask_password(url),
                PgStore::schema_version()
            );
        }
        None => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
            let path = data_dir.join("sessiond.db");
            // Opening migrates.
            let store = SqliteStore::open(&path, SqliteOptions::default())
                .with_context(|| format!("cannot open the database {}", path.display()))?;
            store.shutdown().await;
            println!(
                "sqlite {}: schema version {}",
                path.display(),
                SqliteStore::schema_version()
            );
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let auth_required = match args.auth_required() {
        Ok(r) => r,
        Err(msg) => bail!(msg),
    };
    let (store, hub) = open_store(&args).await?;
    let (admin_key, admin_source) = admin_key(&args)?;
    let app = App::with_hub(
        store.clone(),
        hub,
        AppOptions {
            admin_key: Some(admin_key),
            auth_required,
            max_body_bytes: args.max_body_bytes,
            token_secret: Some(token_secret(&args)?),
            job_reuse_window_seconds: args.job_reuse_window,
            max_upload_bytes: args.max_upload_bytes,
            document_processors: args.document_processors,
        },
    )
    .await
    .context("cannot initialise the store")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;

    // The first line is the contract for scripts and tests that start the server.
    println!("listening on http://{addr}");
    match &args.database_url {
        Some(url) => println!("store: {} ({})", store.describe(), mask_password(url)),
        None => println!("store: {}", store.describe()),
    }
    if auth_required {
        println!("auth: on (send Authorization: Bearer <key> or x-api-key)");
    } else {
        println!("auth: off (open mode: requests without credentials act as the default account)");
    }
    println!("admin key: {admin_source}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, store = %store.describe(), auth_required, "sessiond started");

    let (tx, mut rx) = watch::channel(false);
    let server = tokio::spawn(sessiond_server::serve(listener, app, async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(result)) => result.context("server error")?,
        Ok(Err(e)) => bail!("server task failed: {e}"),
        Err(_) => {
            tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; exiting");
            store.shutdown().await;
        }
    }
    tracing::info!("stopped");
    Ok(())
}
