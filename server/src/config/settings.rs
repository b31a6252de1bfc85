//! The machinery that lets each server setting be declared once, in `config.rs`: `declare!`
//! turns each declaration (doc, name, type, default) into the `Config` field, its default, its
//! flag `--kebab-name` with variable `SWITCHYARD_<NAME>` in `ConfigArgs`, and its entry in
//! [`Config::settings`], the list the README's configuration table is checked against.

use clap::Args;
use serde::Serialize;

use super::{Config, ConfigArgs};

/// Declares the settings: makes `Config`, its `Default`, `ConfigArgs` and `Config::apply`.
macro_rules! declare {
    ($(
        $(#[doc = $doc:literal])+
        $(#[arg($($arg:tt)*)])*
        $name:ident: $ty:ty = $default:expr;
    )*) => {
        /// The resolved configuration of a running server.
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $($(#[doc = $doc])+ pub $name: $ty,)*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $($name: $default,)* }
            }
        }

        /// Flags (and their environment variables) that override the file.
        #[derive(Debug, Clone, Default, ::clap::Args)]
        pub struct ConfigArgs {
            /// TOML configuration file.
            #[arg(long, env = "SWITCHYARD_CONFIG")]
            pub config: Option<::std::path::PathBuf>,
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $crate::config::settings::env_name!($name))]
                $(#[arg($($arg)*)])*
                pub $name: Option<$ty>,
            )*
        }

        impl Config {
            /// Each setting's name and doc lines, in declaration order.
            const DECLARED: &[(&str, &[&str])] = &[$((stringify!($name), &[$($doc),+])),*];

            /// Overwrites the settings that the environment or a flag gave (clap resolved those).
            fn apply(&mut self, args: &ConfigArgs) {
                $(if let Some(value) = &args.$name {
                    self.$name = value.clone();
                })*
            }
        }
    };
}
pub(super) use declare;

/// `SWITCHYARD_` + the upper-cased setting name, built at compile time: clap's `env` takes a
/// `&'static str` (a `String` needs its `string` feature), and `concat!` cannot upper-case.
macro_rules! env_name {
    ($name:ident) => {{
        const NAME: &str = stringify!($name);
        const BYTES: [u8; $crate::config::settings::ENV_PREFIX.len() + NAME.len()] =
            $crate::config::settings::prefixed_upper(NAME);
        const ENV: &str = match ::std::str::from_utf8(&BYTES) {
            Ok(env) => env,
            Err(_) => panic!("setting names are ASCII"),
        };
        ENV
    }};
}
pub(super) use env_name;

pub(super) const ENV_PREFIX: &str = "SWITCHYARD_";

/// `ENV_PREFIX` followed by `name` upper-cased; `N` must be their total length.
pub(super) const fn prefixed_upper<const N: usize>(name: &str) -> [u8; N] {
    let (prefix, name) = (ENV_PREFIX.as_bytes(), name.as_bytes());
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < prefix.len() {
            prefix[i]
        } else {
            name[i - prefix.len()].to_ascii_uppercase()
        };
        i += 1;
    }
    out
}

/// One setting as users meet it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The file key and `Config` field, e.g. `max_in_flight`.
    pub name: &'static str,
    /// e.g. `--max-in-flight`.
    pub flag: String,
    /// e.g. `SWITCHYARD_MAX_IN_FLIGHT`.
    pub env: String,
    /// As the README shows it: numbers bare, other values in backticks the way the flag takes
    /// them (`` `simple,rag,tool` ``), `none` for an empty list or table, `unset` for no value.
    pub default: String,
    /// The declaration's doc comment, on one line.
    pub doc: String,
}

impl Config {
    /// Every setting in declaration order; flag and variable are read back from clap, so they
    /// are what the command line really accepts.
    pub fn settings() -> Vec<Setting> {
        let command = ConfigArgs::augment_args(clap::Command::new("switchyard"));
        let defaults = toml::Table::try_from(Config::default()).expect("the defaults serialize");
        Self::DECLARED
            .iter()
            .map(|&(name, doc)| {
                let arg = command
                    .get_arguments()
                    .find(|arg| arg.get_id() == name)
                    .expect("every setting has a flag");
                Setting {
                    name,
                    flag: format!("--{}", arg.get_long().expect("flags are long")),
                    env: arg
                        .get_env()
                        .expect("every flag has a variable")
                        .to_string_lossy()
                        .into_owned(),
                    default: shown(defaults.get(name)),
                    doc: doc
                        .iter()
                        .map(|line| line.trim())
                        .collect::<Vec<_>>()
                        .join(" "),
                }
            })
            .collect()
    }
}

/// A default's text in the README (see [`Setting::default`]).
fn shown(value: Option<&toml::Value>) -> String {
    use toml::Value;
    fn as_flag(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            // `60`, not TOML's `60.0`.
            Value::Float(x) => x.to_string(),
            Value::Array(items) => items.iter().map(as_flag).collect::<Vec<_>>().join(","),
            other => other.to_string(),
        }
    }
    match value {
        // TOML has no null: a `None` is left out of the table.
        None => "unset".into(),
        Some(Value::Array(items)) if items.is_empty() => "none".into(),
        Some(Value::Table(table)) if table.is_empty() => "none".into(),
        Some(number @ (Value::Integer(_) | Value::Float(_))) => as_flag(number),
        Some(value) => format!("`{}`", as_flag(value)),
    }
}
