//! The service under test: one already running at a URL, or one started in this process over a fresh
//! database (created here, dropped afterwards).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::sync::oneshot;
use uuid::Uuid;
use wallet_service::app::App;
use wallet_service::auth::{AuthConfig, Caller, KeySource, Role, mint_hs256};
use wallet_service::config::{Config, LogFormat};

/// Lifetime of the tokens the harness mints (longer than any run).
pub const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Mints tokens the service accepts (HS256 with its `JWT_SECRET`).
#[derive(Clone)]
pub struct Auth {
    pub secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
}

impl Auth {
    pub fn token(&self, role: Role) -> String {
        let caller = Caller {
            user_id: Uuid::new_v4(),
            role,
            company_id: Uuid::new_v4(),
        };
        mint_hs256(&self.secret, &self.issuer, &self.audience, &caller, TOKEN_TTL)
    }
}

/// How to reach (or start) the service.
#[derive(Debug, Clone)]
pub struct TargetOpts {
    /// Base URL of a running service; `None` with `spawn`.
    pub url: Option<String>,
    /// The service's database (for the books check and the pgbench baseline) in URL mode.
    pub database_url: Option<String>,
    pub spawn: bool,
    /// A database on the server where `--spawn` creates (and drops) its own.
    pub admin_database_url: String,
    pub pool_size: usize,
    /// Worker threads of the in-process service's runtime.
    pub service_threads: usize,
    pub keep_db: bool,
    pub jwt_secret: Option<String>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// With --spawn: run the service's events (consumer and outbox relay) on this broker, under these
    /// names.
    pub events: Option<(String, wallet_service::events::Topology)>,
    /// With --spawn and events: the consumer's prefetch (`AMQP_PREFETCH` of a deployed service).
    pub prefetch: u16,
    /// With --spawn: the service's `AUDIT_CHAIN` (off only for `chain-cost`, to measure the chain).
    pub audit_chain: bool,
    /// With --spawn: the service's `GROUP_COMMITTERS`.
    pub group_committers: usize,
    /// With --spawn: the service's `SPEND_FOLD_INTERVAL_SECS`.
    pub spend_fold_every: std::time::Duration,
}

struct Spawned {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    admin_url: String,
    db_name: String,
    keep_db: bool,
    events: Option<(String, wallet_service::events::Topology)>,
}

/// A reachable service.
pub struct Target {
    pub base_url: String,
    pub database_url: Option<String>,
    pub auth: Auth,
    /// For reports: "in-process (...)" or the URL.
    pub description: String,
    spawned: Option<Spawned>,
}

/// Replaces the database name in a `postgres://` URL.
pub fn with_db(url: &str, db: &str) -> anyhow::Result<String> {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let rest = head
        .strip_prefix("postgres://")
        .or_else(|| head.strip_prefix("postgresql://"))
        .ok_or_else(|| anyhow!("expected a postgres:// URL, got {url:?}"))?;
    let host = rest.split_once('/').map_or(rest, |(h, _)| h);
    let scheme = if head.starts_with("postgresql://") {
        "postgresql"
    } else {
        "postgres"
    };
    Ok(match query {
        Some(q) => format!("{scheme}://{host}/{db}?{q}"),
        None => format!("{scheme}://{host}/{db}"),
    })
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("database connection ended: {e}");
        }
    });
    Ok(client)
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Target {
    pub async fn start(o: &TargetOpts) -> anyhow::Result<Target> {
        let issuer = o.jwt_issuer.clone();
        let audience = o.jwt_audience.clone();
        if o.spawn {
            if o.url.is_some() {
                bail!("--spawn and --url exclude each other");
            }
            let secret = o
                .jwt_secret
                .clone()
                .unwrap_or_else(|| format!("loadtest-{}-{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()));
            let auth = Auth {
                secret: secret.clone().into_bytes(),
                issuer,
                audience,
            };
            return Self::spawn(o, auth).await;
        }
        let Some(url) = &o.url else {
            bail!("say where the service is: --url http://host:port, or --spawn to start one in process");
        };
        let Some(secret) = &o.jwt_secret else {
            bail!("--url needs the service's JWT_SECRET (--jwt-secret or the JWT_SECRET variable) to mint tokens");
        };
        Ok(Target {
            base_url: url.trim_end_matches('/').to_string(),
            database_url: o.database_url.clone(),
            auth: Auth {
                secret: secret.clone().into_bytes(),
                issuer,
                audience,
            },
            description: format!("service at {url}"),
            spawned: None,
        })
    }

    async fn spawn(o: &TargetOpts, auth: Auth) -> anyhow::Result<Target> {
        let db_name = format!("wallet_loadtest_{}", Uuid::new_v4().simple());
        let admin = connect(&o.admin_database_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .context("creating the run's database")?;
        let database_url = with_db(&o.admin_database_url, &db_name)?;
        let config = Config {
            port: 0,
            database_url: database_url.clone(),
            database_read_url: None,
            pool_size: o.pool_size,
            redis_url: None,
            amqp_url: o.events.as_ref().map(|(url, _)| url.clone()),
            auth: AuthConfig {
                key: KeySource::Hs256Secret(auth.secret.clone()),
                issuer: auth.issuer.clone(),
                audience: auth.audience.clone(),
            },
            pii_key_b64: None,
            log_format: LogFormat::Text,
            actor_idle_timeout: wallet_actors::supervisor::DEFAULT_IDLE_TIMEOUT,
            actor_max_live: wallet_actors::supervisor::MAX_LIVE_ACTORS,
            default_currency: wallet_actors::Currency::Usd,
            // The run's wallets open with `--initial-balance`, far above the production default.
            max_initial_balance: wallet_actors::Amount::MAX,
            default_budgets: vec![],
            alert_thresholds: wallet_actors::budget::DEFAULT_ALERT_THRESHOLDS.to_vec(),
            hold_overcapture_percent: 0,
            audit_chain: o.audit_chain,
            monitor: wallet_actors::monitor::MonitorLimits::default(),
            rate_limit_per_second: None,
            amqp_prefetch: o.prefetch,
            booking_shards: 0,
            group_committers: o.group_committers,
            spend_fold_every: o.spend_fold_every,
            timeouts: Default::default(),
            transport: Default::default(),
        };
        let events = wallet_service::events::EventsConfig {
            topology: o.events.as_ref().map(|(_, t)| t.clone()).unwrap_or_default(),
            prefetch: o.prefetch,
            ..wallet_service::events::EventsConfig::default()
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (port_tx, port_rx) = oneshot::channel::<Result<u16, String>>();
        let threads = o.service_threads.max(1);
        // Its own runtime on its own threads, like a separate process sharing the machine.
        let thread = std::thread::Builder::new()
            .name("wallet-service".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("svc-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = port_tx.send(Err(format!("service runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match App::build_with_events(config, events).await {
                        Ok(app) => {
                            let _ = port_tx.send(Ok(app.port()));
                            app.run(async move {
                                let _ = stop_rx.await;
                            })
                            .await;
                        }
                        Err(e) => {
                            let _ = port_tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .context("starting the service thread")?;
        let mut spawned = Spawned {
            stop: Some(stop_tx),
            thread: Some(thread),
            admin_url: o.admin_database_url.clone(),
            db_name: db_name.clone(),
            keep_db: o.keep_db,
            events: o.events.clone(),
        };
        let port = match port_rx.await {
            Ok(Ok(p)) => p,
            other => {
                let why = match other {
                    Ok(Err(e)) => e,
                    _ => "the service thread ended before listening".into(),
                };
                spawned.stop().await;
                bail!("the in-process service did not start: {why}");
            }
        };
        Ok(Target {
            base_url: format!("http://127.0.0.1:{port}"),
            database_url: Some(database_url),
            auth,
            description: format!(
                "in-process service ({threads} runtime threads, pool {}, {} group committers{}) over fresh database {db_name}",
                o.pool_size,
                o.group_committers,
                if o.audit_chain { "" } else { ", AUDIT_CHAIN=off" }
            ),
            spawned: Some(spawned),
        })
    }

    /// Stops an in-process service and drops its database (unless kept). Nothing for a URL target.
    pub async fn shutdown(mut self) {
        if let Some(mut s) = self.spawned.take() {
            s.stop().await;
        }
    }
}

impl Spawned {
    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some((url, topology)) = self.events.take() {
            crate::amqp::delete_topology(&url, &topology).await;
        }
        if self.keep_db {
            eprintln!("kept database {}", self.db_name);
            return;
        }
        match connect(&self.admin_url).await {
            Ok(c) => {
                if let Err(e) = c
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
                    .await
                {
                    eprintln!("could not drop database {}: {e}", self.db_name);
                }
            }
            Err(e) => eprintln!("could not drop database {}: {e}", self.db_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            with_db("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_db("postgresql://u:p@h/db?sslmode=disable", "y").unwrap(),
            "postgresql://u:p@h/y?sslmode=disable"
        );
        assert_eq!(with_db("postgres://h:5432", "z").unwrap(), "postgres://h:5432/z");
        assert!(with_db("mysql://h/db", "z").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
