//! `coffer.v1.AuthService` end to end: a real server on 127.0.0.1:0 and a
//! real PostgreSQL.

use std::net::SocketAddr;
use std::time::Duration;

use api::grpc::pb::auth_service_client::AuthServiceClient;
use api::grpc::pb::{self, Role};
use api::{App, Settings};
use indexer::devnet::TestDb;
use indexer::users::Users;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::wait_serving;

pub struct Server {
    pub db: TestDb,
    pub grpc: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn server() -> Server {
    let db = TestDb::new().await.expect("database");
    let mut settings = Settings::default();
    settings.database.url = db.url().as_str().into();
    settings.grpc.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.metrics.enabled = false;
    settings.events.enabled = false;
    settings.chains.bitcoin.enabled = false;
    settings.chains.ethereum.enabled = false;
    settings.chains.solana.enabled = false;
    let app = App::bind(settings).await.expect("bind");
    let grpc = app.grpc_addr().expect("grpc");
    let cancel = CancellationToken::new();
    tokio::spawn(app.run(cancel.clone()));
    wait_serving(grpc, Duration::from_secs(30)).await;
    Server { db, grpc, cancel }
}

pub async fn client(server: &Server) -> AuthServiceClient<Channel> {
    AuthServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect")
}

pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

pub async fn register_and_login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> pb::TokenPair {
    client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .expect("register");
    login(client, email, password).await.expect("login")
}

pub async fn login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner())
}

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

pub async fn who_am_i(
    client: &mut AuthServiceClient<Channel>,
    access: &str,
) -> Result<pb::WhoAmIResponse, tonic::Status> {
    client
        .who_am_i(bearer(pb::WhoAmIRequest {}, access))
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
