use chains::{Chain, ChainHead};
use indexer::devnet::TestDb;
use indexer::watch::{record_head, recorded_head};

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
