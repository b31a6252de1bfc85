//! API keys and scopes over real HTTP: no key or an unknown key is 401, a key without the
//! route's scope is 403 (both in the OpenAI error shape), probes stay open, `/metrics` needs the
//! `metrics` scope when `metrics_auth` is on, and a server with no keys and auth not explicitly
//! off refuses to start.

use reqwest::{Client, RequestBuilder};
use serde_json::{json, Value};
use switchyard_server::{Config, Server};
use switchyard_tests::{chat_body, test_config, TestServer};

const APP: &str = "sk-app-test-0123456789";
const OPS: &str = "sk-ops-test-0123456789";
const MON: &str = "sk-mon-test-0123456789";
const TENANT_OPS: &str = "sk-acme-ops-test-0123456789";

async fn send(request: RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn assert_error(body: &Value, kind: &str, code: &str) {
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_scopes_guard_every_route_group() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"app\"\nkey = \"{APP}\"\nscopes = [\"inference\"]\n\n\
             [[keys]]\nname = \"ops\"\nkey = \"{OPS}\"\nscopes = [\"admin\"]\n\n\
             [[keys]]\nname = \"mon\"\nkey = \"{MON}\"\nscopes = [\"metrics\"]\n"
        ),
    )
    .unwrap();
    let server = TestServer::start_ready(Config {
        auth_disabled: false,
        api_keys_file: Some(keys),
        metrics_auth: true,
        ..test_config()
    });
    let client = Client::new();
    let chat = || {
        client
            .post(server.url("/v1/chat/completions"))
            .json(&chat_body("Say hi.", 2))
    };

    // No key, an unknown key, a malformed header: 401.
    let (status, body) = send(chat()).await;
    assert_eq!(status, 401);
    assert_error(&body, "authentication_error", "invalid_api_key");
    let (status, body) = send(chat().bearer_auth("sk-app-test-0123456780")).await;
    assert_eq!(status, 401);
    assert_error(&body, "authentication_error", "invalid_api_key");
    let (status, _) = send(chat().header("authorization", format!("Basic {APP}"))).await;
    assert_eq!(status, 401);

    // The inference key: chat and models, by bearer token or x-api-key.
    let (status, body) = send(chat().bearer_auth(APP)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        client
            .get(server.url("/v1/models"))
            .header("x-api-key", APP),
    )
    .await;
    assert_eq!(status, 200);
    // ...but not the admin routes.
    for path in ["/v1/documents", "/v1/lora_adapters"] {
        let (status, body) = send(client.get(server.url(path)).bearer_auth(APP)).await;
        assert_eq!(status, 403, "{path}");
        assert_error(&body, "permission_error", "insufficient_scope");
        assert!(body["error"]["message"].as_str().unwrap().contains("admin"));
    }

    // The admin key passes the admin routes (this server has no index and no adapters, so
    // the handlers themselves answer 503 and 404) and is refused inference.
    let (status, body) = send(client.get(server.url("/v1/documents")).bearer_auth(OPS)).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("index_unavailable"))
    );
    let (status, body) = send(client.get(server.url("/v1/lora_adapters")).bearer_auth(OPS)).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("adapters_disabled"))
    );
    let (status, body) = send(chat().bearer_auth(OPS)).await;
    assert_eq!(status, 403);
    assert_error(&body, "permission_error", "insufficient_scope");

    // Probes are open; metrics need the metrics scope here.
    for path in ["/health", "/ready"] {
        let status = client.get(server.url(path)).send().await.unwrap().status();
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = send(client.get(server.url("/metrics"))).await;
    assert_eq!(status, 401);
    let (status, _) = send(client.get(server.url("/metrics")).bearer_auth(APP)).await;
    assert_eq!(status, 403);
    let metrics = client
        .get(server.url("/metrics"))
        .bearer_auth(MON)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    // Refused requests are counted by status class like any other.
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("switchyard_http_requests_total{endpoint=\"/v1/chat/completions\",method=\"POST\",status=\"4xx\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_without_keys_refuses_to_start_unless_auth_is_explicitly_off() {
    let refused = Server::bind(Config {
        auth_disabled: false,
        ..test_config()
    })
    .await;
    let err = refused.err().expect("no keys, auth on: refused");
    assert!(err.to_string().contains("no API keys"), "{err}");
    assert!(Server::bind(test_config()).await.is_ok());
}

#[tokio::test]
async fn auth_off_serves_loopback_only_unless_the_insecure_flag_says_otherwise() {
    let public = |insecure: bool| Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        insecure_allow_public_without_auth: insecure,
        ..test_config()
    };
    let err = Server::bind(public(false))
        .await
        .err()
        .expect("auth off on 0.0.0.0: refused");
    assert!(
        err.to_string()
            .contains("insecure_allow_public_without_auth"),
        "{err}"
    );
    assert!(Server::bind(public(true)).await.is_ok());
    // Loopback with auth off is the local demo: allowed, IPv6 too.
    let v6 = Config {
        listen: "[::1]:0".parse().unwrap(),
        ..test_config()
    };
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        assert!(Server::bind(v6).await.is_ok());
    }
}

/// Adapters serve every tenant, so a tenant-bound admin key may list them but not change
/// them; an admin key bound to no tenant may.
#[tokio::test(flavor = "multi_thread")]
async fn adapter_changes_need_an_admin_key_bound_to_no_tenant() {
    let adapter_root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"ops\"\nkey = \"{OPS}\"\nscopes = [\"admin\"]\n\n\
             [[keys]]\nname = \"acme-ops\"\nkey = \"{TENANT_OPS}\"\nscopes = [\"admin\"]\ntenant = \"acme\"\n"
        ),
    )
    .unwrap();
    let server = TestServer::start_ready(Config {
        auth_disabled: false,
        api_keys_file: Some(keys),
        adapters_enabled: true,
        adapter_root: adapter_root.path().to_path_buf(),
        adapter_work_dir: work.path().join("generations"),
        ..test_config()
    });
    let client = Client::new();
    let calls = |key: &str| {
        vec![
            client
                .post(server.url("/v1/load_lora_adapter"))
                .bearer_auth(key)
                .json(&json!({"lora_name": "fmt", "lora_path": "missing"})),
            client
                .post(server.url("/v1/unload_lora_adapter"))
                .bearer_auth(key)
                .json(&json!({"lora_name": "fmt"})),
            client
                .post(server.url("/v1/lora_adapters/fmt/activate"))
                .bearer_auth(key)
                .json(&json!({"generation": "0123456789ab"})),
        ]
    };
    for request in calls(TENANT_OPS) {
        let (status, body) = send(request).await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "permission_error", "global_admin_required");
    }
    // The global admin key reaches the registry (which refuses a missing adapter for its
    // own reasons, never for the key).
    for request in calls(OPS) {
        let (status, body) = send(request).await;
        assert!(matches!(status, 400 | 404), "{status} {body}");
    }
    let (status, body) = send(
        client
            .get(server.url("/v1/lora_adapters"))
            .bearer_auth(TENANT_OPS),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Two tenants with overlapping content, each with keys bound to it: each key's documents
/// API and `rag` answers see only its own tenant's chunks (the filter runs inside tantivy and
/// the vector store), and asking for the other tenant is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_bound_to_a_tenant_never_sees_another_tenants_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let mut file = String::new();
    for tenant in ["acme", "globex"] {
        for scope in ["admin", "inference"] {
            file.push_str(&format!(
                "[[keys]]\nname = \"{tenant}-{scope}\"\nkey = \"sk-{tenant}-{scope}-0123456789\"\nscopes = [\"{scope}\"]\ntenant = \"{tenant}\"\n\n"
            ));
        }
    }
    std::fs::write(&keys, file).unwrap();
    let index = dir.path().join("index");
    let server = TestServer::start_ready(Config {
        auth_disabled: false,
        api_keys_file: Some(keys),
        ..switchyard_tests::rag_config(&index)
    });
    server.wait_index_ready(std::time::Duration::from_secs(120));
    let client = Client::new();
    let key = |tenant: &str, scope: &str| format!("sk-{tenant}-{scope}-0123456789");

    // The same page in both tenants; every line of globex's copy starts with "globex", so
    // each of its chunks is recognisable.
    let page = switchyard_tests::corpus_text("git-stash.txt");
    let marked: Vec<String> = page.lines().map(|l| format!("globex {l}")).collect();
    for (tenant, text) in [("acme", page.clone()), ("globex", marked.join("\n"))] {
        let (status, body) = send(
            client
                .post(server.url("/v1/documents"))
                .bearer_auth(key(tenant, "admin"))
                .json(&json!({"id": "git-stash.txt", "text": text})),
        )
        .await;
        assert_eq!(status, 201, "{tenant}: {body}");
    }
    // Each admin key lists its own copy only, and may not name the other tenant.
    for tenant in ["acme", "globex"] {
        let (status, list) = send(
            client
                .get(server.url("/v1/documents"))
                .bearer_auth(key(tenant, "admin")),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    }
    let (status, body) = send(
        client
            .get(server.url("/v1/documents?tenant=globex"))
            .bearer_auth(key("acme", "admin")),
    )
    .await;
    assert_eq!(status, 403);
    assert_error(&body, "permission_error", "tenant_forbidden");

    // rag answers cite only the key's tenant.
    for tenant in ["acme", "globex"] {
        let (status, body) = send(
            client
                .post(server.url("/v1/chat/completions"))
                .bearer_auth(key(tenant, "inference"))
                .json(&json!({
                    "model": Config::default().model_id, "route": "rag", "max_tokens": 2,
                    "messages": [{"role": "user", "content": "how do I stash my changes with git stash"}]
                })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let citations = body["citations"].as_array().unwrap();
        assert!(!citations.is_empty(), "{body}");
        for citation in citations {
            let text = citation["text"].as_str().unwrap();
            assert_eq!(
                text.contains("globex"),
                tenant == "globex",
                "{tenant} was given another tenant's chunk: {text}"
            );
        }
    }
}
