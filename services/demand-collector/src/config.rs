//! The demand-collector's settings, from `FARO_*` variables.

use std::time::Duration;

use faro_shared::config::{ConfigError, Env, PgConfig, Secret};
use faro_shared::CommonConfig;

use crate::providers::JsonPaths;

/// Providers that need nothing but faro's own NATS and PostgreSQL.
pub const BUILT_IN: [&str; 3] = ["jetstream", "waiting", "due"];

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub pg: PgConfig,
    /// Time between two collections (`FARO_DEMAND_INTERVAL`, default 5 s).
    pub interval: Duration,
    /// Longest a provider may take before its queues are marked stale
    /// (`FARO_DEMAND_PROVIDER_TIMEOUT`, default 3 s).
    pub provider_timeout: Duration,
    /// The providers asked (`FARO_DEMAND_PROVIDERS`, comma-separated among jetstream, waiting,
    /// due, http and sql; default: the three built in, plus http and sql when their URL is set).
    pub providers: Vec<String>,
    /// How far ahead `due` counts recurring runs (`FARO_DEMAND_DUE_HORIZON`, default 10 s).
    pub due_horizon: Duration,
    pub http: Option<HttpConfig>,
    pub sql: Option<SqlConfig>,
    pub shutdown_grace: Duration,
}

/// The external HTTP JSON source.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `FARO_DEMAND_HTTP_URL`.
    pub url: String,
    /// `FARO_DEMAND_HTTP_AUTHORIZATION`: the whole header value, such as `Bearer ...`.
    pub authorization: Option<Secret>,
    /// `FARO_DEMAND_HTTP_ITEMS` (default: the answer is the array), `FARO_DEMAND_HTTP_NAME`
    /// (default `/name`), `FARO_DEMAND_HTTP_COUNT` (default `/count`): JSON pointers.
    pub paths: JsonPaths,
}

/// The external SQL source.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// `FARO_DEMAND_SQL_URL`: another PostgreSQL, read only.
    pub pg: PgConfig,
    /// `FARO_DEMAND_SQL_QUERY`: returns rows of (name text, count bigint).
    pub query: String,
}

fn pointer(env: &Env, var: &str, default: &str) -> Result<String, ConfigError> {
    let value = env.string(var, default);
    if value.is_empty() || value.starts_with('/') {
        Ok(value)
    } else {
        Err(ConfigError {
            var: var.to_owned(),
            value,
            expected: "a JSON pointer such as /name or /data/items (empty: the whole answer)"
                .to_owned(),
        })
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let http = match env.optional("FARO_DEMAND_HTTP_URL") {
            None => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(HttpConfig {
                    url: url.to_owned(),
                    authorization: env.secret("FARO_DEMAND_HTTP_AUTHORIZATION"),
                    paths: JsonPaths {
                        items: pointer(env, "FARO_DEMAND_HTTP_ITEMS", "")?,
                        name: pointer(env, "FARO_DEMAND_HTTP_NAME", "/name")?,
                        count: pointer(env, "FARO_DEMAND_HTTP_COUNT", "/count")?,
                    },
                })
            }
            Some(url) => {
                return Err(ConfigError {
                    var: "FARO_DEMAND_HTTP_URL".to_owned(),
                    value: faro_shared::config::url_for_logs(url),
                    expected: "an http:// or https:// URL".to_owned(),
                })
            }
        };
        let sql = match env.optional("FARO_DEMAND_SQL_URL") {
            None => None,
            Some(url) => {
                if url.parse::<tokio_postgres::Config>().is_err() {
                    return Err(ConfigError {
                        var: "FARO_DEMAND_SQL_URL".to_owned(),
                        value: "[redacted]".to_owned(),
                        expected: "a PostgreSQL URL such as postgres://reader@host:5432/work"
                            .to_owned(),
                    });
                }
                let query = env.string("FARO_DEMAND_SQL_QUERY", "");
                if query.trim().is_empty() {
                    return Err(ConfigError {
                        var: "FARO_DEMAND_SQL_QUERY".to_owned(),
                        value: String::new(),
                        expected: "a query returning (name text, count bigint) rows, with FARO_DEMAND_SQL_URL".to_owned(),
                    });
                }
                let mut pg = PgConfig::new(url);
                pg.pool_size = 2;
                Some(SqlConfig { pg, query })
            }
        };
        let mut defaults: Vec<&str> = BUILT_IN.to_vec();
        if http.is_some() {
            defaults.push("http");
        }
        if sql.is_some() {
            defaults.push("sql");
        }
        let listed = env.string("FARO_DEMAND_PROVIDERS", &defaults.join(","));
        let mut providers = Vec::new();
        for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let ok = match name {
                "jetstream" | "waiting" | "due" => true,
                "http" => http.is_some(),
                "sql" => sql.is_some(),
                _ => false,
            };
            if !ok {
                return Err(ConfigError {
                    var: "FARO_DEMAND_PROVIDERS".to_owned(),
                    value: listed.clone(),
                    expected: format!(
                        "names among jetstream, waiting, due, http (with FARO_DEMAND_HTTP_URL) and sql (with FARO_DEMAND_SQL_URL); {name:?} is not one"
                    ),
                });
            }
            providers.push(name.to_owned());
        }
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            pg: PgConfig::from_env(env)?,
            interval: env.duration("FARO_DEMAND_INTERVAL", Duration::from_secs(5))?,
            provider_timeout: env
                .duration("FARO_DEMAND_PROVIDER_TIMEOUT", Duration::from_secs(3))?,
            providers,
            due_horizon: env.duration("FARO_DEMAND_DUE_HORIZON", Duration::from_secs(10))?,
            http,
            sql,
            shutdown_grace: env.duration("FARO_SHUTDOWN_GRACE", Duration::from_secs(30))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_default_to_the_built_in_ones_plus_the_configured_sources() {
        let config = Config::from_env(&Env::from_pairs([("FARO_X", "")])).unwrap();
        assert_eq!(config.providers, BUILT_IN);
        let config = Config::from_env(&Env::from_pairs([
            ("FARO_DEMAND_HTTP_URL", "http://127.0.0.1:9/tickets"),
            ("FARO_DEMAND_HTTP_ITEMS", "/data"),
        ]))
        .unwrap();
        assert_eq!(config.providers, ["jetstream", "waiting", "due", "http"]);
        assert_eq!(config.http.unwrap().paths.items, "/data");
    }

    #[test]
    fn bad_provider_settings_say_what_is_expected() {
        let e = Config::from_env(&Env::from_pairs([(
            "FARO_DEMAND_PROVIDERS",
            "jetstream,http",
        )]))
        .unwrap_err();
        assert!(e.to_string().contains("\"http\" is not one"), "{e}");
        let e = Config::from_env(&Env::from_pairs([(
            "FARO_DEMAND_SQL_URL",
            "postgres://r@h/w",
        )]))
        .unwrap_err();
        assert!(e.to_string().contains("FARO_DEMAND_SQL_QUERY"), "{e}");
        let e = Config::from_env(&Env::from_pairs([
            ("FARO_DEMAND_HTTP_URL", "https://tickets.example/api"),
            ("FARO_DEMAND_HTTP_NAME", "name"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("JSON pointer"), "{e}");
    }
}
