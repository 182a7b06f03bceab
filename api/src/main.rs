//! `coffer`: the custody daemon. Thin by design; `api::App` does the work.

use std::path::PathBuf;
use std::process::ExitCode;

use api::{App, Settings};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "coffer",
    version,
    about = "Custody daemon for Bitcoin, Ethereum and Solana"
)]
struct Cli {
    /// TOML config file; defaults target the local devnet. Overridden by
    /// COFFER__SECTION__KEY environment variables.
    #[arg(long, global = true, env = "COFFER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations, then run every enabled component until SIGINT/SIGTERM.
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
}

fn main() -> ExitCode {
    api::app::install_crypto_provider();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("coffer: invalid configuration:\n{err}");
            return ExitCode::from(2);
        }
    };
    if let Command::CheckConfig = cli.command {
        // The seed and the TLS files are part of the configuration: they
        // must load (and the seed be allowed) as `run` will load them.
        let loaded = api::app::load_deposit_keys(&settings)
            .map(drop)
            .and_then(|()| api::app::load_tls(&settings).map(drop));
        if let Err(err) = loaded {
            eprintln!("coffer: invalid configuration:\n{err:#}");
            return ExitCode::from(2);
        }
        print!("{}", settings.to_redacted_toml());
        eprintln!("coffer: configuration OK");
        return ExitCode::SUCCESS;
    }
    api::telemetry::init_logging(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("coffer: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_on_signal(cancel.clone()));
        match cli.command {
            Command::Run => {
                let app = App::bind(settings).await?;
                app.run(cancel).await
            }
            Command::Migrate => migrate(&settings, &cancel).await,
            Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "coffer failed");
            eprintln!("coffer: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &Settings, cancel: &CancellationToken) -> anyhow::Result<()> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(settings.database.url.expose())?;
    let pool_settings = indexer::db::PoolSettings {
        max_connections: 2,
        acquire_timeout: settings.database_acquire_timeout(),
    };
    let Some(pool) = indexer::db::connect_with_retry(options, &pool_settings, cancel).await else {
        anyhow::bail!("interrupted before PostgreSQL answered");
    };
    indexer::db::migrate(&pool).await?;
    let applied = indexer::db::MIGRATOR.iter().count();
    tracing::info!(migrations = applied, "database is up to date");
    pool.close().await;
    Ok(())
}

/// Cancels on the first SIGINT or SIGTERM; a second signal exits at once.
async fn shutdown_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
    cancel.cancel();
    tokio::select! {
        _ = interrupt.recv() => {},
        _ = terminate.recv() => {},
    }
    tracing::warn!("second signal received; exiting without waiting");
    std::process::exit(130);
}
