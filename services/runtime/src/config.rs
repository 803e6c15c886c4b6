//! Layered configuration shared by the services: built-in defaults, then a YAML file, then
//! `LEADSTREAM_<SECTION>__<KEY>` environment variables; plus the pieces every service's
//! configuration has (Kafka client properties, secrets read from files, logging).

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use leadstream_schemas::Secret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Loading or parsing failed (unknown key, wrong type, unreadable file).
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is present but invalid.
    #[error("configuration: `{key}`: {reason}")]
    Invalid {
        /// The offending key, dotted.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// A [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Merges `defaults`, the YAML `file` (when given; it must exist) and the `LEADSTREAM_*` variables
/// whose first level is one of `sections`, and deserializes the result.
///
/// Figment merges maps key by key: a map in `defaults` keeps its entries next to a file's own, so
/// callers leave maps that a file should replace empty here and fill them in afterwards.
pub fn load_layered<T: Serialize + DeserializeOwned>(
    defaults: T,
    file: Option<&Path>,
    sections: &'static [&'static str],
) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(defaults));
    if let Some(f) = file {
        if !f.exists() {
            return Err(invalid(
                "--config",
                format!("file {} does not exist", f.display()),
            ));
        }
        fig = fig.merge(Yaml::file(f));
    }
    // Only the configuration's own sections: LEADSTREAM_CONFIG and other LEADSTREAM_* variables
    // of the scripts are not configuration keys.
    let env = Env::prefixed("LEADSTREAM_").split("__").filter(move |k| {
        let section = k
            .as_str()
            .split('.')
            .next()
            .and_then(|s| s.split("__").next())
            .unwrap_or_default();
        sections.iter().any(|s| s.eq_ignore_ascii_case(section))
    });
    Ok(fig.merge(env).extract().map_err(Box::new)?)
}

/// Reads a secret from `path` (when set) into `slot`, without its trailing newline.
pub fn read_secret_file(
    key: &'static str,
    path: &Option<PathBuf>,
    slot: &mut Option<Secret<String>>,
) -> Result<(), ConfigError> {
    if let Some(p) = path {
        let s = std::fs::read_to_string(p)
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))?;
        *slot = Some(Secret::new(s.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(())
}

/// librdkafka properties whose `Debug` and serialized forms (`--print-config`) hide the values
/// of keys that look secret.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

/// What a secret-looking property shows instead of its value.
const REDACTED: &str = "[redacted]";

impl KafkaProperties {
    /// The entries with secret-looking values replaced, for every printed form.
    fn shown(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| {
            let v = if is_secret_property(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.shown())
    }
}

/// Whether a librdkafka property holds a secret.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "private"]
        .iter()
        .any(|s| k.contains(s))
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl KafkaProperties {
    /// A librdkafka client configuration: `bootstrap.servers`, these properties, then the SASL
    /// password when one is configured.
    pub fn client_config(
        &self,
        brokers: &str,
        sasl_password: Option<&Secret<String>>,
    ) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", brokers);
        for (k, v) in &self.0 {
            c.set(k, v);
        }
        if let Some(p) = sasl_password {
            c.set("sasl.password", p.expose());
        }
        c
    }

    /// Sets `key` to `value` in `c` unless the user gave the property.
    pub fn default_to(&self, c: &mut rdkafka::ClientConfig, key: &str, value: &str) {
        if !self.0.contains_key(key) {
            c.set(key, value);
        }
    }

    /// Rejects properties leadstream manages itself; `managed` lists them.
    pub fn reject_managed(&self, managed: &[&str]) -> Result<(), ConfigError> {
        match self.0.keys().find(|k| managed.contains(&k.as_str())) {
            Some(k) => Err(invalid(
                "kafka.properties",
                format!("{k} is managed by leadstream; use the dedicated setting"),
            )),
            None => Ok(()),
        }
    }
}

/// Log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// Filter directive, as `RUST_LOG` (which overrides it when set).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info,rdkafka=warn".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line for log shippers.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_are_redacted_in_debug_and_dumps() {
        let p = KafkaProperties(
            [
                ("sasl.password".to_string(), "hunter2".to_string()),
                ("ssl.key.password".to_string(), "pem-pass".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ]
            .into(),
        );
        for shown in [
            format!("{p:?}"),
            serde_yaml::to_string(&p).unwrap(),
            serde_json::to_string(&p).unwrap(),
        ] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("pem-pass"),
                "{shown}"
            );
            assert!(
                shown.contains("SASL_SSL") && shown.contains("sasl.password"),
                "{shown}"
            );
        }
    }

    #[test]
    fn managed_properties_are_named() {
        let p = KafkaProperties([("group.id".to_string(), "x".to_string())].into());
        let err = p.reject_managed(&["group.id"]).unwrap_err().to_string();
        assert!(
            err.contains("kafka.properties") && err.contains("group.id"),
            "{err}"
        );
    }
}
