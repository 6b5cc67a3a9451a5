//! Server configuration from the command line, the environment and an optional TOML file.
//!
//! Precedence: command-line flag, then environment variable (`DUET_*`), then the file given
//! by `--config`, then the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use duet_proto::IceServer;
use serde::Deserialize;
use thiserror::Error;

use crate::access::AccessConfig;
use crate::cluster::{RedisConfig, valid_node_id};
use crate::hub::HubConfig;
use crate::hub::token::TokenKey;
use crate::turn::{IceConfig, Secret, TurnRest};

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// A configuration problem, worded for the person running the server. Never contains secrets.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this server.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting has an invalid value.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// Which setting.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable single lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags of `duet-server` (each also readable from a `DUET_*` variable).
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "duet-server", version, about = "Duet matching and signaling server")]
pub struct Cli {
    /// Address to listen on (HTTP and WebSocket at /ws) [default: 127.0.0.1:8787]
    #[arg(long, env = "DUET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML config file with the same settings (snake_case keys)
    #[arg(long, env = "DUET_CONFIG")]
    pub config: Option<PathBuf>,
    /// PEM certificate chain: serve wss:// and https://
    #[arg(long, env = "DUET_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "DUET_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// How often clients must ping, in ms [default: 5000]
    #[arg(long, env = "DUET_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// A silent connection is closed after this many ms [default: 12000]
    #[arg(long, env = "DUET_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// A session survives this long without a socket, in ms [default: 15000]
    #[arg(long, env = "DUET_RESUME_GRACE_MS")]
    pub resume_grace_ms: Option<u64>,
    /// Wait this long for a partner sharing interests before taking anyone, in ms [default: 3000]
    #[arg(long, env = "DUET_INTEREST_WAIT_MS")]
    pub interest_wait_ms: Option<u64>,
    /// After `next`, do not re-match the same pair for this long, in ms [default: 30000]
    #[arg(long, env = "DUET_REMATCH_COOLDOWN_MS")]
    pub rematch_cooldown_ms: Option<u64>,
    /// STUN/TURN URL handed to clients without credentials (repeatable)
    #[arg(long = "ice-server", env = "DUET_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,
    /// TURN URL to issue REST credentials for (repeatable; needs --turn-secret)
    #[arg(long = "turn-url", env = "DUET_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// coturn static-auth-secret (prefer DUET_TURN_SECRET or --turn-secret-file)
    #[arg(long, env = "DUET_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// File holding the coturn static-auth-secret
    #[arg(long, env = "DUET_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,
    /// Lifetime of issued TURN credentials, in seconds [default: 3600]
    #[arg(long, env = "DUET_TURN_TTL_S")]
    pub turn_ttl_s: Option<u64>,
    /// Secret resume tokens are signed with (at least 16 characters; prefer DUET_RESUME_SECRET
    /// or --resume-secret-file). With the same secret, a restarted server (or another node)
    /// takes back sessions and their calls; without one, a restart ends them.
    #[arg(long, env = "DUET_RESUME_SECRET", hide_env_values = true)]
    pub resume_secret: Option<String>,
    /// File holding the resume secret
    #[arg(long, env = "DUET_RESUME_SECRET_FILE")]
    pub resume_secret_file: Option<PathBuf>,
    /// Web origin (https://host[:port]) allowed to use /ws besides the served browser
    /// client's own (repeatable); its host is also accepted on a loopback server
    #[arg(long = "allow-origin", env = "DUET_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Open connections at most [default: 50000]
    #[arg(long, env = "DUET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one non-loopback address at most, 0 for no limit [default: 64]
    #[arg(long, env = "DUET_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Log format
    #[arg(long, env = "DUET_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Share the random pool with other nodes through Redis (redis://HOST:PORT); without it the
    /// server matches in memory, alone
    #[arg(long = "redis", env = "DUET_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// This node's id in the service (with --redis) [default: random]
    #[arg(long, env = "DUET_NODE_ID")]
    pub node_id: Option<String>,
}

/// A configured ICE server as written in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerEntry {
    /// URLs.
    pub urls: Vec<String>,
    /// TURN username.
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<Secret>,
}

/// The TOML file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    heartbeat_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    resume_grace_ms: Option<u64>,
    interest_wait_ms: Option<u64>,
    rematch_cooldown_ms: Option<u64>,
    #[serde(default)]
    ice_servers: Vec<IceServerEntry>,
    #[serde(default)]
    turn_urls: Vec<String>,
    turn_secret: Option<Secret>,
    turn_secret_file: Option<PathBuf>,
    turn_ttl_s: Option<u64>,
    resume_secret: Option<Secret>,
    resume_secret_file: Option<PathBuf>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    log_format: Option<LogFormat>,
    redis: Option<Secret>,
    node_id: Option<String>,
}

/// TLS certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Serve TLS with these files.
    pub tls: Option<TlsFiles>,
    /// Hub tunables and ICE servers.
    pub hub: HubConfig,
    /// Allowed origins and connection caps.
    pub access: AccessConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Share the pool with other nodes through Redis; `None`: in memory, one node.
    pub redis: Option<RedisConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8787))),
            tls: None,
            hub: HubConfig::default(),
            access: AccessConfig::default(),
            log_format: LogFormat::Text,
            redis: None,
        }
    }
}

impl ServerConfig {
    /// Resolves flags/environment, the optional file and the defaults.
    pub fn resolve(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = HubConfig::default();
        let ms = |flag: Option<u64>, file: Option<u64>, default: Duration, setting: &'static str| {
            let v = flag.or(file).map(Duration::from_millis).unwrap_or(default);
            if v.is_zero() {
                Err(ConfigError::Invalid { setting, message: "must be greater than zero".into() })
            } else {
                Ok(v)
            }
        };
        let heartbeat = ms(cli.heartbeat_ms, file.heartbeat_ms, defaults.heartbeat, "heartbeat_ms")?;
        let idle_timeout = ms(cli.idle_timeout_ms, file.idle_timeout_ms, defaults.idle_timeout, "idle_timeout_ms")?;
        if idle_timeout <= heartbeat {
            return Err(ConfigError::Invalid {
                setting: "idle_timeout_ms",
                message: "must be longer than heartbeat_ms (clients ping every heartbeat)".into(),
            });
        }
        let resume_grace = ms(cli.resume_grace_ms, file.resume_grace_ms, defaults.resume_grace, "resume_grace_ms")?;
        let interest_wait =
            ms(cli.interest_wait_ms, file.interest_wait_ms, defaults.interest_wait, "interest_wait_ms")?;
        let rematch_cooldown =
            ms(cli.rematch_cooldown_ms, file.rematch_cooldown_ms, defaults.rematch_cooldown, "rematch_cooldown_ms")?;

        let mut servers: Vec<IceServer> = Vec::new();
        for url in &cli.ice_servers {
            check_ice_url(url, "ice_servers")?;
            servers.push(IceServer { urls: vec![url.clone()], username: None, credential: None });
        }
        for entry in file.ice_servers {
            if entry.urls.is_empty() {
                return Err(ConfigError::Invalid { setting: "ice_servers", message: "an entry has no urls".into() });
            }
            for url in &entry.urls {
                check_ice_url(url, "ice_servers")?;
            }
            let is_turn = entry.urls.iter().any(|u| u.starts_with("turn"));
            if is_turn && (entry.username.is_none() || entry.credential.is_none()) {
                return Err(ConfigError::Invalid {
                    setting: "ice_servers",
                    message: format!("TURN entry {} needs username and credential", entry.urls[0]),
                });
            }
            servers.push(IceServer {
                urls: entry.urls,
                username: entry.username,
                credential: entry.credential.map(|c| c.expose().to_string()),
            });
        }

        let turn_urls = if cli.turn_urls.is_empty() { file.turn_urls } else { cli.turn_urls };
        let secret = match (cli.turn_secret, cli.turn_secret_file.or(file.turn_secret_file)) {
            (Some(s), _) => Some(Secret::new(s)),
            (None, Some(path)) => Some(read_secret(&path)?),
            (None, None) => file.turn_secret,
        };
        let turn = match (turn_urls.is_empty(), secret) {
            (true, None) => None,
            (false, None) => {
                return Err(ConfigError::Invalid {
                    setting: "turn_urls",
                    message: "TURN URLs need a turn secret (--turn-secret, DUET_TURN_SECRET or --turn-secret-file)"
                        .into(),
                });
            }
            (true, Some(_)) => {
                return Err(ConfigError::Invalid {
                    setting: "turn_secret",
                    message: "a turn secret needs at least one --turn-url".into(),
                });
            }
            (false, Some(secret)) => {
                if secret.expose().is_empty() {
                    return Err(ConfigError::Invalid { setting: "turn_secret", message: "is empty".into() });
                }
                for url in &turn_urls {
                    if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                        return Err(ConfigError::Invalid {
                            setting: "turn_urls",
                            message: format!("{url:?} is not a turn: or turns: URL"),
                        });
                    }
                }
                let ttl = Duration::from_secs(cli.turn_ttl_s.or(file.turn_ttl_s).unwrap_or(3600));
                Some(TurnRest { urls: turn_urls, secret, ttl })
            }
        };

        let resume_secret = match (cli.resume_secret, cli.resume_secret_file.or(file.resume_secret_file)) {
            (Some(s), _) => Some(Secret::new(s)),
            (None, Some(path)) => Some(read_secret(&path)?),
            (None, None) => file.resume_secret,
        };
        let resume_key = match resume_secret {
            Some(secret) if secret.expose().chars().count() < MIN_RESUME_SECRET_CHARS => {
                return Err(ConfigError::Invalid {
                    setting: "resume_secret",
                    message: format!("must be at least {MIN_RESUME_SECRET_CHARS} characters"),
                });
            }
            Some(secret) => Some(TokenKey::new(secret.expose().as_bytes().to_vec())),
            None => None,
        };

        let tls = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    setting: "tls_cert/tls_key",
                    message: "give both the certificate and the key".into(),
                });
            }
        };

        let allowed_origins = if cli.allowed_origins.is_empty() { file.allowed_origins } else { cli.allowed_origins };
        for origin in &allowed_origins {
            check_origin(origin)?;
        }
        let access_defaults = AccessConfig::default();
        let max_connections = cli.max_connections.or(file.max_connections).unwrap_or(access_defaults.max_connections);
        if max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: "max_connections",
                message: "must be greater than zero".into(),
            });
        }
        let access = AccessConfig {
            allowed_origins,
            max_connections,
            max_connections_per_ip: cli
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(access_defaults.max_connections_per_ip),
        };

        let redis = match cli.redis.map(Secret::new).or(file.redis) {
            None => None,
            Some(url) => {
                if redis::Client::open(url.expose()).is_err() {
                    return Err(ConfigError::Invalid {
                        setting: "redis",
                        message: "not a valid redis://HOST:PORT URL".into(),
                    });
                }
                let node = match cli.node_id.or(file.node_id) {
                    Some(node) if !valid_node_id(&node) => {
                        return Err(ConfigError::Invalid {
                            setting: "node_id",
                            message: "must be 1 to 64 characters of letters, digits, '-', '_' or '.'".into(),
                        });
                    }
                    Some(node) => node,
                    None => {
                        use rand::RngCore as _;
                        format!("n{:08x}", rand::rng().next_u32())
                    }
                };
                Some(RedisConfig { url, node })
            }
        };

        Ok(Self {
            redis,
            listen: cli.listen.or(file.listen).unwrap_or(ServerConfig::default().listen),
            access,
            tls,
            hub: HubConfig {
                heartbeat,
                idle_timeout,
                resume_grace,
                interest_wait,
                rematch_cooldown,
                ice: IceConfig { servers, turn },
                resume_key,
                ..defaults
            },
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

/// The shortest resume secret accepted.
pub const MIN_RESUME_SECRET_CHARS: usize = 16;

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.message().to_string() })
}

fn read_secret(path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    Ok(Secret::new(text.trim()))
}

/// An origin as browsers send it: `http(s)://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), ConfigError> {
    let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    match rest.map(|r| r.trim_end_matches('/')) {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(()),
        _ => Err(ConfigError::Invalid {
            setting: "allowed_origins",
            message: format!("{origin:?} is not an origin such as https://duet.example or http://localhost:5173"),
        }),
    }
}

fn check_ice_url(url: &str, setting: &'static str) -> Result<(), ConfigError> {
    let ok = ["stun:", "stuns:", "turn:", "turns:"].iter().any(|p| url.starts_with(p)) && url.len() > 6;
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { setting, message: format!("{url:?} is not a stun:, stuns:, turn: or turns: URL") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::write(text)
    }

    /// Minimal temp-file helper (no extra dependency).
    mod tempfile_path {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct TempPath(PathBuf);
        impl TempPath {
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        pub fn write(text: &str) -> TempPath {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "duet-config-test-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&p, text).expect("write temp file");
            TempPath(p)
        }
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let cfg = ServerConfig::resolve(Cli::default()).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert!(cfg.tls.is_none() && cfg.hub.ice.turn.is_none());
        assert_eq!(cfg.hub.resume_grace, Duration::from_secs(15));
    }

    #[test]
    fn flags_override_the_file() {
        let f = file("listen = \"127.0.0.1:9000\"\nresume_grace_ms = 20000\nheartbeat_ms = 1000\n");
        let cli = Cli { config: Some(f.path().into()), resume_grace_ms: Some(5000), ..Cli::default() };
        let cfg = ServerConfig::resolve(cli).unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.hub.resume_grace, Duration::from_millis(5000));
        assert_eq!(cfg.hub.heartbeat, Duration::from_millis(1000));
    }

    #[test]
    fn a_resume_secret_from_the_file_signs_tokens_and_stays_out_of_debug_output() {
        let f = file("resume_secret = \"0123456789abcdef-restart\"\n");
        let cfg = ServerConfig::resolve(Cli { config: Some(f.path().into()), ..Cli::default() }).unwrap();
        let key = cfg.hub.resume_key.clone().expect("a key");
        let same = crate::hub::token::TokenKey::new(b"0123456789abcdef-restart".to_vec());
        let claims = crate::hub::token::Claims { session: "s".into(), pairing: None, issued: 1, instance: 1, nonce: 1 };
        assert_eq!(same.verify(&key.sign(&claims)), Some(claims));
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"), "secrets never in Debug output");
    }

    #[test]
    fn file_ice_servers_and_turn_rest() {
        let f = file(
            r#"
turn_urls = ["turn:127.0.0.1:3478"]
turn_secret = "topsecret"
[[ice_servers]]
urls = ["stun:127.0.0.1:3478"]
[[ice_servers]]
urls = ["turn:turn.example:3478"]
username = "u"
credential = "p"
"#,
        );
        let cfg = ServerConfig::resolve(Cli { config: Some(f.path().into()), ..Cli::default() }).unwrap();
        assert_eq!(cfg.hub.ice.servers.len(), 2);
        assert!(cfg.hub.ice.turn.is_some());
        assert!(!format!("{cfg:?}").contains("topsecret"), "secrets never in Debug output");
    }

    #[test]
    fn bad_settings_are_explained_without_secrets() {
        let err = |cli: Cli| ServerConfig::resolve(cli).unwrap_err().to_string();
        assert!(err(Cli { turn_urls: vec!["turn:x:1".into()], ..Cli::default() }).contains("turn secret"));
        let e = err(Cli { turn_secret: Some("hush-hush".into()), ..Cli::default() });
        assert!(e.contains("--turn-url") && !e.contains("hush-hush"), "{e}");
        let e =
            err(Cli { turn_secret: Some("hush-hush".into()), turn_urls: vec!["http://x".into()], ..Cli::default() });
        assert!(e.contains("turn_urls") && !e.contains("hush-hush"), "{e}");
        assert!(err(Cli { ice_servers: vec!["ftp://x".into()], ..Cli::default() }).contains("ice_servers"));
        assert!(err(Cli { tls_cert: Some("c.pem".into()), ..Cli::default() }).contains("tls"));
        assert!(err(Cli { heartbeat_ms: Some(0), ..Cli::default() }).contains("heartbeat_ms"));
        let e = err(Cli { resume_secret: Some("short-hush".into()), ..Cli::default() });
        assert!(e.contains("resume_secret") && e.contains("16") && !e.contains("short-hush"), "{e}");
        assert!(err(Cli { heartbeat_ms: Some(20000), ..Cli::default() }).contains("idle_timeout_ms"));
        let f = file("listen = 5\n");
        assert!(err(Cli { config: Some(f.path().into()), ..Cli::default() }).contains("invalid config file"));
        let f = file("colour = \"blue\"\n");
        assert!(err(Cli { config: Some(f.path().into()), ..Cli::default() }).contains("colour"));
        assert!(err(Cli { config: Some("/nonexistent/duet.toml".into()), ..Cli::default() }).contains("cannot read"));
        let f = file("[[ice_servers]]\nurls = [\"turn:t:1\"]\n");
        assert!(err(Cli { config: Some(f.path().into()), ..Cli::default() }).contains("username and credential"));
    }

    #[test]
    fn turn_secret_file_is_read_and_trimmed() {
        let f = file("s3cr3t\n");
        let cli = Cli {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret_file: Some(f.path().into()),
            ..Cli::default()
        };
        let cfg = ServerConfig::resolve(cli).unwrap();
        assert_eq!(cfg.hub.ice.turn.unwrap().secret.expose(), "s3cr3t");
    }

    #[test]
    fn redis_from_flag_or_file_with_a_node_id() {
        let cfg = ServerConfig::resolve(Cli::default()).unwrap();
        assert!(cfg.redis.is_none(), "in memory unless asked");
        let cli = Cli { redis: Some("redis://127.0.0.1:6390".into()), node_id: Some("eu-1".into()), ..Cli::default() };
        let redis = ServerConfig::resolve(cli).unwrap().redis.unwrap();
        assert_eq!((redis.url.expose(), redis.node.as_str()), ("redis://127.0.0.1:6390", "eu-1"));
        let f = file("redis = \"redis://10.0.0.5:6379\"\nnode_id = \"b\"\n");
        let redis =
            ServerConfig::resolve(Cli { config: Some(f.path().into()), ..Cli::default() }).unwrap().redis.unwrap();
        assert_eq!((redis.url.expose(), redis.node.as_str()), ("redis://10.0.0.5:6379", "b"));
        let random = ServerConfig::resolve(Cli { redis: Some("redis://h:1".into()), ..Cli::default() }).unwrap();
        assert!(crate::cluster::valid_node_id(&random.redis.unwrap().node));
        let e = ServerConfig::resolve(Cli { redis: Some("http://user:hunter2@x".into()), ..Cli::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis") && !e.contains("hunter2"), "{e}");
        let cli = Cli { redis: Some("redis://h:1".into()), node_id: Some("no spaces".into()), ..Cli::default() };
        assert!(ServerConfig::resolve(cli).unwrap_err().to_string().contains("node_id"));
    }

    #[test]
    fn the_example_node_config_of_the_deployment_guide_is_valid() {
        let resume = file("one-secret-for-the-whole-service\n");
        let turn = file("the-coturn-static-auth-secret\n");
        let text = include_str!("../../../docs/deploy/node-a.toml")
            .replace("/etc/duet/resume-secret", &resume.path().display().to_string())
            .replace("/etc/duet/turn-secret", &turn.path().display().to_string());
        let f = file(&text);
        // The Redis URL comes from the environment (DUET_REDIS_URL), as the guide says.
        let cli = Cli { config: Some(f.path().into()), redis: Some("redis://10.0.2.10:6379".into()), ..Cli::default() };
        let cfg = ServerConfig::resolve(cli).unwrap();
        assert_eq!(cfg.redis.unwrap().node, "node-a");
        assert_eq!(cfg.access.max_connections_per_ip, 0, "behind the balancer, limits are per balancer");
        assert!(cfg.hub.ice.turn.is_some() && cfg.hub.resume_key.is_some());
        assert!(!cfg.listen.ip().is_loopback());
    }
}
