//! API keys and scopes. Keys come from a TOML file (`api_keys_file`) and/or the
//! `SWITCHYARD_API_KEYS` variable; only their sha256 is kept in memory, and a presented key is
//! hashed and compared with every known hash in constant time. Each route group requires one
//! scope: `inference` (chat, embeddings, models), `admin` (documents, adapters) or `metrics`
//! (`/metrics`, when `metrics_auth` is on). No key or an unknown key is 401; a known key
//! without the scope is 403. A key may be bound to a tenant.

use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::error::ApiError;
use crate::state::AppState;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Inference,
    Admin,
    Metrics,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Inference => "inference",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "inference" => Some(Scope::Inference),
            "admin" => Some(Scope::Admin),
            "metrics" => Some(Scope::Metrics),
            _ => None,
        }
    }
}

/// A known key: its hash, never the key itself.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    hash: [u8; 32],
    pub scopes: Vec<Scope>,
    pub tenant: Option<String>,
}

/// The caller of a request, put in its extensions by [`require`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_name: String,
    pub tenant: Option<String>,
}

/// The tenant a request acts in: its key's tenant when the key is bound to one (asking for
/// another is refused), else the requested one, else `default`.
pub fn resolve_tenant(
    caller: Option<&Caller>,
    requested: Option<String>,
    default: &str,
) -> Result<String, ApiError> {
    match (
        caller.and_then(|c| c.tenant.as_ref().map(|t| (c, t))),
        requested,
    ) {
        (Some((_, bound)), None) => Ok(bound.clone()),
        (Some((_, bound)), Some(asked)) if &asked == bound => Ok(asked),
        (Some((caller, _)), Some(asked)) => Err(ApiError::TenantForbidden {
            key: caller.key_name.clone(),
            tenant: asked,
        }),
        (None, requested) => Ok(requested.unwrap_or_else(|| default.to_string())),
    }
}

/// One `[[keys]]` entry of the keys file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    /// The key itself, or
    key: Option<String>,
    /// its sha256 in hex (so the file need not hold the secret).
    key_sha256: Option<String>,
    scopes: Vec<Scope>,
    tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Equal in time that depends only on the length, which is fixed.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: Vec<ApiKey>,
}

impl KeyStore {
    /// Keys from the file (if any) and the environment specification (if any).
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        if let Some(path) = file {
            let invalid = |why: String| {
                ConfigError::Invalid(format!("api_keys_file {}: {why}", path.display()))
            };
            let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
            let parsed: KeysFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            for entry in parsed.keys {
                let hash = match (&entry.key, &entry.key_sha256) {
                    (Some(key), None) => sha256(key),
                    (None, Some(hex)) => parse_hex(hex).ok_or_else(|| {
                        invalid(format!("{}: key_sha256 is not 64 hex digits", entry.name))
                    })?,
                    _ => {
                        return Err(invalid(format!(
                            "{}: give exactly one of key and key_sha256",
                            entry.name
                        )))
                    }
                };
                keys.push(ApiKey {
                    name: entry.name,
                    hash,
                    scopes: entry.scopes,
                    tenant: entry.tenant,
                });
            }
        }
        if let Some(spec) = env {
            keys.extend(parse_env(spec)?);
        }
        for key in &keys {
            if key.scopes.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "API key {} has no scopes",
                    key.name
                )));
            }
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key matching `presented`, comparing against every key so the time does not say
    /// which one (or how much of one) matched.
    pub fn authenticate(&self, presented: &str) -> Option<&ApiKey> {
        let hash = sha256(presented);
        let mut found = None;
        for key in &self.keys {
            if same(&key.hash, &hash) && found.is_none() {
                found = Some(key);
            }
        }
        found
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `SWITCHYARD_API_KEYS`: comma-separated `KEY:SCOPE+SCOPE[:TENANT]`, e.g.
/// `sk-app:inference:acme,sk-ops:admin+metrics`. Keys are named `env-1`, `env-2`, ...
fn parse_env(spec: &str) -> Result<Vec<ApiKey>, ConfigError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(n, item)| {
            let name = format!("env-{}", n + 1);
            let mut parts = item.split(':');
            let (Some(key), Some(scopes)) = (parts.next(), parts.next()) else {
                return Err(ConfigError::Invalid(format!(
                    "SWITCHYARD_API_KEYS entry {name} is not KEY:SCOPE+SCOPE[:TENANT]"
                )));
            };
            let tenant = parts.next().map(str::to_string);
            let scopes = scopes
                .split('+')
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "SWITCHYARD_API_KEYS entry {name}: unknown scope `{s}` (inference, admin, metrics)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if key.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "SWITCHYARD_API_KEYS entry {name}: a key needs at least 16 characters"
                )));
            }
            Ok(ApiKey {
                name,
                hash: sha256(key),
                scopes,
                tenant,
            })
        })
        .collect()
}

/// The key of a request: `Authorization: Bearer KEY` (what OpenAI clients send) or `x-api-key`.
fn presented_key(request: &Request) -> Option<&str> {
    let headers = request.headers();
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim);
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok())
}

/// Middleware: admits the request when auth is off or its key has `scope`.
pub async fn require(
    scope: Scope,
    state: AppState,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(store) = state.keys() else {
        return Ok(next.run(request).await);
    };
    let key = presented_key(&request)
        .ok_or(ApiError::Unauthorized(
            "no API key: send `Authorization: Bearer <key>`",
        ))?
        .to_string();
    let known = store
        .authenticate(&key)
        .ok_or(ApiError::Unauthorized("the API key is not valid"))?;
    if !known.scopes.contains(&scope) {
        return Err(ApiError::Forbidden {
            key: known.name.clone(),
            scope: scope.as_str(),
        });
    }
    if let Some(limiter) = state.rate_limiter() {
        if let Err(retry_after_secs) = limiter.take(&known.name) {
            state.metrics().reject("rate_limited");
            return Err(ApiError::RateLimited {
                key: known.name.clone(),
                retry_after_secs,
            });
        }
    }
    request.extensions_mut().insert(Caller {
        key_name: known.name.clone(),
        tenant: known.tenant.clone(),
    });
    Ok(next.run(request).await)
}

/// [`require`] for each scope, in the shape `axum::middleware::from_fn_with_state` takes.
pub async fn require_inference(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(Scope::Inference, state, request, next).await
}

pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(Scope::Admin, state, request, next).await
}

pub async fn require_metrics(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.config().metrics_auth {
        return Ok(next.run(request).await);
    }
    require(Scope::Metrics, state, request, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_env_authenticate_with_their_scopes_and_tenant() {
        let store = KeyStore::load(
            None,
            Some("sk-app-0123456789abcdef:inference:acme, sk-ops-0123456789abcdef:admin+metrics"),
        )
        .unwrap();
        let app = store.authenticate("sk-app-0123456789abcdef").unwrap();
        assert_eq!(app.scopes, vec![Scope::Inference]);
        assert_eq!(app.tenant.as_deref(), Some("acme"));
        let ops = store.authenticate("sk-ops-0123456789abcdef").unwrap();
        assert_eq!(ops.scopes, vec![Scope::Admin, Scope::Metrics]);
        assert!(store.authenticate("sk-app-0123456789abcdeF").is_none());
        assert!(store.authenticate("").is_none());
    }

    #[test]
    fn bad_key_specifications_are_refused() {
        for spec in [
            "sk-short:inference",
            "sk-app-0123456789abcdef",
            "sk-app-0123456789abcdef:root",
        ] {
            assert!(KeyStore::load(None, Some(spec)).is_err(), "{spec}");
        }
    }

    #[test]
    fn a_keys_file_may_hold_hashes_instead_of_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let hash: String = sha256("sk-hashed-0123456789")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(
            &path,
            format!(
                "[[keys]]\nname = \"ci\"\nkey_sha256 = \"{hash}\"\nscopes = [\"inference\"]\n\n[[keys]]\nname = \"ops\"\nkey = \"sk-ops-plain-0123456\"\nscopes = [\"admin\"]\n"
            ),
        )
        .unwrap();
        let store = KeyStore::load(Some(&path), None).unwrap();
        assert_eq!(
            store.authenticate("sk-hashed-0123456789").unwrap().name,
            "ci"
        );
        assert_eq!(
            store.authenticate("sk-ops-plain-0123456").unwrap().name,
            "ops"
        );
        std::fs::write(&path, "[[keys]]\nname = \"x\"\nscopes = [\"admin\"]\n").unwrap();
        assert!(KeyStore::load(Some(&path), None).is_err());
    }
}
