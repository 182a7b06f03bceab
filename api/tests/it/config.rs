//! `coffer check-config` as a user runs it: the real binary, real files, real
//! environment variables.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn coffer(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    cmd.args(args);
    // Start from an environment without the caller's COFFER__ overrides.
    for (key, _) in std::env::vars() {
        if key.starts_with("COFFER__") || key == "COFFER_CONFIG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run coffer")
}

fn config_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(contents.as_bytes()).expect("write config");
    file
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn defaults_need_no_file_and_never_print_secrets() {
    let output = coffer(&["check-config"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("listen = \"127.0.0.1:50051\""),
        "{printed}"
    );
    assert!(printed.contains("listen = \"127.0.0.1:9464\""), "{printed}");
    assert_eq!(
        printed.matches("rpc_url = \"[REDACTED]\"").count(),
        3,
        "node URLs are secrets: {printed}"
    );
    assert!(!printed.contains("127.0.0.1:18334"), "{printed}");
    assert!(
        !printed.contains("coffer-devnet"),
        "the bitcoin RPC password must not print: {printed}"
    );
    assert!(
        !printed.contains("postgres://"),
        "the database URL is a secret: {printed}"
    );
}

#[test]
fn file_and_environment_override_defaults_in_that_order() {
    let file = config_file(
        r#"
[grpc]
listen = "127.0.0.1:6001"

[chains.solana]
enabled = false
"#,
    );
    let path = file.path().to_str().expect("utf-8 path");
    let output = coffer(
        &["--config", path, "check-config"],
        &[
            ("COFFER__GRPC__LISTEN", "127.0.0.1:6002"),
            ("COFFER__CHAINS__BITCOIN__RPC_PASSWORD", "12345"),
            ("COFFER__LOG__FORMAT", "json"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("listen = \"127.0.0.1:6002\""),
        "env beats file: {printed}"
    );
    assert!(printed.contains("format = \"json\""), "{printed}");
    assert!(
        !printed.contains("12345"),
        "a numeric secret from the environment is still a secret"
    );
    let solana = printed
        .split("[chains.solana]")
        .nth(1)
        .expect("solana section");
    assert!(solana.contains("enabled = false"), "{printed}");
    assert!(
        solana.contains("poll_interval_ms = 400"),
        "partial sections keep their own defaults: {printed}"
    );
}

#[test]
fn unknown_keys_in_a_file_are_named() {
    let file = config_file("[database]\nurll = \"postgres://x@y/z\"\n");
    let output = coffer(
        &[
            "--config",
            file.path().to_str().expect("utf-8"),
            "check-config",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("config key `database.urll`: unknown key `urll`"),
        "{err}"
    );
    assert!(
        err.contains(file.path().to_str().expect("utf-8")),
        "names the file: {err}"
    );
}

#[test]
fn unknown_keys_in_the_environment_are_named() {
    let output = coffer(
        &["check-config"],
        &[("COFFER__CHAINS__ETHEREUM__RPC_URLL", "http://x")],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("config key `chains.ethereum.rpc_urll`"),
        "{err}"
    );
    assert!(
        err.contains("COFFER__CHAINS__ETHEREUM__RPC_URLL") || err.contains("environment"),
        "{err}"
    );
}

/// Every chain names its height and batch keys alike; Solana's old names
/// are refused, naming the new key.
#[test]
fn renamed_chain_keys_name_the_new_key() {
    let file = config_file("[chains.solana]\nbatch_slots = 5\n");
    let output = coffer(
        &[
            "--config",
            file.path().to_str().expect("utf-8"),
            "check-config",
        ],
        &[("COFFER__CHAINS__SOLANA__START_SLOT", "100")],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    for (old, new) in [
        ("start_slot", "start_height"),
        ("batch_slots", "batch_blocks"),
    ] {
        let line = err
            .lines()
            .find(|line| line.contains(&format!("config key `chains.solana.{old}`")))
            .unwrap_or_else(|| panic!("names {old}: {err}"));
        assert!(line.contains(&format!("`{new}`")), "names {new}: {line}");
    }
    assert!(
        err.contains("COFFER__CHAINS__SOLANA__START_SLOT"),
        "names the variable: {err}"
    );

    let output = coffer(
        &["check-config"],
        &[
            ("COFFER__CHAINS__SOLANA__START_HEIGHT", "100"),
            ("COFFER__CHAINS__SOLANA__BATCH_BLOCKS", "5"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    let solana = printed.split("[chains.solana]").nth(1).expect("solana");
    assert!(solana.contains("start_height = 100"), "{printed}");
    assert!(solana.contains("batch_blocks = 5"), "{printed}");
}

#[test]
fn malformed_values_are_named() {
    let cases = [
        ("[grpc]\nlisten = \"not-an-address\"\n", "grpc.listen"),
        (
            "[database]\nmax_connections = -3\n",
            "database.max_connections",
        ),
        (
            "[database]\nmax_connections = 0\n",
            "database.max_connections",
        ),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        // A chain's own keys and its shared ones, unknown or mistyped.
        (
            "[chains.bitcoin]\nnetwork = \"moonnet\"\n",
            "chains.bitcoin.network",
        ),
        (
            "[chains.ethereum]\nbatch_blocks = \"ten\"\n",
            "chains.ethereum.batch_blocks",
        ),
        (
            "[[chains.ethereum.tokens]]\ncontract = \"0x12\"\nasset = \"USDC\"\n",
            "chains.ethereum.tokens.0.decimals",
        ),
        ("[chains.solana]\nbogus = 1\n", "chains.solana.bogus"),
        (
            "[chains.ethereum]\nrpc_url = \"ftp://127.0.0.1\"\n",
            "chains.ethereum.rpc_url",
        ),
        (
            "[chains.solana]\nrpc_url = \"not a url\"\n",
            "chains.solana.rpc_url",
        ),
        (
            "[chains.bitcoin]\npoll_interval_ms = 0\n",
            "chains.bitcoin.poll_interval_ms",
        ),
        (
            "[chains.bitcoin]\ncookie_file = \"/nonexistent/.cookie\"\n",
            "chains.bitcoin.cookie_file",
        ),
        ("[database]\nurl = \"mysql://nope\"\n", "database.url"),
        ("chains = 3\n", "chains"),
        ("[auth]\nactive_kid = \"nope\"\n", "auth.active_kid"),
        (
            "[auth]\nactive_kid = \"k\"\n[[auth.keys]]\nkid = \"k\"\nsecret = \"short\"\n",
            "auth.keys[0].secret",
        ),
        ("network = \"mainnet\"\n", "auth.keys[0].secret"),
        ("network = \"moonnet\"\n", "network"),
        ("[auth]\naccess_ttl_secs = 86400\n", "auth.access_ttl_secs"),
        (
            "[auth]\ntrusted_proxies = [\"10.0.0.1\", \"10.0.0.0/33\"]\n",
            "auth.trusted_proxies[1]",
        ),
        (
            "[auth]\nclient_address_header = \"x forwarded\"\n",
            "auth.client_address_header",
        ),
        (
            "[auth]\nlogin_failures_per_account = 0\n",
            "auth.login_failures_per_account",
        ),
        ("[grpc\nlisten = 1\n", "TOML parse error at line 1"),
        (
            "[chains.ethereum]\nconfirmations = 0\n",
            "chains.ethereum.confirmations",
        ),
        (
            "[chains.bitcoin]\ngap_limit = 0\n",
            "chains.bitcoin.gap_limit",
        ),
        (
            "[[chains.solana.tokens]]\nmint = \"not-base58-0OIl\"\nasset = \"USDC\"\ndecimals = 6\n",
            "chains.solana.tokens[0].mint",
        ),
        (
            "[[chains.ethereum.tokens]]\ncontract = \"0x12\"\nasset = \"USDC\"\ndecimals = 6\n",
            "chains.ethereum.tokens[0].contract",
        ),
        (
            "[[chains.ethereum.tokens]]\ncontract = \"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48\"\nasset = \"ETH\"\ndecimals = 6\n",
            "chains.ethereum.tokens[0].asset",
        ),
        (
            "[grpc]\nrequest_timeout_ms = 0\n",
            "grpc.request_timeout_ms",
        ),
        ("[grpc]\nconcurrency_limit = 0\n", "grpc.concurrency_limit"),
        ("[grpc]\nmax_message_bytes = 10\n", "grpc.max_message_bytes"),
        (
            "[database]\nbackground_max_connections = 0\n",
            "database.background_max_connections",
        ),
        (
            "[chains.ethereum]\nchain_id = 0\n",
            "chains.ethereum.chain_id",
        ),
        (
            "[chains.solana]\ngenesis_hash = \"not-base58-0OIl\"\n",
            "chains.solana.genesis_hash",
        ),
        // Mainnet's chains only under `network = "mainnet"`.
        (
            "[chains.ethereum]\nchain_id = 1\n",
            "chains.ethereum.chain_id",
        ),
        (
            "[chains.solana]\ngenesis_hash = \"5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d\"\n",
            "chains.solana.genesis_hash",
        ),
        (
            "[chains.bitcoin]\nnetwork = \"bitcoin\"\n",
            "chains.bitcoin.network",
        ),
        (
            "[grpc.tls]\ncert_file = \"/nonexistent/cert.pem\"\n",
            "grpc.tls.key_file",
        ),
        (
            "[grpc.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
            "grpc.tls.cert_file",
        ),
        // The Ethereum payout loop.
        (
            "[withdrawals.ethereum]\nmax_fee_per_gas_cap = \"lots\"\n",
            "withdrawals.ethereum.max_fee_per_gas_cap",
        ),
        (
            "[withdrawals.ethereum]\nmax_fee_per_gas_cap = 0\n",
            "withdrawals.ethereum.max_fee_per_gas_cap",
        ),
        (
            "[withdrawals.ethereum]\nmin_priority_fee_per_gas = 1.5\n",
            "withdrawals.ethereum.min_priority_fee_per_gas",
        ),
        (
            "[withdrawals.ethereum]\ntip_percentile = 101\n",
            "withdrawals.ethereum.tip_percentile",
        ),
        (
            "[withdrawals.ethereum]\nreplace_after_blocks = 0\n",
            "withdrawals.ethereum.replace_after_blocks",
        ),
        (
            "[withdrawals.ethereum]\nrebroadcast_after_blocks = 0\n",
            "withdrawals.ethereum.rebroadcast_after_blocks",
        ),
        (
            "[withdrawals.ethereum]\nmax_send_rejections = 0\n",
            "withdrawals.ethereum.max_send_rejections",
        ),
        (
            "[withdrawals.ethereum]\nconcurrency = 65\n",
            "withdrawals.ethereum.concurrency",
        ),
        (
            "[withdrawals.ethereum]\npoll_interval_ms = 0\n",
            "withdrawals.ethereum.poll_interval_ms",
        ),
        (
            "[withdrawals.ethereum]\nmax_fee_per_gas = 1\n",
            "withdrawals.ethereum.max_fee_per_gas",
        ),
        (
            "[withdrawals.ethereum.sweep_thresholds]\nUSDC = \"1000000\"\n",
            "withdrawals.ethereum.sweep_thresholds.USDC",
        ),
        (
            "[withdrawals.ethereum.sweep_thresholds]\nETH = \"0\"\n",
            "withdrawals.ethereum.sweep_thresholds.ETH",
        ),
    ];
    for (contents, key) in cases {
        let file = config_file(contents);
        let output = coffer(
            &[
                "--config",
                file.path().to_str().expect("utf-8"),
                "check-config",
            ],
            &[],
        );
        let err = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{contents:?} must be refused: {err}"
        );
        let named = err.contains(&format!("config key `{key}`"))
            || (key.starts_with("TOML") && err.contains(key));
        assert!(named, "{contents:?} must name `{key}`: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `[withdrawals.ethereum]` from a file, overridden key by key from the
/// environment (a sweep threshold's code arrives lowercased), and shown by
/// `check-config`.
#[test]
fn payout_loop_keys_load_from_file_and_environment() {
    let file = config_file(
        r#"
[[chains.ethereum.tokens]]
contract = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
asset = "USDC"
decimals = 6

[withdrawals.ethereum]
replace_after_blocks = 3
max_fee_per_gas_cap = "500000000000"
tip_percentile = 40

[withdrawals.ethereum.sweep_thresholds]
ETH = "10000000000000000"
USDC = "1000000"
"#,
    );
    let path = file.path().to_str().expect("utf-8");
    let output = coffer(
        &["--config", path, "check-config"],
        &[
            (
                "COFFER__WITHDRAWALS__ETHEREUM__MAX_FEE_PER_GAS_CAP",
                "400000000000",
            ),
            ("COFFER__WITHDRAWALS__ETHEREUM__TIP_PERCENTILE", "62.5"),
            ("COFFER__WITHDRAWALS__ETHEREUM__POLL_INTERVAL_MS", "500"),
            (
                "COFFER__WITHDRAWALS__ETHEREUM__SWEEP_THRESHOLDS__ETH",
                "20000000000000000",
            ),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    let section = printed
        .split("[withdrawals.ethereum]")
        .nth(1)
        .expect("check-config shows [withdrawals.ethereum]");
    for line in [
        "enabled = true",
        "poll_interval_ms = 500",
        "max_fee_per_gas_cap = \"400000000000\"",
        "min_priority_fee_per_gas = \"1000000000\"",
        "tip_percentile = 62.5",
        "replace_after_blocks = 3",
        "concurrency = 4",
        "ETH = \"20000000000000000\"",
        "USDC = \"1000000\"",
    ] {
        assert!(section.contains(line), "{line} in:\n{printed}");
    }
    assert!(
        printed.contains("[withdrawals.ethereum.sweep_thresholds]"),
        "{printed}"
    );

    // A bad value from the environment names the key and the variable.
    let output = coffer(
        &["check-config"],
        &[("COFFER__WITHDRAWALS__ETHEREUM__MAX_FEE_PER_GAS_CAP", "lots")],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("config key `withdrawals.ethereum.max_fee_per_gas_cap`")
            && err.contains("COFFER__WITHDRAWALS__ETHEREUM__MAX_FEE_PER_GAS_CAP"),
        "{err}"
    );
    // So does a threshold for an asset Ethereum does not have.
    let output = coffer(
        &["check-config"],
        &[("COFFER__WITHDRAWALS__ETHEREUM__SWEEP_THRESHOLDS__DOGE", "1")],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("config key `withdrawals.ethereum.sweep_thresholds.DOGE`"),
        "{err}"
    );
    // Off, the loop's keys are not checked.
    let output = coffer(
        &["check-config"],
        &[
            ("COFFER__WITHDRAWALS__ETHEREUM__ENABLED", "false"),
            ("COFFER__WITHDRAWALS__ETHEREUM__CONCURRENCY", "0"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_missing_config_file_is_an_error() {
    let output = coffer(
        &["--config", "/nonexistent/coffer.toml", "check-config"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/coffer.toml does not exist"));
}

#[test]
fn the_seed_is_checked_and_the_devnet_phrase_refused_on_mainnet() {
    let seed = config_file("abandon abandon abandon\n");
    let bad = config_file(&format!(
        "[signer]\nseed_file = \"{}\"\n",
        seed.path().display()
    ));
    let output = coffer(
        &[
            "--config",
            bad.path().to_str().expect("utf-8"),
            "check-config",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("config section `signer`") && err.contains("12, 15, 18, 21 or 24 words"),
        "{err}"
    );
    assert!(!err.contains("abandon"), "the phrase never prints: {err}");

    let devnet = config_file(&format!("{}\n", signer::INSECURE_DEVNET_MNEMONIC));
    let mainnet = config_file(&format!(
        "network = \"mainnet\"\n[signer]\nseed_file = \"{}\"\n[chains.bitcoin]\nnetwork = \"bitcoin\"\nrpc_password = \"not-the-devnet-one\"\n[auth]\nactive_kid = \"k\"\n[[auth.keys]]\nkid = \"k\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
        devnet.path().display()
    ));
    let output = coffer(
        &[
            "--config",
            mainnet.path().to_str().expect("utf-8"),
            "check-config",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("insecure devnet mnemonic is refused on mainnet"),
        "{}",
        stderr(&output)
    );

    let no_seed = config_file("network = \"mainnet\"\n");
    let output = coffer(
        &[
            "--config",
            no_seed.path().to_str().expect("utf-8"),
            "check-config",
        ],
        &[],
    );
    assert!(
        stderr(&output).contains("config key `signer.seed_file`: mainnet needs a seed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn rpc_urls_are_secrets() {
    let secrets = [
        (
            "COFFER__CHAINS__ETHEREUM__RPC_URL",
            "https://mainnet.infura.io/v3/eth-key-0123",
        ),
        (
            "COFFER__CHAINS__BITCOIN__RPC_URL",
            "http://user:btc-pass-4567@127.0.0.1:8332/",
        ),
        (
            "COFFER__CHAINS__SOLANA__RPC_URL",
            "https://rpc.example/?api-key=sol-key-89ab",
        ),
    ];
    let output = coffer(&["check-config"], &secrets);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    for needle in ["eth-key-0123", "btc-pass-4567", "sol-key-89ab", "infura"] {
        assert!(!printed.contains(needle), "{needle} printed: {printed}");
    }

    // Nor does an error about one repeat it.
    let output = coffer(
        &["check-config"],
        &[(
            "COFFER__CHAINS__ETHEREUM__RPC_URL",
            "ftp://user:eth-key-cdef@host/",
        )],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("config key `chains.ethereum.rpc_url`"),
        "{err}"
    );
    assert!(!err.contains("eth-key-cdef"), "{err}");
}

/// A mainnet configuration that passes, to which each case adds one flaw.
fn mainnet_config(seed: &Path) -> String {
    format!(
        "network = \"mainnet\"\n\
         [signer]\nseed_file = \"{}\"\n\
         [auth]\nactive_kid = \"k\"\n[[auth.keys]]\nkid = \"k\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
         [chains.bitcoin]\nnetwork = \"bitcoin\"\nrpc_password = \"not-the-devnet-one\"\n",
        seed.display()
    )
}

fn tls_fixture(name: &str) -> String {
    format!("{}/tests/it/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn mainnet_refuses_devnet_settings_and_plaintext_grpc_off_loopback() {
    let seed = config_file(
        "legal winner thank year wave sausage worth useful legal winner thank yellow\n",
    );
    let file = config_file(&mainnet_config(seed.path()));
    let path = file.path().to_str().expect("utf-8");
    let output = coffer(&["--config", path, "check-config"], &[]);
    assert!(
        output.status.success(),
        "the base passes: {}",
        stderr(&output)
    );

    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("COFFER__CHAINS__BITCOIN__RPC_PASSWORD", "coffer-devnet")],
            "chains.bitcoin.rpc_password",
        ),
        (
            &[("COFFER__CHAINS__BITCOIN__CONFIRMATIONS", "1")],
            "chains.bitcoin.confirmations",
        ),
        (
            &[("COFFER__CHAINS__ETHEREUM__USE_FINALIZED_TAG", "false")],
            "chains.ethereum.use_finalized_tag",
        ),
        (
            &[("COFFER__GRPC__LISTEN", "0.0.0.0:50051")],
            "grpc.tls.cert_file",
        ),
        (
            &[("COFFER__GRPC__LISTEN", "[::]:50051")],
            "grpc.tls.cert_file",
        ),
        (
            &[("COFFER__CHAINS__ETHEREUM__CHAIN_ID", "11155111")],
            "chains.ethereum.chain_id",
        ),
        (
            &[(
                "COFFER__CHAINS__SOLANA__GENESIS_HASH",
                "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY",
            )],
            "chains.solana.genesis_hash",
        ),
    ];
    for (env, key) in cases {
        let output = coffer(&["--config", path, "check-config"], env);
        let err = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{env:?} must be refused: {err}"
        );
        assert!(
            err.contains(&format!("config key `{key}`")),
            "{env:?} must name `{key}`: {err}"
        );
    }

    // Off loopback over TLS, and the devnet password under a cookie file,
    // are fine.
    let cookie = config_file("__cookie__:abc\n");
    let (cert, key) = (tls_fixture("server.pem"), tls_fixture("server.key"));
    let output = coffer(
        &["--config", path, "check-config"],
        &[
            ("COFFER__GRPC__LISTEN", "0.0.0.0:50051"),
            ("COFFER__GRPC__TLS__CERT_FILE", &cert),
            ("COFFER__GRPC__TLS__KEY_FILE", &key),
            ("COFFER__CHAINS__BITCOIN__RPC_PASSWORD", "coffer-devnet"),
            (
                "COFFER__CHAINS__BITCOIN__COOKIE_FILE",
                cookie.path().to_str().expect("utf-8"),
            ),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn tls_files_that_do_not_load_are_named() {
    let garbage = config_file("not a certificate\n");
    let garbage = garbage.path().to_str().expect("utf-8");
    let (cert, key) = (tls_fixture("server.pem"), tls_fixture("server.key"));
    for (cert_file, key_file) in [(garbage, key.as_str()), (cert.as_str(), garbage)] {
        let output = coffer(
            &["check-config"],
            &[
                ("COFFER__GRPC__TLS__CERT_FILE", cert_file),
                ("COFFER__GRPC__TLS__KEY_FILE", key_file),
            ],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{err}");
        assert!(err.contains("config key `grpc.tls.cert_file`"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let output = coffer(
        &["check-config"],
        &[
            ("COFFER__GRPC__TLS__CERT_FILE", &cert),
            ("COFFER__GRPC__TLS__KEY_FILE", &key),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}
