//! Server configuration: defaults < TOML file < environment < command-line flags.
//!
//! Every setting has one name. In the file it is the field name (`max_in_flight = 8`); in the
//! environment it is `SWITCHYARD_` + the upper-cased name (`SWITCHYARD_MAX_IN_FLIGHT=8`); on the
//! command line it is the kebab-cased flag (`--max-in-flight 8`). Clap resolves env and flags
//! (a flag beats env); the file fills only what neither gave.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration of a running server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// GGUF file of the base model.
    pub model_path: PathBuf,
    /// Id clients put in `model`; also listed by `/v1/models`.
    pub model_id: String,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for (larger: 400).
    pub max_tokens_cap: usize,
    /// `max_tokens` used when a request gives none.
    pub default_max_tokens: usize,
    /// Generations admitted at once, running or queued at the engine (more: 429).
    pub max_in_flight: usize,
    /// Engine instances; each decodes one request at a time (see README: concurrency).
    pub engine_instances: usize,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            model_path: PathBuf::from(
                "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
            model_id: "smollm2-135m-instruct".to_string(),
            max_body_bytes: 1024 * 1024,
            max_tokens_cap: 2048,
            default_max_tokens: 256,
            max_in_flight: 16,
            engine_instances: 1,
            shutdown_grace_secs: 30,
            log_format: LogFormat::Text,
        }
    }
}

/// Flags (and their environment variables) that override the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "SWITCHYARD_MODEL_PATH")]
    pub model_path: Option<PathBuf>,
    #[arg(long, env = "SWITCHYARD_MODEL_ID")]
    pub model_id: Option<String>,
    #[arg(long, env = "SWITCHYARD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    #[arg(long, env = "SWITCHYARD_MAX_TOKENS_CAP")]
    pub max_tokens_cap: Option<usize>,
    #[arg(long, env = "SWITCHYARD_DEFAULT_MAX_TOKENS")]
    pub default_max_tokens: Option<usize>,
    #[arg(long, env = "SWITCHYARD_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    #[arg(long, env = "SWITCHYARD_ENGINE_INSTANCES")]
    pub engine_instances: Option<usize>,
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a TOML file; unknown keys are errors so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Resolves defaults < file (from `--config`) < env < flags, then validates.
    pub fn resolve(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, args: &ConfigArgs) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut self.listen, &args.listen);
        set(&mut self.model_path, &args.model_path);
        set(&mut self.model_id, &args.model_id);
        set(&mut self.max_body_bytes, &args.max_body_bytes);
        set(&mut self.max_tokens_cap, &args.max_tokens_cap);
        set(&mut self.default_max_tokens, &args.default_max_tokens);
        set(&mut self.max_in_flight, &args.max_in_flight);
        set(&mut self.engine_instances, &args.engine_instances);
        set(&mut self.shutdown_grace_secs, &args.shutdown_grace_secs);
        set(&mut self.log_format, &args.log_format);
    }

    /// Rejects settings that cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_tokens_cap", self.max_tokens_cap),
            ("default_max_tokens", self.default_max_tokens),
            ("max_in_flight", self.max_in_flight),
            ("engine_instances", self.engine_instances),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        if self.default_max_tokens > self.max_tokens_cap {
            return Err(ConfigError::Invalid(format!(
                "default_max_tokens ({}) is above max_tokens_cap ({})",
                self.default_max_tokens, self.max_tokens_cap
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    #[test]
    fn file_then_env_then_flag() {
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchyard.toml");
        std::fs::write(
            &file,
            "max_in_flight = 3\nmax_tokens_cap = 100\ndefault_max_tokens = 50\nmodel_id = \"from-file\"\n",
        )
        .unwrap();
        // Only this test in this binary touches these variables.
        std::env::set_var("SWITCHYARD_MAX_TOKENS_CAP", "200");
        std::env::set_var("SWITCHYARD_MODEL_ID", "from-env");
        let cli = Cli::try_parse_from([
            "switchyard",
            "--config",
            file.to_str().unwrap(),
            "--model-id",
            "from-flag",
        ])
        .unwrap();
        std::env::remove_var("SWITCHYARD_MAX_TOKENS_CAP");
        std::env::remove_var("SWITCHYARD_MODEL_ID");
        let config = Config::resolve(&cli.config).unwrap();
        assert_eq!(config.max_in_flight, 3, "file beats default");
        assert_eq!(config.max_tokens_cap, 200, "env beats file");
        assert_eq!(config.model_id, "from-flag", "flag beats env");
        assert_eq!(config.default_max_tokens, 50);
        assert_eq!(
            config.shutdown_grace_secs,
            Config::default().shutdown_grace_secs
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = toml::from_str::<Config>("max_in_flite = 3").unwrap_err();
        assert!(err.to_string().contains("max_in_flite"), "{err}");
    }

    #[test]
    fn impossible_settings_are_rejected() {
        let config = Config {
            default_max_tokens: 10,
            max_tokens_cap: 5,
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(_))));
        let config = Config {
            max_in_flight: 0,
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_in_flight"));
    }
}
