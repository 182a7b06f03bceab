//! The Grafana dashboard (`dashboards/coffer-overview.json`) checked the
//! only way this machine can: a real Prometheus scrapes the daemon while it
//! works, and every panel's query is run against it. Each must evaluate,
//! and the panels a test names must show at least one series.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use chains::devnet::{NodeProcess, free_port, locate_tool, node_dir};

/// A Prometheus scraping one target every second, killed on drop.
pub struct Prometheus {
    _process: NodeProcess,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    pub async fn scraping(target: SocketAddr) -> Self {
        let binary = locate_tool("prometheus").unwrap_or_else(|e| panic!("{e}"));
        let dir = node_dir("prometheus").expect("prometheus dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: coffer\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("prometheus config");
        let url = format!("http://127.0.0.1:{}", free_port());
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!(
                "--web.listen-address={}",
                url.trim_start_matches("http://")
            ));
        let http = reqwest::Client::new();
        let ready = format!("{url}/-/ready");
        let probe = move |http: reqwest::Client| {
            let ready = ready.clone();
            async move { http.get(ready).send().await?.error_for_status() }
        };
        let process = NodeProcess::start(
            "prometheus",
            cmd,
            dir,
            Duration::from_secs(60),
            &http,
            probe,
        )
        .await
        .expect("prometheus ready");
        Self {
            _process: process,
            url,
            http,
        }
    }

    /// The instant query's result series, or why Prometheus refused it.
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("GET /api/v1/query: {e}"))?;
        let body = response.text().await.map_err(|e| e.to_string())?;
        let reply: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if reply["status"] != "success" {
            return Err(body);
        }
        match &reply["data"]["result"] {
            serde_json::Value::Array(series) => Ok(series.clone()),
            // Scalars and strings: one value.
            other => Ok(vec![other.clone()]),
        }
    }
}

/// Every target of every panel: `(panel id, panel title, ref id, expr)`.
fn dashboard_queries() -> Vec<(u64, String, String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/coffer-overview.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                id,
                title.clone(),
                target["refId"].as_str().expect("refId").to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    assert!(!queries.is_empty(), "the dashboard has queries");
    queries
}

/// Runs every dashboard query against `prometheus`: all must evaluate, and
/// each `(panel, ref id)` in `with_data` must return a series, waiting up
/// to 60 s for scrapes to catch up.
pub async fn assert_dashboard_answers(prometheus: &Prometheus, with_data: &[(u64, &str)]) {
    let queries = dashboard_queries();
    for (panel, ref_id) in with_data {
        assert!(
            queries.iter().any(|(p, _, r, _)| p == panel && r == ref_id),
            "panel {panel} has no target {ref_id}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut missing = Vec::new();
        for (panel, title, ref_id, expr) in &queries {
            let series = prometheus.query(expr).await.unwrap_or_else(|refused| {
                panic!("panel {panel} ({title}) {ref_id}: `{expr}` does not evaluate: {refused}")
            });
            if series.is_empty() && with_data.contains(&(*panel, ref_id.as_str())) {
                missing.push(format!("panel {panel} ({title}) {ref_id}: `{expr}`"));
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no series within 60 s for:\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
