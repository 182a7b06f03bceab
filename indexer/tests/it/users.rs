use chrono::{DateTime, Duration, Utc};
use indexer::Error;
use indexer::devnet::TestDb;
use indexer::users::{Role, Rotation, Users};
use uuid::Uuid;

fn hash(byte: u8) -> [u8; 32] {
    [byte; 32]
}

/// A new user with role `User` and a placeholder password hash.
async fn create_user(users: &Users, email: &str) -> Uuid {
    users.create(email, "h", Role::User).await.expect("create")
}

/// Starts a refresh-token family for `id` at session epoch 0; its id.
async fn start_family(
    users: &Users,
    id: Uuid,
    token: &[u8; 32],
    expires_at: DateTime<Utc>,
) -> Uuid {
    users
        .start_family(id, 0, token, expires_at)
        .await
        .expect("login")
        .expect("started")
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
            .set_role(Uuid::new_v4(), Role::Admin)
            .await
            .expect("no such user")
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = create_user(&users, "bob@example.com").await;
    let now = Utc::now();
    let expiry = now + Duration::days(30);
    let family = start_family(&users, id, &hash(1), expiry).await;

    let first = users.rotate(&hash(1), &hash(2), now).await.expect("rotate");
    assert_eq!(
        first,
        Rotation::Rotated {
            user_id: id,
            family_id: family,
            expires_at: first_expiry(&first),
            sessions_valid_after: 0,
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
    start_family(&users, id, &hash(10), now + Duration::seconds(1)).await;
    let late = users
        .rotate(&hash(10), &hash(11), now + Duration::seconds(2))
        .await
        .expect("rotate");
    assert_eq!(late, Rotation::Rejected);
}

fn first_expiry(rotation: &Rotation) -> DateTime<Utc> {
    match rotation {
        Rotation::Rotated { expires_at, .. } => *expires_at,
        other => panic!("not rotated: {other:?}"),
    }
}

#[tokio::test]
async fn racing_refreshes_of_one_token_rotate_once_then_revoke() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = create_user(&users, "carol@example.com").await;
    let now = Utc::now();
    for round in 0..20u8 {
        let start = round.wrapping_mul(3);
        start_family(&users, id, &hash(start), now + Duration::days(1)).await;
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
    let id = create_user(&users, "dave@example.com").await;
    let other = create_user(&users, "erin@example.com").await;
    let now = Utc::now();
    let later = now + Duration::days(1);
    start_family(&users, id, &hash(1), later).await;
    // A second device, and another user.
    start_family(&users, id, &hash(2), later).await;
    start_family(&users, other, &hash(3), later).await;

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

    assert!(
        users
            .change_password(id, 0, "new-hash")
            .await
            .expect("change")
    );
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

/// A distinct token hash per (family, step).
fn token(family: u8, step: u16) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[0] = family;
    bytes[1..3].copy_from_slice(&step.to_be_bytes());
    bytes[3] = 0xA5;
    bytes
}

/// Rotations of one family in a race test end by this step at the latest.
const MAX_STEPS: u16 = 400;

/// Rotates `family` from its step-0 token until a rotation is refused (or
/// [`MAX_STEPS`]); returns the newest step issued.
async fn rotate_until_refused(users: &Users, family: u8, now: DateTime<Utc>) -> u16 {
    let mut current = 0u16;
    while current < MAX_STEPS {
        match users
            .rotate(&token(family, current), &token(family, current + 1), now)
            .await
            .expect("rotate")
        {
            Rotation::Rotated { .. } => current += 1,
            _ => break,
        }
    }
    current
}

/// Under READ COMMITTED, a revocation used to scan the user's tokens with a
/// snapshot taken before a concurrent rotation committed, so the token that
/// rotation inserted escaped it. Many families rotate in tight loops while
/// the password changes; afterwards no token of the user may rotate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_racing_a_password_change_leave_no_live_token() {
    const FAMILIES: u8 = 24;
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    for round in 0..6u8 {
        let id = create_user(&users, &format!("race{round}@example.com")).await;
        let now = Utc::now();
        let families: Vec<u8> = (0..FAMILIES).map(|f| round * FAMILIES + f).collect();
        for &family in &families {
            start_family(&users, id, &token(family, 0), now + Duration::days(1)).await;
        }
        let mut tasks = Vec::new();
        for &family in &families {
            let users = users.clone();
            tasks.push(tokio::spawn(async move {
                rotate_until_refused(&users, family, now).await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            users
                .change_password(id, 0, "new-hash")
                .await
                .expect("change"),
            "round {round}"
        );
        for (family, task) in families.into_iter().zip(tasks) {
            let newest = task.await.expect("task");
            assert!(
                newest < MAX_STEPS,
                "round {round}: family {family} kept rotating after the password change"
            );
            assert_eq!(
                users
                    .rotate(&token(family, newest), &token(family, 1_000), now)
                    .await
                    .expect("rotate"),
                Rotation::Rejected,
                "round {round}: family {family}'s newest token outlived the password change"
            );
        }
    }
}

/// The same race for one family: a logout (or reuse detection) used to miss
/// the token a concurrent rotation of that family inserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_racing_a_logout_leave_no_live_token() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = create_user(&users, "logout-race@example.com").await;
    let now = Utc::now();
    for family in 0..24u8 {
        start_family(&users, id, &token(family, 0), now + Duration::days(1)).await;
        let rotator = {
            let users = users.clone();
            tokio::spawn(async move { rotate_until_refused(&users, family, now).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(
            users
                .revoke_family(&token(family, 0))
                .await
                .expect("logout"),
            Some(id)
        );
        let newest = rotator.await.expect("task");
        assert_eq!(
            users
                .rotate(&token(family, newest), &token(family, 1_000), now)
                .await
                .expect("rotate"),
            Rotation::Rejected,
            "family {family}: token {newest} outlived the logout"
        );
    }
}

#[tokio::test]
async fn a_login_that_raced_a_password_change_or_disable_starts_no_session() {
    let db = TestDb::new().await.expect("database");
    let users = Users::new(db.pool().clone());
    let id = users
        .create("epoch@example.com", "old-hash", Role::User)
        .await
        .expect("create");
    let before = users.by_id(id).await.expect("read").expect("user");
    assert_eq!((before.session_epoch, before.sessions_valid_after), (0, 0));
    let later = Utc::now() + Duration::days(1);

    // A login checked "old-hash" under epoch 0; the password changed before
    // it could start its family.
    assert!(
        users
            .change_password(id, 0, "new-hash")
            .await
            .expect("change")
    );
    let after = users.by_id(id).await.expect("read").expect("user");
    assert_eq!(after.session_epoch, 1);
    assert!(
        after.sessions_valid_after > Utc::now().timestamp() - 1,
        "access tokens issued before now are void: {after:?}"
    );
    assert_eq!(
        users
            .start_family(id, 0, &hash(1), later)
            .await
            .expect("login"),
        None,
        "the stale login starts nothing"
    );
    assert!(
        !users
            .change_password(id, 0, "racing-hash")
            .await
            .expect("change"),
        "a change checked against the old password loses"
    );
    assert!(
        users
            .start_family(id, 1, &hash(2), later)
            .await
            .expect("login")
            .is_some()
    );

    // Each change moves the cut-off forward, even twice in one second.
    assert!(
        users
            .change_password(id, 1, "newer-hash")
            .await
            .expect("change")
    );
    let again = users.by_id(id).await.expect("read").expect("user");
    assert!(again.sessions_valid_after > after.sessions_valid_after);
    assert_eq!(
        users
            .rotate(&hash(2), &hash(3), Utc::now())
            .await
            .expect("rotate"),
        Rotation::Rejected
    );

    assert!(users.disable(id).await.expect("disable"));
    let disabled = users.by_id(id).await.expect("read").expect("user");
    assert!(disabled.disabled && disabled.session_epoch == 3);
    assert!(disabled.sessions_valid_after > again.sessions_valid_after);
    assert_eq!(
        users
            .start_family(id, 3, &hash(4), later)
            .await
            .expect("login"),
        None,
        "a disabled user starts no session"
    );
    assert!(!users.disable(Uuid::new_v4()).await.expect("no such user"));
}
