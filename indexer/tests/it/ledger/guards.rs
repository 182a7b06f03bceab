//! The database refuses to break the ledger even when Rust is bypassed.

use indexer::devnet::TestDb;
use uuid::Uuid;

use crate::support::{assert_invariants, fund, ledger_with_assets, transfer};
use indexer::ledger::IdempotencyKey;

async fn sql_fails(pool: &sqlx::PgPool, statements: &[&str]) -> String {
    let mut tx = pool.begin().await.expect("begin");
    for statement in statements {
        if let Err(err) = sqlx::query(statement).execute(&mut *tx).await {
            return err.to_string();
        }
    }
    match tx.commit().await {
        Err(err) => err.to_string(),
        Ok(()) => panic!("{statements:?} succeeded"),
    }
}

#[tokio::test]
async fn direct_sql_cannot_rewrite_or_unbalance_the_ledger() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    fund(&ledger, alice, "BTC", 100).await;
    ledger
        .post(
            &IdempotencyKey::new("guards", "g1"),
            &transfer(alice, bob, "BTC", 40, "g1"),
        )
        .await
        .expect("transfer");
    let pool = db.pool();

    let err = sql_fails(pool, &["UPDATE postings SET amount = amount * 2"]).await;
    assert!(err.contains("postings is append-only: UPDATE"), "{err}");
    let err = sql_fails(pool, &["DELETE FROM postings"]).await;
    assert!(err.contains("postings is append-only: DELETE"), "{err}");
    let err = sql_fails(pool, &["TRUNCATE postings CASCADE"]).await;
    assert!(err.contains("append-only"), "{err}");
    let err = sql_fails(pool, &["UPDATE entries SET reference = 'forged'"]).await;
    assert!(err.contains("entries is append-only"), "{err}");
    let err = sql_fails(pool, &["DELETE FROM entries"]).await;
    assert!(err.contains("entries is append-only"), "{err}");
    let err = sql_fails(pool, &["UPDATE balances SET balance = balance + 1000000"]).await;
    assert!(
        err.contains("balances change only through postings"),
        "{err}"
    );
    let err = sql_fails(pool, &["DELETE FROM balances"]).await;
    assert!(
        err.contains("balances change only through postings"),
        "{err}"
    );

    let alice_available: i64 =
        sqlx::query_scalar("SELECT id FROM accounts WHERE owner_id = $1 AND purpose = 'available'")
            .bind(alice)
            .fetch_one(pool)
            .await
            .expect("account");
    let bob_available: i64 =
        sqlx::query_scalar("SELECT id FROM accounts WHERE owner_id = $1 AND purpose = 'available'")
            .bind(bob)
            .fetch_one(pool)
            .await
            .expect("account");

    // One leg only: committed alone, the entry cannot balance.
    let one_leg = format!(
        "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', 'forged-1') RETURNING id)
         INSERT INTO postings (entry_id, account_id, amount) SELECT id, {bob_available}, 1000 FROM e"
    );
    let err = sql_fails(pool, &[&one_leg]).await;
    assert!(err.contains("at least two are required"), "{err}");

    // Two legs that do not sum to zero.
    let lopsided = format!(
        "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', 'forged-2') RETURNING id)
         INSERT INTO postings (entry_id, account_id, amount)
         SELECT id, {alice_available}, -10 FROM e UNION ALL SELECT id, {bob_available}, 11 FROM e"
    );
    let err = sql_fails(pool, &[&lopsided]).await;
    assert!(err.contains("does not balance in BTC"), "{err}");

    // A leg appended to an entry that already balanced.
    let appended = format!(
        "INSERT INTO postings (entry_id, account_id, amount)
         SELECT max(id), {bob_available}, 5 FROM entries"
    );
    let err = sql_fails(pool, &[&appended]).await;
    assert!(err.contains("does not balance in BTC"), "{err}");

    // Two statements, each adding one leg of a balanced pair, then one more.
    let first = format!(
        "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', 'forged-5') RETURNING id)
         INSERT INTO postings (entry_id, account_id, amount) SELECT id, {alice_available}, -1 FROM e"
    );
    let second = format!(
        "INSERT INTO postings (entry_id, account_id, amount) SELECT id, {bob_available}, 1 FROM entries WHERE reference = 'forged-5'"
    );
    let third = format!(
        "INSERT INTO postings (entry_id, account_id, amount) SELECT id, {bob_available}, 1 FROM entries WHERE reference = 'forged-5'"
    );
    let err = sql_fails(pool, &[&first, &second, &third]).await;
    assert!(err.contains("does not balance in BTC"), "{err}");

    // An entry made in a savepoint and given its other leg after it: checked
    // all the same, and committed when it balances.
    let in_savepoint = |reference: &str, amount: i64| {
        [
            "SAVEPOINT made".to_owned(),
            format!(
                "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', '{reference}') RETURNING id)
                 INSERT INTO postings (entry_id, account_id, amount) SELECT id, {alice_available}, -1 FROM e"
            ),
            "RELEASE SAVEPOINT made".to_owned(),
            format!(
                "INSERT INTO postings (entry_id, account_id, amount)
                 SELECT id, {bob_available}, {amount} FROM entries WHERE reference = '{reference}'"
            ),
        ]
    };
    let statements = in_savepoint("forged-6", 2);
    let err = sql_fails(pool, &statements.each_ref().map(String::as_str)).await;
    assert!(err.contains("does not balance in BTC"), "{err}");
    let mut tx = pool.begin().await.expect("begin");
    for statement in in_savepoint("saved", 1) {
        sqlx::query(&statement)
            .execute(&mut *tx)
            .await
            .expect("statement");
    }
    tx.commit()
        .await
        .expect("a balanced entry made in a savepoint commits");

    // An entry with no postings at all.
    let err = sql_fails(
        pool,
        &["INSERT INTO entries (kind, reference) VALUES ('adjustment', 'forged-3')"],
    )
    .await;
    assert!(err.contains("has 0 posting(s)"), "{err}");

    // A balanced entry that overdraws a user account.
    let overdraw = format!(
        "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', 'forged-4') RETURNING id)
         INSERT INTO postings (entry_id, account_id, amount)
         SELECT id, {alice_available}, -61 FROM e UNION ALL SELECT id, {bob_available}, 61 FROM e"
    );
    let err = sql_fails(pool, &[&overdraw]).await;
    assert!(err.contains("balances_non_negative"), "{err}");

    // A balance row that appears with money in it.
    let err = sql_fails(
        pool,
        &["INSERT INTO balances (account_id, owner_id, asset, purpose, balance)
           SELECT id, owner_id, asset, 'held', 500 FROM accounts WHERE purpose = 'available' LIMIT 1"],
    )
    .await;
    assert!(
        err.contains("balances change only through postings"),
        "{err}"
    );

    // A zero balance row for a system account, or one naming another owner.
    let err = sql_fails(
        pool,
        &["INSERT INTO balances (account_id, owner_id, asset, purpose)
           SELECT id, gen_random_uuid(), asset, 'available' FROM accounts WHERE owner_id IS NULL LIMIT 1"],
    )
    .await;
    assert!(
        err.contains("balances change only through postings"),
        "{err}"
    );

    // Postings cannot claim another asset or owner than their account's.
    let claims = [
        ("'ETH'", "a.owner_id"),
        ("a.asset", "gen_random_uuid()"),
        ("a.asset", "NULL"),
    ];
    for (asset, owner) in claims {
        let claimed = format!(
            "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', 'claimed') RETURNING id)
             INSERT INTO postings (entry_id, account_id, asset, owner_id, amount)
             SELECT e.id, a.id, {asset}, {owner}, CASE WHEN a.id = {alice_available} THEN -1 ELSE 1 END
             FROM e, accounts a WHERE a.id IN ({alice_available}, {bob_available})"
        );
        let err = sql_fails(pool, &[&claimed]).await;
        assert!(err.contains("which are not the account's"), "{err}");
    }

    // Postings must name an entry and an account that exist, whether or not
    // they name an asset; and accounts, like entries, are never removed.
    for (asset, owner) in [("'BTC'", "a.owner_id"), ("NULL::text", "NULL::uuid")] {
        let dangling_account = format!(
            "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', 'dangling') RETURNING id)
             INSERT INTO postings (entry_id, account_id, asset, owner_id, amount)
             SELECT e.id, a.id + 1000000, {asset}, {owner}, 1 FROM e, accounts a WHERE a.id = {bob_available}
             UNION ALL SELECT e.id, {alice_available}, {asset}, {owner}, -1 FROM e, accounts a WHERE a.id = {alice_available}"
        );
        let err = sql_fails(pool, &[&dangling_account]).await;
        let missing = bob_available + 1_000_000;
        assert!(
            err.contains(&format!("account {missing} does not exist")),
            "{err}"
        );
    }
    let dangling_entry = format!(
        "INSERT INTO postings (entry_id, account_id, amount)
         VALUES (999999999, {alice_available}, -1), (999999999, {bob_available}, 1)"
    );
    let err = sql_fails(pool, &[&dangling_entry]).await;
    assert!(err.contains("entry 999999999 does not exist"), "{err}");
    for statement in [
        format!("DELETE FROM accounts WHERE id = {bob_available}"),
        format!("UPDATE accounts SET owner_id = gen_random_uuid() WHERE id = {bob_available}"),
        "TRUNCATE accounts CASCADE".to_owned(),
    ] {
        let err = sql_fails(pool, &[&statement]).await;
        assert!(err.contains("append-only"), "{statement}: {err}");
    }

    // Postings that name no asset get their account's, and move its balance.
    let before: String = sqlx::query_scalar(&format!(
        "SELECT balance::text FROM balances WHERE account_id = {bob_available}"
    ))
    .fetch_one(pool)
    .await
    .expect("balance");
    sqlx::query(&format!(
        "WITH e AS (INSERT INTO entries (kind, reference) VALUES ('adjustment', 'stamped') RETURNING id)
         INSERT INTO postings (entry_id, account_id, amount)
         SELECT id, {alice_available}, -1 FROM e UNION ALL SELECT id, {bob_available}, 1 FROM e"
    ))
    .execute(pool)
    .await
    .expect("a balanced entry without assets commits");
    let after: String = sqlx::query_scalar(&format!(
        "SELECT balance::text FROM balances WHERE account_id = {bob_available}"
    ))
    .fetch_one(pool)
    .await
    .expect("balance");
    assert_eq!(
        after.parse::<u64>().expect("balance"),
        before.parse::<u64>().expect("balance") + 1
    );
    assert_invariants(pool).await;
}
