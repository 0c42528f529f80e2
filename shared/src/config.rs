//! Typed configuration from `FARO_*` variables.
//!
//! Parsing happens once, in each binary's `main`, from an [`Env`] map (so tests need no
//! process environment). A bad value fails at start with the variable's name and the form it
//! expects. Settings every service shares live here; each service adds its own.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::names::Namespace;

/// A configuration value that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?} is not accepted: expected {expected}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

/// A snapshot of the variables a service reads.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets one variable (for tests and for the in-process benchmark).
    pub fn set(&mut self, var: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.vars.insert(var.into(), value.into());
        self
    }

    /// The `FARO_*` variables set, to hand to a child process.
    pub fn faro_vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .filter(|(k, _)| k.split_once('_').is_some_and(|(head, _)| head == "FARO"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `var`, `None` when unset or empty.
    pub fn optional(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, var: &str, default: &str) -> String {
        self.optional(var).unwrap_or(default).to_owned()
    }

    /// Parses `var` with `FromStr`, or gives `default` when unset.
    pub fn parse<T: FromStr>(
        &self,
        var: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.optional(var) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| self.error(var, value, expected)),
        }
    }

    /// Parses an optional value with `FromStr`.
    pub fn parse_optional<T: FromStr>(
        &self,
        var: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.optional(var)
            .map(|value| value.parse().map_err(|_| self.error(var, value, expected)))
            .transpose()
    }

    /// A duration such as `250ms`, `5s`, `2m`, `1h`, `30d`; a bare number is seconds.
    pub fn duration(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.optional(var) {
            None => Ok(default),
            Some(value) => parse_duration(value).ok_or_else(|| {
                self.error(var, value, "a duration such as 250ms, 5s, 2m, 1h or 30d")
            }),
        }
    }

    /// A size such as `8G`, `512M`, `64K` (powers of 1024) or a bare number of bytes.
    pub fn bytes(&self, var: &str, default: u64) -> Result<u64, ConfigError> {
        match self.optional(var) {
            None => Ok(default),
            Some(value) => parse_bytes(value).ok_or_else(|| {
                self.error(
                    var,
                    value,
                    "a size such as 8G, 512M or 64K, or a number of bytes",
                )
            }),
        }
    }

    pub fn bool(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(var) {
            None => Ok(default),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(self.error(var, value, "true or false")),
            },
        }
    }

    pub fn path(&self, var: &str) -> Option<PathBuf> {
        self.optional(var).map(PathBuf::from)
    }

    pub fn secret(&self, var: &str) -> Option<Secret> {
        self.optional(var).map(|v| Secret(v.to_owned()))
    }

    fn error(&self, var: &str, value: &str, expected: &str) -> ConfigError {
        ConfigError {
            var: var.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `30d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Pure: a URL as it may be logged or shown: without the user and password, the query and
/// the fragment, where tokens go. `nats://worker:s3cret@nats:4222` is shown as
/// `nats://nats:4222`, `https://h/api?token=x` as `https://h/api?…`. One that does not parse
/// shows only its scheme: what it holds cannot be told apart.
pub fn url_for_logs(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut parsed) => {
            let cut = parsed.query().is_some() || parsed.fragment().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut shown = parsed.to_string();
            // `nats://h:4222` comes back as `nats://h:4222` (no path added) or with a `/`.
            if !url.trim_end().ends_with('/') && shown.ends_with('/') && parsed.path() == "/" {
                shown.pop();
            }
            if cut {
                shown.push_str("?…");
            }
            shown
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) if scheme.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                format!("{scheme}://(unreadable)")
            }
            _ => "(unreadable)".to_owned(),
        },
    }
}

/// Pure: [`url_for_logs`] of each URL of a comma-separated list (`FARO_NATS_URL`).
pub fn urls_for_logs(urls: &str) -> String {
    urls.split(',')
        .map(url_for_logs)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `8G`, `512M`, `64K`, `1T` (powers of 1024; `GB`, `GiB` and lower case too) or a
/// bare number of bytes.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// A value that must not reach logs: `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub creds_file: Option<PathBuf>,
    pub tls_required: bool,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The first token of this client's reply subjects (`FARO_NATS_INBOX_PREFIX`): by
    /// default `_INBOX_<user>`, so that a user may read its own replies alone.
    pub inbox_prefix: String,
}

/// Pure: the inbox prefix of a NATS user: `_INBOX_<user>` (`_INBOX` without a user), as
/// `nats/nats-server.conf` lets each user subscribe to its own alone.
pub fn inbox_prefix_of(user: Option<&str>) -> String {
    match user {
        Some(user) => format!("_INBOX_{user}"),
        None => "_INBOX".to_owned(),
    }
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user: None,
            password: None,
            token: None,
            creds_file: None,
            tls_required: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: inbox_prefix_of(None),
        }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            url: env.string("FARO_NATS_URL", "nats://127.0.0.1:4222"),
            user: env.optional("FARO_NATS_USER").map(str::to_owned),
            password: env.secret("FARO_NATS_PASSWORD"),
            token: env.secret("FARO_NATS_TOKEN"),
            creds_file: env.path("FARO_NATS_CREDS"),
            tls_required: env.bool("FARO_NATS_TLS", false)?,
            tls_ca: env.path("FARO_NATS_TLS_CA"),
            tls_cert: env.path("FARO_NATS_TLS_CERT"),
            tls_key: env.path("FARO_NATS_TLS_KEY"),
            inbox_prefix: match env.optional("FARO_NATS_INBOX_PREFIX") {
                Some(prefix) => prefix.to_owned(),
                None => inbox_prefix_of(env.optional("FARO_NATS_USER")),
            },
        };
        // One subject token: no dot, wildcard or space.
        let prefix = &config.inbox_prefix;
        if prefix.is_empty()
            || prefix
                .chars()
                .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(ConfigError {
                var: "FARO_NATS_INBOX_PREFIX".to_owned(),
                value: prefix.clone(),
                expected: "one subject token (no '.', '*', '>' or space), such as _INBOX_worker"
                    .to_owned(),
            });
        }
        if config.user.is_some() != config.password.is_some() {
            return Err(ConfigError {
                var: "FARO_NATS_USER".to_owned(),
                value: config.user.clone().unwrap_or_default(),
                expected: "FARO_NATS_USER and FARO_NATS_PASSWORD set together".to_owned(),
            });
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(ConfigError {
                var: "FARO_NATS_TLS_CERT".to_owned(),
                value: String::new(),
                expected: "FARO_NATS_TLS_CERT and FARO_NATS_TLS_KEY set together".to_owned(),
            });
        }
        Ok(config)
    }
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub url: Secret,
    pub pool_size: usize,
    /// How long start-up (migrations, `faro migrate`) keeps trying a PostgreSQL that does not
    /// answer yet: a container started next to its database, a database restarting.
    pub connect_wait: Duration,
    /// The longest one statement may run (`statement_timeout` of every pooled connection): a
    /// statement stuck behind a lock fails instead of holding its task.
    pub statement_timeout: Duration,
    /// The longest a task waits for a pooled connection (all in use, or PostgreSQL not
    /// answering a new one) before its work fails and is tried again.
    pub pool_wait: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            pool_size: 16,
            connect_wait: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(60),
            pool_wait: Duration::from_secs(10),
        }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.string(
            "FARO_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/faro",
        );
        url.parse::<tokio_postgres::Config>()
            .map_err(|_| ConfigError {
                var: "FARO_DATABASE_URL".to_owned(),
                value: "[redacted]".to_owned(),
                expected: "a PostgreSQL URL such as postgres://user:password@host:5432/faro"
                    .to_owned(),
            })?;
        Ok(Self {
            url: Secret(url),
            pool_size: env.parse("FARO_DB_POOL_SIZE", 16, "a whole number of connections")?,
            connect_wait: env.duration("FARO_DATABASE_WAIT", Duration::from_secs(60))?,
            statement_timeout: env
                .duration("FARO_DATABASE_STATEMENT_TIMEOUT", Duration::from_secs(60))?,
            pool_wait: env.duration("FARO_DATABASE_POOL_WAIT", Duration::from_secs(10))?,
        })
    }
}

/// Output format of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// What every service reads: namespace, NATS, HTTP address, logs.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub namespace: Namespace,
    pub nats: NatsConfig,
    /// Where `/metrics` and `/health` are served.
    pub http_addr: SocketAddr,
    pub log_format: LogFormat,
}

impl CommonConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            namespace: env.parse(
                "FARO_NAMESPACE",
                Namespace::default(),
                "1 to 32 characters of a-z 0-9 _, starting with a letter",
            )?,
            nats: NatsConfig::from_env(env)?,
            http_addr: env.parse(
                "FARO_HTTP_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 9090)),
                "an address and port such as 0.0.0.0:9090",
            )?,
            log_format: env.parse("FARO_LOG_FORMAT", LogFormat::Text, "text or json")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_credentials_or_query() {
        for (url, shown) in [
            ("nats://worker:s3cret@nats:4222", "nats://nats:4222"),
            (
                "https://t:x@h.example/api/v1?token=abc#f",
                "https://h.example/api/v1?…",
            ),
            ("https://h.example/api?key=p@ss", "https://h.example/api?…"),
            ("https://h/api?ids=a,b&token=SECRET", "https://h/api?…"),
            ("https://u:pa,ss@h/x", "https://h/x"),
            ("nats://u:p%2Fss@h:4222", "nats://h:4222"),
            ("postgres://faro:pw@db:5432/faro", "postgres://db:5432/faro"),
            ("http://[::1]:8080/plain", "http://[::1]:8080/plain"),
            ("nats://u:p/ss@h:4222", "nats://(unreadable)"),
        ] {
            let got = url_for_logs(url);
            assert_eq!(got, shown, "{url}");
            for secret in ["s3cret", "SECRET", "pa,ss", "p/ss", "p%2Fss", "pw@"] {
                assert!(!got.contains(secret), "{url}: {got}");
            }
        }
        assert_eq!(
            urls_for_logs("nats://a:p@n1:4222, nats://b:q@n2:4222"),
            "nats://n1:4222,nats://n2:4222"
        );
    }

    #[test]
    fn sizes_in_several_units() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("8G"), Some(8 << 30));
        assert_eq!(parse_bytes("8gb"), Some(8 << 30));
        assert_eq!(parse_bytes("8 GiB"), Some(8 << 30));
        assert_eq!(parse_bytes("2T"), Some(2 << 40));
        for bad in [
            "",
            "G",
            "1.5G",
            "-1",
            "8X",
            "8BBB",
            "8iB",
            "8GIBIB",
            "99999999999T",
        ] {
            assert_eq!(parse_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations_in_several_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        for bad in ["", "s", "5 parsecs", "-1s", "1e400"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_variable_and_the_form() {
        let env = Env::from_pairs([("FARO_HTTP_ADDR", "everywhere")]);
        let err = CommonConfig::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("FARO_HTTP_ADDR") && err.contains("0.0.0.0:9090"),
            "{err}"
        );

        let env = Env::from_pairs([("FARO_NAMESPACE", "Bad.Name")]);
        let err = CommonConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("FARO_NAMESPACE"), "{err}");

        let env = Env::from_pairs([("FARO_NATS_USER", "dispatcher")]);
        let err = NatsConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("FARO_NATS_PASSWORD"), "{err}");
    }

    #[test]
    fn replies_come_on_the_users_own_inboxes_unless_told_otherwise() {
        let user = |pairs: &[(&str, &str)]| {
            NatsConfig::from_env(&Env::from_pairs(pairs.iter().copied())).map(|c| c.inbox_prefix)
        };
        assert_eq!(user(&[]).unwrap(), "_INBOX");
        assert_eq!(
            user(&[("FARO_NATS_USER", "worker"), ("FARO_NATS_PASSWORD", "p")]).unwrap(),
            "_INBOX_worker"
        );
        assert_eq!(
            user(&[("FARO_NATS_INBOX_PREFIX", "_INBOX_site7")]).unwrap(),
            "_INBOX_site7"
        );
        for bad in ["_INBOX.x", "a>", "a b", "*"] {
            let error = user(&[("FARO_NATS_INBOX_PREFIX", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("FARO_NATS_INBOX_PREFIX") && error.contains("one subject token"),
                "{error}"
            );
        }
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let env = Env::from_pairs([("FARO_NAMESPACE", " ")]);
        let config = CommonConfig::from_env(&env).unwrap();
        assert_eq!(config.namespace, Namespace::default());
        assert_eq!(config.http_addr.port(), 9090);
        assert_eq!(config.nats.url, "nats://127.0.0.1:4222");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let env = Env::from_pairs([
            ("FARO_NATS_USER", "u"),
            ("FARO_NATS_PASSWORD", "hunter2"),
            ("FARO_DATABASE_URL", "postgres://a:hunter2@h/db"),
        ]);
        let text = format!(
            "{:?} {:?}",
            NatsConfig::from_env(&env).unwrap(),
            PgConfig::from_env(&env).unwrap()
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
