use chrono::{Duration, Utc};
use indexer::Error;
use indexer::devnet::TestDb;
use indexer::users::{Role, Rotation, Users};

fn hash(byte: u8) -> [u8; 32] {
    [byte; 32]
}

#[tokio::test]
async fn users_are_unique_by_email_and_roles_and_disabling_stick() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = users
        .create("alice@example.com", "$argon2id$stub", Role::User)
        .await
        .expect("create");
    let duplicate = users
        .create("alice@example.com", "$argon2id$other", Role::User)
        .await;
    assert!(matches!(duplicate, Err(Error::EmailTaken)), "{duplicate:?}");
    let refused = users.create("Alice@Example.com", "h", Role::User).await;
    assert!(refused.is_err(), "emails must arrive normalized");

    let alice = users
        .by_email("alice@example.com")
        .await
        .expect("read")
        .expect("alice");
    assert_eq!(
        (alice.id, alice.role, alice.disabled),
        (id, Role::User, false)
    );
    assert!(
        !format!("{alice:?}").contains("argon2"),
        "the hash never prints"
    );

    assert!(users.set_role(id, Role::Operator).await.expect("role"));
    assert_eq!(
        users.by_id(id).await.expect("read").map(|u| u.role),
        Some(Role::Operator)
    );
    assert!(users.disable(id).await.expect("disable"));
    assert_eq!(
        users.by_id(id).await.expect("read").map(|u| u.disabled),
        Some(true)
    );
    assert!(
        !users
            .set_role(uuid::Uuid::new_v4(), Role::Admin)
            .await
            .expect("no such user")
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = users
        .create("bob@example.com", "h", Role::User)
        .await
        .expect("create");
    let now = Utc::now();
    let expiry = now + Duration::days(30);
    let family = users
        .start_family(id, &hash(1), expiry)
        .await
        .expect("login");

    let first = users.rotate(&hash(1), &hash(2), now).await.expect("rotate");
    assert_eq!(
        first,
        Rotation::Rotated {
            user_id: id,
            family_id: family,
            expires_at: first_expiry(&first)
        }
    );
    assert_eq!(
        first_expiry(&first).timestamp(),
        expiry.timestamp(),
        "the family keeps its absolute expiry"
    );
    let second = users.rotate(&hash(2), &hash(3), now).await.expect("rotate");
    assert!(matches!(second, Rotation::Rotated { .. }));

    // Token 1 again: reuse. The family dies, including the current token 3.
    let reuse = users.rotate(&hash(1), &hash(4), now).await.expect("rotate");
    assert_eq!(
        reuse,
        Rotation::ReuseDetected {
            user_id: id,
            family_id: family
        }
    );
    assert_eq!(
        users.rotate(&hash(3), &hash(5), now).await.expect("rotate"),
        Rotation::Rejected
    );
    assert_eq!(
        users
            .rotate(&hash(99), &hash(6), now)
            .await
            .expect("rotate"),
        Rotation::Rejected,
        "unknown"
    );

    // Expiry is absolute.
    users
        .start_family(id, &hash(10), now + Duration::seconds(1))
        .await
        .expect("login");
    let late = users
        .rotate(&hash(10), &hash(11), now + Duration::seconds(2))
        .await
        .expect("rotate");
    assert_eq!(late, Rotation::Rejected);
}

fn first_expiry(rotation: &Rotation) -> chrono::DateTime<Utc> {
    match rotation {
        Rotation::Rotated { expires_at, .. } => *expires_at,
        other => panic!("not rotated: {other:?}"),
    }
}

#[tokio::test]
async fn racing_refreshes_of_one_token_rotate_once_then_revoke() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = users
        .create("carol@example.com", "h", Role::User)
        .await
        .expect("create");
    let now = Utc::now();
    for round in 0..20u8 {
        let start = round.wrapping_mul(3);
        users
            .start_family(id, &hash(start), now + Duration::days(1))
            .await
            .expect("login");
        let (presented, left, right) = (hash(start), hash(start + 1), hash(start + 2));
        let (a, b) = tokio::join!(
            users.rotate(&presented, &left, now),
            users.rotate(&presented, &right, now)
        );
        let outcomes = [a.expect("a"), b.expect("b")];
        let rotated = outcomes
            .iter()
            .filter(|o| matches!(o, Rotation::Rotated { .. }))
            .count();
        let reused = outcomes
            .iter()
            .filter(|o| matches!(o, Rotation::ReuseDetected { .. }))
            .count();
        assert_eq!((rotated, reused), (1, 1), "round {round}: {outcomes:?}");
        for next in [start + 1, start + 2] {
            let after = users
                .rotate(&hash(next), &hash(250), now)
                .await
                .expect("rotate");
            assert_eq!(after, Rotation::Rejected, "the race revoked the family");
        }
    }
}

#[tokio::test]
async fn logout_password_change_and_disable_revoke_families() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = users
        .create("dave@example.com", "h", Role::User)
        .await
        .expect("create");
    let other = users
        .create("erin@example.com", "h", Role::User)
        .await
        .expect("create");
    let now = Utc::now();
    let later = now + Duration::days(1);
    users
        .start_family(id, &hash(1), later)
        .await
        .expect("login");
    users
        .start_family(id, &hash(2), later)
        .await
        .expect("second device");
    users
        .start_family(other, &hash(3), later)
        .await
        .expect("other user");

    assert_eq!(
        users.revoke_family(&hash(1)).await.expect("logout"),
        Some(id)
    );
    assert_eq!(
        users
            .rotate(&hash(1), &hash(10), now)
            .await
            .expect("rotate"),
        Rotation::Rejected
    );
    assert!(matches!(
        users
            .rotate(&hash(2), &hash(11), now)
            .await
            .expect("rotate"),
        Rotation::Rotated { .. }
    ));
    assert_eq!(users.revoke_family(&hash(77)).await.expect("unknown"), None);

    assert!(users.change_password(id, "new-hash").await.expect("change"));
    assert_eq!(
        users
            .rotate(&hash(11), &hash(12), now)
            .await
            .expect("rotate"),
        Rotation::Rejected
    );
    assert_eq!(
        users
            .by_id(id)
            .await
            .expect("read")
            .map(|u| u.password_hash),
        Some("new-hash".into())
    );

    assert!(users.disable(other).await.expect("disable"));
    assert_eq!(
        users
            .rotate(&hash(3), &hash(13), now)
            .await
            .expect("rotate"),
        Rotation::Rejected
    );
}
