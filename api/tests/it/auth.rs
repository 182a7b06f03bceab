//! `coffer.v1.AuthService` end to end: a real server on 127.0.0.1:0 and a
//! real PostgreSQL.

use std::time::Duration;

use api::grpc::pb::auth_service_client::AuthServiceClient;
use api::grpc::pb::{self, Role};
use indexer::users::Users;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::{bearer, client, login, register_and_login, server, server_with, who_am_i};

async fn refresh(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    client
        .refresh(pb::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_refresh_logout_and_change_password() {
    let server = server().await;
    let mut client = client(&server).await;
    let pair =
        register_and_login(&mut client, " Alice@Example.com ", "correct horse battery").await;
    let me = who_am_i(&mut client, &pair.access_token)
        .await
        .expect("whoami");
    assert_eq!(
        (me.email.as_str(), me.role()),
        ("alice@example.com", Role::User)
    );
    let access_expires = pair.access_expires_at.as_ref().expect("expiry").seconds;
    let refresh_expires = pair.refresh_expires_at.as_ref().expect("expiry").seconds;
    assert!(
        refresh_expires - access_expires > 29 * 86_400,
        "refresh outlives access by about 30 days"
    );

    // Rotation: the new pair works, the old refresh token is spent...
    let rotated = refresh(&mut client, &pair.refresh_token)
        .await
        .expect("refresh");
    assert_ne!(rotated.refresh_token, pair.refresh_token);
    assert_eq!(
        rotated.refresh_expires_at, pair.refresh_expires_at,
        "absolute expiry"
    );
    who_am_i(&mut client, &rotated.access_token)
        .await
        .expect("new access token");
    // ...and presenting it again revokes the whole family.
    let reuse = refresh(&mut client, &pair.refresh_token)
        .await
        .expect_err("reuse");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().contains("already used"), "{reuse:?}");
    assert_eq!(
        refresh(&mut client, &rotated.refresh_token)
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );

    // Logout revokes its family only.
    let phone = login(&mut client, "alice@example.com", "correct horse battery")
        .await
        .expect("login");
    let laptop = login(&mut client, "alice@example.com", "correct horse battery")
        .await
        .expect("login");
    client
        .logout(pb::LogoutRequest {
            refresh_token: phone.refresh_token.clone(),
        })
        .await
        .expect("logout");
    assert_eq!(
        refresh(&mut client, &phone.refresh_token)
            .await
            .expect_err("logged out")
            .code(),
        Code::Unauthenticated
    );
    let laptop = refresh(&mut client, &laptop.refresh_token)
        .await
        .expect("other session lives");

    // Changing the password revokes every family.
    let wrong = client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "not my password".into(),
                new_password: "a brand new passphrase".into(),
            },
            &laptop.access_token,
        ))
        .await
        .expect_err("wrong current password");
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert!(wrong.message().starts_with("current_password"), "{wrong:?}");
    client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "correct horse battery".into(),
                new_password: "a brand new passphrase".into(),
            },
            &laptop.access_token,
        ))
        .await
        .expect("change password");
    assert_eq!(
        refresh(&mut client, &laptop.refresh_token)
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        login(&mut client, "alice@example.com", "correct horse battery")
            .await
            .expect_err("old")
            .code(),
        Code::Unauthenticated
    );
    login(&mut client, "alice@example.com", "a brand new passphrase")
        .await
        .expect("new password works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_look_the_same_and_failures_are_throttled() {
    let server = server().await;
    let mut client = client(&server).await;
    register_and_login(&mut client, "bob@example.com", "correct horse battery").await;
    let unknown = login(&mut client, "nobody@example.com", "correct horse battery")
        .await
        .expect_err("unknown");
    let wrong = login(&mut client, "bob@example.com", "wrong password!")
        .await
        .expect_err("wrong");
    assert_eq!(
        (unknown.code(), unknown.message()),
        (wrong.code(), wrong.message())
    );
    assert_eq!(wrong.code(), Code::Unauthenticated);

    for _ in 0..4 {
        login(&mut client, "bob@example.com", "wrong password!")
            .await
            .expect_err("wrong");
    }
    let throttled = login(&mut client, "bob@example.com", "correct horse battery")
        .await
        .expect_err("throttled");
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    login(&mut client, "nobody@example.com", "whatever!!")
        .await
        .expect_err("still unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_and_disabling_apply_to_the_next_request() {
    let server = server().await;
    let mut client = client(&server).await;
    let hash = api::auth::password::hash_password("admin passphrase").expect("hash");
    Users::new(server.db.pool().clone())
        .create("admin@example.com", &hash, indexer::users::Role::Admin)
        .await
        .expect("admin");
    let admin = login(&mut client, "admin@example.com", "admin passphrase")
        .await
        .expect("admin login");
    let carol = register_and_login(&mut client, "carol@example.com", "correct horse battery").await;
    let carol_id = who_am_i(&mut client, &carol.access_token)
        .await
        .expect("whoami")
        .user_id;

    let denied = client
        .set_role(bearer(
            pb::SetRoleRequest {
                user_id: carol_id.clone(),
                role: Role::Admin.into(),
            },
            &carol.access_token,
        ))
        .await
        .expect_err("users cannot promote themselves");
    assert_eq!(denied.code(), Code::PermissionDenied);

    client
        .set_role(bearer(
            pb::SetRoleRequest {
                user_id: carol_id.clone(),
                role: Role::Operator.into(),
            },
            &admin.access_token,
        ))
        .await
        .expect("set role");
    let me = who_am_i(&mut client, &carol.access_token)
        .await
        .expect("same token");
    assert_eq!(
        me.role(),
        Role::Operator,
        "the role applies without a new token"
    );

    client
        .disable_user(bearer(
            pb::DisableUserRequest {
                user_id: carol_id.clone(),
            },
            &admin.access_token,
        ))
        .await
        .expect("disable");
    let gone = who_am_i(&mut client, &carol.access_token)
        .await
        .expect_err("disabled");
    assert_eq!(gone.code(), Code::Unauthenticated);
    assert_eq!(
        refresh(&mut client, &carol.refresh_token)
            .await
            .expect_err("disabled")
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        login(&mut client, "carol@example.com", "correct horse battery")
            .await
            .expect_err("disabled")
            .code(),
        Code::Unauthenticated
    );

    let missing = client
        .disable_user(bearer(
            pb::DisableUserRequest {
                user_id: uuid::Uuid::new_v4().to_string(),
            },
            &admin.access_token,
        ))
        .await
        .expect_err("no such user");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_malformed_input_get_the_right_codes() {
    let server = server().await;
    let mut client = client(&server).await;
    let pair = register_and_login(&mut client, "dave@example.com", "correct horse battery").await;

    for token in [
        pair.refresh_token.as_str(),
        "not-a-jwt",
        "",
        "eyJhbGciOiJub25lIn0.e30.",
    ] {
        let err = who_am_i(&mut client, token).await.expect_err("rejected");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}");
    }
    let no_metadata = client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect_err("no token");
    assert_eq!(no_metadata.code(), Code::Unauthenticated);
    let access_as_refresh = refresh(&mut client, &pair.access_token)
        .await
        .expect_err("access token as refresh token");
    assert_eq!(access_as_refresh.code(), Code::Unauthenticated);

    let register = |email: &str, password: &str| pb::RegisterRequest {
        email: email.into(),
        password: password.into(),
    };
    for (request, field) in [
        (register("not-an-email", "correct horse battery"), "email"),
        (register("", "correct horse battery"), "email"),
        (register("erin@example.com", "short"), "password"),
        (register("erin@example.com", &"x".repeat(129)), "password"),
        (register("erin@example.com", "password123"), "password"),
    ] {
        let err = client.register(request).await.expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{err:?} must name {field}"
        );
    }
    let taken = client
        .register(register("DAVE@example.com", "another passphrase"))
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);

    let empty_password = login(&mut client, "dave@example.com", "")
        .await
        .expect_err("empty");
    assert!(
        empty_password.code() == Code::InvalidArgument
            && empty_password.message().starts_with("password:")
    );
    let empty_refresh = refresh(&mut client, "").await.expect_err("empty");
    assert!(
        empty_refresh.code() == Code::InvalidArgument
            && empty_refresh.message().starts_with("refresh_token:")
    );

    let hash = api::auth::password::hash_password("admin passphrase").expect("hash");
    Users::new(server.db.pool().clone())
        .create("root@example.com", &hash, indexer::users::Role::Admin)
        .await
        .expect("admin");
    let admin = login(&mut client, "root@example.com", "admin passphrase")
        .await
        .expect("admin");
    let bad_id = client
        .set_role(bearer(
            pb::SetRoleRequest {
                user_id: "42".into(),
                role: Role::User.into(),
            },
            &admin.access_token,
        ))
        .await
        .expect_err("bad id");
    assert!(
        bad_id.code() == Code::InvalidArgument && bad_id.message().starts_with("user_id:"),
        "{bad_id:?}"
    );
    let me = who_am_i(&mut client, &pair.access_token)
        .await
        .expect("whoami");
    for role in [0, 99] {
        let err = client
            .set_role(bearer(
                pb::SetRoleRequest {
                    user_id: me.user_id.clone(),
                    role,
                },
                &admin.access_token,
            ))
            .await
            .expect_err("bad role");
        assert!(
            err.code() == Code::InvalidArgument && err.message().starts_with("role:"),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_rpc_names_the_bad_field() {
    let server = server().await;
    let mut client = client(&server).await;
    let pair = register_and_login(&mut client, "fields@example.com", "correct horse battery").await;
    let hash = api::auth::password::hash_password("admin passphrase").expect("hash");
    Users::new(server.db.pool().clone())
        .create("boss@example.com", &hash, indexer::users::Role::Admin)
        .await
        .expect("admin");
    let admin = login(&mut client, "boss@example.com", "admin passphrase")
        .await
        .expect("admin");
    let mut outcomes = vec![
        (
            "email",
            login(&mut client, "not an email", "whatever!!")
                .await
                .map(|_| ()),
        ),
        (
            "refresh_token",
            client
                .logout(pb::LogoutRequest {
                    refresh_token: " ".into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "new_password",
            client
                .change_password(bearer(
                    pb::ChangePasswordRequest {
                        current_password: "correct horse battery".into(),
                        new_password: "123".into(),
                    },
                    &pair.access_token,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "current_password",
            client
                .change_password(bearer(
                    pb::ChangePasswordRequest {
                        current_password: String::new(),
                        new_password: "a brand new passphrase".into(),
                    },
                    &pair.access_token,
                ))
                .await
                .map(|_| ()),
        ),
    ];
    outcomes.push((
        "user_id",
        client
            .disable_user(bearer(
                pb::DisableUserRequest {
                    user_id: "x".into(),
                },
                &admin.access_token,
            ))
            .await
            .map(|_| ()),
    ));
    for (field, outcome) in outcomes {
        let err = outcome.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{field}: {err:?}"
        );
    }
}

/// A login request that a trusted proxy forwarded for `client`.
fn login_via_proxy(email: &str, password: &str, client: &str) -> Request<pb::LoginRequest> {
    let mut request = Request::new(pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    request.metadata_mut().insert(
        "x-forwarded-for",
        format!("{client}, 127.0.0.1").parse().expect("ascii"),
    );
    request
}

async fn login_from(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
    from: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    client
        .login(login_via_proxy(email, password, from))
        .await
        .map(|r| r.into_inner())
}

/// Many sessions refresh in tight loops while the password changes:
/// afterwards no refresh token of the user works, and neither does any
/// access token issued before the change; a fresh login works at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshes_racing_a_password_change_leave_no_working_token() {
    const SESSIONS: usize = 12;
    const MAX_REFRESHES: usize = 150;
    let server = server().await;
    let mut client = client(&server).await;
    let first = register_and_login(&mut client, "racer@example.com", "correct horse battery").await;
    let mut sessions = vec![first.clone()];
    for _ in 1..SESSIONS {
        sessions.push(
            login(&mut client, "racer@example.com", "correct horse battery")
                .await
                .expect("login"),
        );
    }
    let mut tasks = Vec::new();
    for session in sessions {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Every pair this session got, newest last.
            let mut pairs = vec![session];
            while pairs.len() < MAX_REFRESHES {
                let current = pairs.last().expect("pair").refresh_token.clone();
                match refresh(&mut client, &current).await {
                    Ok(next) => pairs.push(next),
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                        break;
                    }
                }
            }
            pairs
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "correct horse battery".into(),
                new_password: "a brand new passphrase".into(),
            },
            &first.access_token,
        ))
        .await
        .expect("change password");
    let fresh = login(&mut client, "racer@example.com", "a brand new passphrase")
        .await
        .expect("new password");
    for task in tasks {
        let pairs = task.await.expect("task");
        assert!(
            pairs.len() < MAX_REFRESHES,
            "a session kept refreshing after the password change"
        );
        let newest = pairs.last().expect("pair");
        let err = refresh(&mut client, &newest.refresh_token)
            .await
            .expect_err("the newest refresh token outlived the password change");
        assert_eq!(err.code(), Code::Unauthenticated);
        for pair in &pairs {
            let err = who_am_i(&mut client, &pair.access_token)
                .await
                .expect_err("an access token issued before the change still works");
            assert_eq!(err.code(), Code::Unauthenticated);
        }
    }
    who_am_i(&mut client, &fresh.access_token)
        .await
        .expect("a token issued after the change works at once");
    let rotated = refresh(&mut client, &fresh.refresh_token)
        .await
        .expect("and refreshes");
    who_am_i(&mut client, &rotated.access_token)
        .await
        .expect("rotated after the change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_voids_access_tokens_and_refresh_races() {
    let server = server().await;
    let mut client = client(&server).await;
    let hash = api::auth::password::hash_password("admin passphrase").expect("hash");
    Users::new(server.db.pool().clone())
        .create("chief@example.com", &hash, indexer::users::Role::Admin)
        .await
        .expect("admin");
    let admin = login(&mut client, "chief@example.com", "admin passphrase")
        .await
        .expect("admin");
    let pair = register_and_login(&mut client, "gone@example.com", "correct horse battery").await;
    let id = who_am_i(&mut client, &pair.access_token)
        .await
        .expect("whoami")
        .user_id;
    let racing = {
        let mut client = client.clone();
        let token = pair.refresh_token.clone();
        tokio::spawn(async move {
            let mut current = token;
            let mut issued = Vec::new();
            for _ in 0..150 {
                match refresh(&mut client, &current).await {
                    Ok(next) => {
                        current = next.refresh_token.clone();
                        issued.push(next);
                    }
                    Err(_) => break,
                }
            }
            issued
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    client
        .disable_user(bearer(
            pb::DisableUserRequest { user_id: id },
            &admin.access_token,
        ))
        .await
        .expect("disable");
    let issued = racing.await.expect("task");
    assert!(issued.len() < 150, "refreshing went on after disabling");
    for pair in issued.iter().chain([&pair]) {
        assert_eq!(
            refresh(&mut client, &pair.refresh_token)
                .await
                .expect_err("disabled")
                .code(),
            Code::Unauthenticated
        );
        assert_eq!(
            who_am_i(&mut client, &pair.access_token)
                .await
                .expect_err("disabled")
                .code(),
            Code::Unauthenticated
        );
    }
}

/// The limit holds against a burst: attempts are reserved before the
/// password is checked, so 40 concurrent guesses get 5, not 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_guesses_gets_only_the_limit() {
    let server = server().await;
    let mut client = client(&server).await;
    register_and_login(&mut client, "burst@example.com", "correct horse battery").await;
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                login(
                    &mut client,
                    "burst@example.com",
                    &format!("guess number {i}"),
                )
                .await
            })
        })
        .collect();
    let (mut checked, mut throttled) = (0, 0);
    for guess in guesses {
        let err = guess.await.expect("task").expect_err("wrong password");
        match err.code() {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => throttled += 1,
            other => panic!("{other:?}: {err:?}"),
        }
    }
    println!("40 concurrent guesses: {checked} checked, {throttled} throttled");
    assert!(
        checked <= 5,
        "{checked} guesses were checked; the limit is 5"
    );
    assert_eq!(checked + throttled, 40);
    let refused = login(&mut client, "burst@example.com", "correct horse battery")
        .await
        .expect_err("throttled");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let retry_after: u64 = refused
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after metadata");
    assert!((1..=300).contains(&retry_after), "{retry_after}");
}

/// Behind a trusted proxy the client is the header's address, IPv6 clients
/// are grouped by /64, and failures are also capped per account across
/// addresses, with a backoff the account's known clients skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_behind_a_proxy_groups_ipv6_and_caps_each_account() {
    let server = server_with(|s| {
        s.auth.trusted_proxies = vec!["127.0.0.0/8".into(), "::1".into()];
        s.auth.login_failures_per_account_and_client = 2;
        s.auth.login_failures_per_account = 6;
        s.auth.login_backoff_max_secs = 2;
    })
    .await;
    let mut client = client(&server).await;
    client
        .register(pb::RegisterRequest {
            email: "target@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("register");
    let right = "correct horse battery";
    login_from(&mut client, "target@example.com", right, "203.0.113.7")
        .await
        .expect("the owner logs in from home");

    // One /64 is one client, whatever the interface identifier.
    for host in ["1", "2"] {
        let err = login_from(
            &mut client,
            "target@example.com",
            "wrong!!!",
            &format!("2001:db8:1:2::{host}"),
        )
        .await
        .expect_err("wrong");
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let same_net = login_from(
        &mut client,
        "target@example.com",
        right,
        "2001:db8:1:2:aaaa::9",
    )
    .await
    .expect_err("same /64");
    assert_eq!(same_net.code(), Code::ResourceExhausted, "{same_net:?}");

    // Four more failures from four IPv4 addresses reach the account's cap
    // of six: a new address must now wait, the owner's address need not.
    for last in 1..=4 {
        let err = login_from(
            &mut client,
            "target@example.com",
            "wrong!!!",
            &format!("198.51.100.{last}"),
        )
        .await
        .expect_err("wrong");
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let backoff = login_from(&mut client, "target@example.com", right, "192.0.2.44")
        .await
        .expect_err("per-account backoff");
    assert_eq!(backoff.code(), Code::ResourceExhausted, "{backoff:?}");
    login_from(&mut client, "target@example.com", right, "203.0.113.7")
        .await
        .expect("the owner's known address skips the backoff");
    // A backoff, not a lock-out: after it, a new address gets its turn.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    login_from(&mut client, "target@example.com", right, "192.0.2.44")
        .await
        .expect("after the backoff");
}

/// Without `trusted_proxies`, a forwarded-for header is the client's own
/// claim and is ignored: rotating it buys no fresh bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_forwarded_header_is_ignored() {
    let server = server().await;
    let mut client = client(&server).await;
    register_and_login(&mut client, "spoof@example.com", "correct horse battery").await;
    for last in 1..=5 {
        login_from(
            &mut client,
            "spoof@example.com",
            "wrong!!!",
            &format!("198.51.100.{last}"),
        )
        .await
        .expect_err("wrong");
    }
    let refused = login_from(
        &mut client,
        "spoof@example.com",
        "correct horse battery",
        "198.51.100.99",
    )
    .await
    .expect_err("still the same client");
    assert_eq!(refused.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_change_password_are_throttled_too() {
    let server = server_with(|s| s.auth.registrations_per_client = 3).await;
    let mut client = client(&server).await;
    let pair = register_and_login(&mut client, "first@example.com", "correct horse battery").await;
    for email in ["second@example.com", "third@example.com"] {
        client
            .register(pb::RegisterRequest {
                email: email.into(),
                password: "correct horse battery".into(),
            })
            .await
            .expect("register");
    }
    let refused = client
        .register(pb::RegisterRequest {
            email: "fourth@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect_err("registrations per client");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // A stolen access token is no password oracle: wrong current passwords
    // count like failed logins of the account.
    for i in 0..5 {
        let err = client
            .change_password(bearer(
                pb::ChangePasswordRequest {
                    current_password: format!("guess number {i}"),
                    new_password: "a brand new passphrase".into(),
                },
                &pair.access_token,
            ))
            .await
            .expect_err("wrong");
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let throttled = client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "correct horse battery".into(),
                new_password: "a brand new passphrase".into(),
            },
            &pair.access_token,
        ))
        .await
        .expect_err("throttled");
    assert_eq!(throttled.code(), Code::ResourceExhausted, "{throttled:?}");
    let login_too = login(&mut client, "first@example.com", "correct horse battery")
        .await
        .expect_err("the same account and client");
    assert_eq!(login_too.code(), Code::ResourceExhausted);
}

/// This process's resident set size in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmRSS")
}

/// 200 concurrent registrations: at most `password_hash_concurrency`
/// argon2 hashes (19 MiB each) run at once, so memory stays bounded (200 at
/// once would take about 3.8 GiB); the overflow is refused, not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_registrations_keep_memory_bounded() {
    let server = server_with(|s| {
        s.auth.registrations_per_client = 1_000;
        s.auth.password_hash_concurrency = 2;
    })
    .await;
    let client = client(&server).await;
    let baseline = rss_bytes();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_bytes());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .register(pb::RegisterRequest {
                        email: format!("flood{i}@example.com"),
                        password: "correct horse battery".into(),
                    })
                    .await
            })
        })
        .collect();
    let (mut registered, mut refused) = (0, 0);
    for call in calls {
        match call.await.expect("task") {
            Ok(_) => registered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().expect("sampler");
    // Tenths of a MiB, in integers (the workspace lints floats).
    let mib = |bytes: u64| format!("{}.{}", bytes >> 20, ((bytes & 0xF_FFFF) * 10) >> 20);
    let growth = peak.saturating_sub(baseline);
    println!(
        "200 concurrent Register calls: {registered} registered, {refused} refused; \
         RSS baseline {} MiB, peak {} MiB, growth {} MiB",
        mib(baseline),
        mib(peak),
        mib(growth)
    );
    assert!(registered >= 2, "some registrations go through");
    assert!(
        growth < 256 * 1024 * 1024,
        "RSS grew by {} MiB",
        mib(growth)
    );
}
