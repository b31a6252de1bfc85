//! Operations: a real Prometheus (Debian's 2.42, from `scripts/fetch_prometheus.sh`) scrapes a
//! running Switchyard with the scrape config and alert rules from `deploy/prometheus/`, and
//! answers PromQL over the server's histograms; the Grafana dashboard's queries run against it
//! and cover every metric family; promtool and the schema validators check the rest of
//! `deploy/`; JSON logs carry the request id and each stage's duration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_server::config::LogFormat;
use switchyard_server::metrics::Metrics;
use switchyard_tests::{
    chat_body, rag_config, stream_chat, test_config, workspace_root, TestServer,
};

fn prometheus_bin(name: &str) -> PathBuf {
    let path = workspace_root()
        .join("data/tools/prometheus/usr/bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/setup-test-env.sh (the README's test command does)",
        path.display()
    );
    path
}

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

/// Runs a command and fails the test with its output when it does not succeed.
fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("command starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules_and_their_unit_tests() {
    let promtool = prometheus_bin("promtool");
    let checked = run_ok(
        Command::new(&promtool)
            .args(["check", "config"])
            .arg(deploy("prometheus/prometheus.yml")),
    );
    // `check config` also checks the rule files the config names: the alerts must be among them.
    assert!(checked.contains("alerts.yml"), "{checked}");
    run_ok(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(deploy("prometheus/alerts.yml")),
    );
    let tested = run_ok(
        Command::new(&promtool)
            .args(["test", "rules"])
            .arg(deploy("prometheus/alerts.test.yml")),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn kubernetes_manifests_compose_file_and_dashboard_pass_their_schemas() {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "run scripts/setup-test-env.sh: it creates .venv"
    );
    let report = run_ok(
        Command::new(python)
            .arg(workspace_root().join("tests/python/check_deploy.py"))
            .current_dir(workspace_root()),
    );
    assert!(report.contains("deploy: all checks passed"), "{report}");
}

/// A Prometheus on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with `deploy/prometheus/`'s config, the target rewritten to `target`
    /// and the intervals shortened to one second.
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
        assert_eq!(
            config.matches("switchyard:8080").count(),
            1,
            "the deploy config scrapes switchyard:8080 once:\n{config}"
        );
        let config: String = config
            .replace("switchyard:8080", target)
            .lines()
            .map(|line| match line.split_once(':') {
                Some((key, _))
                    if ["scrape_interval", "evaluation_interval"].contains(&key.trim()) =>
                {
                    format!("{key}: 1s")
                }
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            deploy("prometheus/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_bin("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Polls `check` on an API answer until it returns `Some`, for up to a minute.
    async fn wait_for<T>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
        check: impl Fn(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Value::Null;
        loop {
            if let Some(answer) = self.get(path, query).await {
                if let Some(found) = check(&answer) {
                    return found;
                }
                last = answer;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last answer: {last}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A PromQL instant query, asked until its answer is a number that `accept`s (scrapes
    /// arrive once a second).
    async fn query_number(&self, promql: &str, accept: impl Fn(f64) -> bool) -> f64 {
        self.wait_for(promql, "/api/v1/query", &[("query", promql)], |answer| {
            let value = answer["data"]["result"][0]["value"][1].as_str()?;
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && accept(*v))
        })
        .await
    }
}

/// Every `expr` in a Grafana dashboard, with Grafana's interval variables filled in.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("expr", Value::String(expr)) => out.push(
                            expr.replace("$__rate_interval", "1m")
                                .replace("$__interval", "1m")
                                .replace("$__range", "5m"),
                        ),
                        _ => walk(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_server_and_answers_promql_over_its_histograms() {
    let server = TestServer::start_ready(test_config());
    let target = server.base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&target);

    // The target is up once Prometheus has scraped it.
    prometheus
        .wait_for("the target to be up", "/api/v1/targets", &[], |answer| {
            let targets = answer["data"]["activeTargets"].as_array()?;
            targets
                .iter()
                .any(|t| t["labels"]["job"] == "switchyard" && t["health"] == "up")
                .then_some(())
        })
        .await;

    // Streamed requests, timed by the client too, in two rounds with a scrape between them:
    // `rate()` needs two samples of the histogram that differ, and its series only exist
    // once a request has been observed. (A fast engine answers all of one round between two
    // scrapes, so one round alone leaves a single sample and a NaN quantile.)
    let mut slowest = Duration::ZERO;
    for (round, prompts) in [
        ["Name a colour.", "Say hello."],
        ["Count to three.", "Name a fruit."],
    ]
    .into_iter()
    .enumerate()
    {
        for prompt in prompts {
            let started = Instant::now();
            let streamed = stream_chat(&server, &chat_body(prompt, 8)).await;
            assert!(streamed.ended_with_done());
            slowest = slowest.max(started.elapsed());
        }
        // Wait for a scrape that has every request so far.
        let sent = 2.0 * (round + 1) as f64;
        let requests = prometheus
            .query_number(
                "sum(switchyard_http_requests_total{endpoint=\"/v1/chat/completions\"})",
                |n| n >= sent,
            )
            .await;
        assert_eq!(requests, sent);
    }

    // Their p95 time to first token, as an ops dashboard would ask for it.
    let p95 = prometheus
        .query_number(
            "histogram_quantile(0.95, sum by (le) (rate(switchyard_time_to_first_token_seconds_bucket[1m])))",
            f64::is_finite,
        )
        .await;
    eprintln!("p95 TTFT from Prometheus: {p95:.3} s (slowest whole request {slowest:?})");
    // histogram_quantile interpolates inside the bucket holding the 95th percentile: at most
    // the upper bound of the bucket above the slowest request.
    assert!(p95 > 0.0, "p95 TTFT {p95}");
    assert!(
        p95 <= (slowest.as_secs_f64() * 2.5).max(0.1),
        "p95 TTFT {p95} s, but the slowest whole request took {slowest:?}"
    );

    // The alert rules from deploy/ are loaded and evaluate without error.
    let rules = prometheus
        .wait_for(
            "the alert rules to be evaluated",
            "/api/v1/rules",
            &[],
            |answer| {
                let rules: Vec<Value> = answer["data"]["groups"]
                    .as_array()?
                    .iter()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .collect();
                let evaluated = !rules.is_empty()
                    && rules.iter().all(|r| {
                        r["lastEvaluation"]
                            .as_str()
                            .is_some_and(|t| !t.starts_with("0001"))
                    });
                evaluated.then_some(rules)
            },
        )
        .await;
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    assert!(rules.len() >= 5, "{rules:?}");

    // Every dashboard query is valid PromQL for this Prometheus.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/dashboards/switchyard.json")).unwrap(),
    )
    .unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    for query in &queries {
        let answer = prometheus
            .get("/api/v1/query", &[("query", query.as_str())])
            .await
            .expect("prometheus answers");
        assert_eq!(answer["status"], "success", "{query}: {answer}");
    }
    // ...and together they show every metric family the server has.
    for family in Metrics::new("llama.cpp").families() {
        assert!(
            queries.iter().any(|q| q.contains(family.as_str())),
            "no dashboard panel shows {family}"
        );
    }
}

/// Where the files the compose file and Kubernetes manifests mount must exist.
#[test]
fn files_named_by_the_compose_file_exist() {
    let compose = std::fs::read_to_string(deploy("compose.yaml")).unwrap();
    let mut named = 0;
    for line in compose.lines() {
        // Bind mounts `- ./path:/container/path[:ro]` and `dockerfile:` / `context:` entries.
        let line = line.trim().trim_start_matches("- ");
        let local = match line.strip_prefix("./") {
            Some(rest) => rest.split(':').next().map(deploy),
            None => line
                .strip_prefix("dockerfile:")
                .map(|rest| workspace_root().join(rest.trim())),
        };
        if let Some(path) = local {
            named += 1;
            assert!(
                Path::new(&path).exists(),
                "compose names {}",
                path.display()
            );
        }
    }
    assert!(
        named >= 3,
        "expected mounts and a dockerfile in compose.yaml"
    );
}

/// Log lines written by the server, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_and_each_stage_duration() {
    let captured = Captured::default();
    let sink = captured.clone();
    switchyard_server::logging::init_with_writer(LogFormat::Json, "info", move || sink.clone());
    let index = tempfile::tempdir().unwrap();
    let server = TestServer::start_ready(rag_config(index.path()));
    server.wait_index_ready(Duration::from_secs(120));
    let request_id = "ops-log-test-42";
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .header("x-request-id", request_id)
        .json(&chat_body("How do I stash my changes?", 4))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], request_id);
    let _ = response.text().await.unwrap();
    // The request's last line is written after the response; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["request_id"] == request_id))
        })
        .collect();
    let stage = |name: &str| {
        ours.iter()
            .find(|l| l["fields"]["message"] == "stage done" && l["span"]["stage"] == name)
            .unwrap_or_else(|| panic!("no `{name}` stage line for the request in:\n{text}"))
    };
    for name in ["route", "retrieve", "generate"] {
        let elapsed = stage(name)["fields"]["elapsed_ms"].as_f64().unwrap();
        assert!(elapsed >= 0.0, "{name}: {elapsed}");
    }
    let generate = &stage("generate")["fields"];
    assert!(
        generate["completion_tokens"].as_u64().unwrap() > 0,
        "{generate}"
    );
    assert!(generate["ttft_ms"].as_f64().unwrap() > 0.0, "{generate}");
    let done = ours
        .iter()
        .find(|l| l["fields"]["message"] == "request done")
        .expect("a request done line");
    assert_eq!(done["fields"]["status"], 200);
    assert_eq!(done["span"]["endpoint"], "/v1/chat/completions");
}
