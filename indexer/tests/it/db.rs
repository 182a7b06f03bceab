use chains::{Chain, ChainHead};
use indexer::chain_heads::{record_head, recorded_head};
use indexer::devnet::TestDb;

#[tokio::test]
async fn fresh_database_is_migrated_and_isolated() {
    let first = TestDb::new().await.expect("test database");
    let second = TestDb::new().await.expect("test database");
    assert_ne!(first.name(), second.name());

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(first.pool())
        .await
        .expect("migrations table");
    assert_eq!(applied, indexer::db::MIGRATOR.iter().count() as i64);

    let head = ChainHead {
        height: 42,
        hash: Some("00ab".into()),
    };
    record_head(first.pool(), Chain::Bitcoin, &head)
        .await
        .expect("record");
    assert_eq!(
        recorded_head(first.pool(), Chain::Bitcoin)
            .await
            .expect("read"),
        Some(head)
    );
    assert_eq!(
        recorded_head(second.pool(), Chain::Bitcoin)
            .await
            .expect("read"),
        None
    );

    // Migrating again is a no-op.
    indexer::db::migrate(first.pool())
        .await
        .expect("re-migrate");
}

#[tokio::test]
async fn head_is_upserted_and_rejects_unknown_chains() {
    let db = TestDb::new().await.expect("test database");
    for height in [1, 5, 3] {
        let head = ChainHead { height, hash: None };
        record_head(db.pool(), Chain::Solana, &head)
            .await
            .expect("record");
        assert_eq!(
            recorded_head(db.pool(), Chain::Solana).await.expect("read"),
            Some(head)
        );
    }
    let bad = sqlx::query("INSERT INTO chain_heads (chain, height) VALUES ('dogecoin', 1)")
        .execute(db.pool())
        .await;
    assert!(bad.is_err(), "the chain column only accepts known chains");
}

/// The schema a fresh database has after every migration, as `pg_dump
/// --schema-only` prints it, less what changes between runs and versions
/// (comments, settings, pg_dump's `\restrict` keys).
fn normalized_schema(dump: &str) -> String {
    let mut out = String::new();
    let mut blank = true;
    for line in dump.lines().map(str::trim_end) {
        let noise = line.starts_with("--")
            || line.starts_with("SET ")
            || line.starts_with("SELECT pg_catalog.set_config")
            || line.starts_with("\\restrict")
            || line.starts_with("\\unrestrict");
        if noise || (line.is_empty() && blank) {
            continue;
        }
        blank = line.is_empty();
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_owned() + "\n"
}

fn pg_dump() -> std::path::PathBuf {
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin/pg_dump");
            bin.is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("pg_dump not found; install PostgreSQL with `./scripts/devnet install`")
    })
}

/// `migrations/schema.sql` is the live schema in one place: every table,
/// index, trigger and function as the migrations leave them. Regenerate it
/// after adding a migration with
/// `COFFER_WRITE_SCHEMA=1 cargo test -p indexer --all-features --test it -- db::the_schema`.
#[tokio::test]
async fn the_schema_snapshot_matches_the_migrations() {
    let db = TestDb::new().await.expect("test database");
    let output = std::process::Command::new(pg_dump())
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=_sqlx_migrations",
            "--dbname",
        ])
        .arg(db.url())
        .output()
        .expect("run pg_dump");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let live = normalized_schema(&String::from_utf8_lossy(&output.stdout));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/schema.sql");
    if std::env::var_os("COFFER_WRITE_SCHEMA").is_some() {
        let header = "-- The live schema: what every migration in this folder leaves, as\n\
                      -- `pg_dump --schema-only` prints it (normalized). Generated, never\n\
                      -- edited: `COFFER_WRITE_SCHEMA=1 cargo test -p indexer --all-features\n\
                      -- --test it -- db::the_schema` rewrites it, and that test fails while\n\
                      -- it differs from the migrations. Read it to see a table, trigger or\n\
                      -- function as it is now; change it only with a new migration.\n\n";
        std::fs::write(path, format!("{header}{live}")).expect("write schema.sql");
    }
    let snapshot = std::fs::read_to_string(path).expect("migrations/schema.sql");
    if normalized_schema(&snapshot) != live {
        let first = normalized_schema(&snapshot)
            .lines()
            .zip(live.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "at the end".to_owned(),
                |n| format!("at normalized line {}", n + 1),
            );
        panic!(
            "migrations/schema.sql differs from the migrated schema ({first}); regenerate it with \
             `COFFER_WRITE_SCHEMA=1 cargo test -p indexer --all-features --test it -- db::the_schema`"
        );
    }
}
