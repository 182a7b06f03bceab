//! The limits driven directly, without a server.

use std::net::IpAddr;

use super::*;

fn config() -> ThrottleConfig {
    ThrottleConfig {
        per_account_and_client: 3,
        per_client: 10,
        per_account: 6,
        window: Duration::from_secs(60),
        backoff_max: Duration::from_secs(60),
        registrations_per_client: 4,
        max_keys: 1_000,
    }
}

fn v4(last: u8) -> Client {
    Client::from_ip(Some(IpAddr::from([10, 0, 0, last])))
}

fn fail(throttle: &Arc<Throttle>, account: &str, client: Client) {
    throttle
        .begin_password_check(account, client)
        .expect("allowed")
        .failed();
}

#[test]
fn reservations_count_before_the_outcome_is_known() {
    let throttle = Throttle::new(config());
    let held: Vec<Attempt> = (0..3)
        .map(|_| {
            throttle
                .begin_password_check("a@example.com", v4(1))
                .expect("allowed")
        })
        .collect();
    assert!(
        throttle
            .begin_password_check("a@example.com", v4(1))
            .is_err(),
        "three in flight use up the limit of three"
    );
    drop(held);
    assert!(
        throttle
            .begin_password_check("a@example.com", v4(1))
            .is_ok(),
        "abandoned attempts are released"
    );
}

#[test]
fn strangers_cannot_lock_out_the_victim() {
    let throttle = Throttle::new(config());
    let (attacker, victim) = (v4(66), v4(7));
    throttle
        .begin_password_check("victim@example.com", victim)
        .expect("allowed")
        .succeeded();
    for _ in 0..3 {
        fail(&throttle, "victim@example.com", attacker);
    }
    let refused = throttle
        .begin_password_check("victim@example.com", attacker)
        .expect_err("the attacker is throttled");
    assert!(refused.retry_after > Duration::from_secs(50), "{refused:?}");
    assert!(
        throttle
            .begin_password_check("victim@example.com", victim)
            .is_ok(),
        "the victim is not"
    );
    // From many addresses the attacker exhausts the per-account limit:
    // new addresses then back off, the victim's known address does not.
    for last in 100..103 {
        fail(&throttle, "victim@example.com", v4(last));
    }
    let backoff = throttle
        .begin_password_check("victim@example.com", v4(200))
        .expect_err("per-account backoff");
    assert!(
        backoff.retry_after <= Duration::from_secs(2),
        "a backoff, not a lock-out: {backoff:?}"
    );
    assert!(
        throttle
            .begin_password_check("victim@example.com", victim)
            .is_ok(),
        "a client that logged in before skips the backoff"
    );
    for i in 0..7 {
        fail(&throttle, &format!("user{i}@example.com"), attacker);
    }
    assert!(
        throttle
            .begin_password_check("fresh@example.com", attacker)
            .is_err(),
        "per-client cap over all accounts"
    );
}

#[test]
fn the_account_backoff_doubles_up_to_its_cap() {
    let throttle = Throttle::new(ThrottleConfig {
        per_account: 2,
        backoff_max: Duration::from_secs(5),
        ..config()
    });
    let now = Instant::now();
    let key = Key::Account("a@example.com".into());
    let mut waits = Vec::new();
    let mut state = throttle.state();
    for _ in 0..6 {
        let bucket = state.touch(&key, 100);
        // One more failure, just now.
        bucket.record(now, 100);
        waits.push(
            bucket
                .check_backoff(2, Duration::from_secs(60), Duration::from_secs(5), now)
                .err()
                .map(|w| w.as_secs()),
        );
    }
    assert_eq!(
        waits,
        vec![None, Some(1), Some(2), Some(4), Some(5), Some(5)]
    );
}

#[test]
fn failures_expire_with_the_window() {
    let throttle = Throttle::new(ThrottleConfig {
        per_account_and_client: 1,
        window: Duration::from_millis(30),
        ..config()
    });
    fail(&throttle, "a@example.com", Client::Unknown);
    assert!(
        throttle
            .begin_password_check("a@example.com", Client::Unknown)
            .is_err()
    );
    std::thread::sleep(Duration::from_millis(40));
    assert!(
        throttle
            .begin_password_check("a@example.com", Client::Unknown)
            .is_ok()
    );
}

#[test]
fn ipv6_clients_are_grouped_by_slash_64() {
    let ip = |text: &str| Client::from_ip(Some(text.parse().expect("ip")));
    assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
    assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
    assert_eq!(ip("::ffff:10.0.0.1"), v4(1), "IPv4-mapped is IPv4");
    let throttle = Throttle::new(config());
    for n in 0..3 {
        fail(&throttle, "a@example.com", ip(&format!("2001:db8::{n}")));
    }
    assert!(
        throttle
            .begin_password_check("a@example.com", ip("2001:db8::abcd"))
            .is_err(),
        "a new address in the same /64 is the same client"
    );
    assert!(
        throttle
            .begin_password_check("a@example.com", ip("2001:db8:0:1::1"))
            .is_ok()
    );
}

#[test]
fn a_full_table_evicts_the_least_recently_used_bucket() {
    let throttle = Throttle::new(ThrottleConfig {
        per_account_and_client: 1,
        max_keys: 9,
        ..config()
    });
    // Each failure fills three buckets: pair, client, account.
    fail(&throttle, "old@example.com", v4(1));
    fail(&throttle, "mid@example.com", v4(2));
    fail(&throttle, "new@example.com", v4(3));
    assert_eq!(throttle.keys(), 9);
    // A refused attempt still marks old@'s buckets as used, so the
    // fourth account evicts mid@'s, the least recently used.
    assert!(
        throttle
            .begin_password_check("old@example.com", v4(1))
            .is_err()
    );
    fail(&throttle, "fourth@example.com", v4(4));
    assert_eq!(throttle.keys(), 9, "bounded, never cleared");
    for (account, client) in [
        ("old@example.com", v4(1)),
        ("new@example.com", v4(3)),
        ("fourth@example.com", v4(4)),
    ] {
        assert!(
            throttle.begin_password_check(account, client).is_err(),
            "{account} is still throttled"
        );
    }
    assert!(
        throttle
            .begin_password_check("mid@example.com", v4(2))
            .is_ok(),
        "mid@ was evicted"
    );
}

#[test]
fn registrations_count_per_client_and_taken_emails_count_as_failures() {
    let throttle = Throttle::new(ThrottleConfig {
        registrations_per_client: 3,
        per_client: 2,
        ..config()
    });
    let register = |client| throttle.begin_registration(client).expect("allowed");
    register(v4(1)).succeeded();
    register(v4(1)).failed();
    register(v4(1)).failed();
    assert!(
        throttle.begin_registration(v4(1)).is_err(),
        "two taken emails use up the client's failures"
    );
    for _ in 0..3 {
        register(v4(2)).succeeded();
    }
    assert!(
        throttle.begin_registration(v4(2)).is_err(),
        "three registrations per window"
    );
}
