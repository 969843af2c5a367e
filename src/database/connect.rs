//! Connecting to a database: the URL is secret (it holds a password), so it lives in a
//! zeroizing buffer that prints as `[redacted]`, and the pool that holds it is never shown.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use zeroize::Zeroizing;

use super::error::{DatabaseError, sql};
use crate::crd::database::DatabaseEngine;

/// How long to wait for a connection (connect, TLS, authentication) before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections held open: one pages, one writes.
const POOL_SIZE: u32 = 2;

/// Every session's limits, so that a row lock an API-manager transaction holds, or a
/// server that stops answering, fails a statement instead of hanging the Job or the
/// operator's census; MySQL's strict mode makes a value too long for its column an error
/// instead of a silent truncation.
const POSTGRESQL_SESSION: &str = "SELECT set_config('statement_timeout', '120s', false), \
     set_config('lock_timeout', '15s', false), \
     set_config('idle_in_transaction_session_timeout', '60s', false)";
const MYSQL_SESSION: &str = "SET SESSION innodb_lock_wait_timeout = 15, \
     sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, 'STRICT_ALL_TABLES')";

/// A connection URL (`postgres://…`, `mysql://…`), with whatever password it holds.
pub struct ConnectionUrl(Zeroizing<String>);

impl ConnectionUrl {
    /// Takes the URL as read from a Secret or file; surrounding whitespace (a trailing
    /// newline) is dropped.
    pub fn new(text: &str) -> Self {
        Self(Zeroizing::new(text.trim().to_owned()))
    }

    fn matches(&self, engine: DatabaseEngine) -> bool {
        let schemes: &[&str] = match engine {
            DatabaseEngine::PostgreSQL => &["postgres://", "postgresql://"],
            DatabaseEngine::MySQL => &["mysql://", "mariadb://"],
        };
        schemes.iter().any(|scheme| self.0.starts_with(scheme))
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionUrl([redacted])")
    }
}

/// An open database: its name (for status and errors), its engine and a small pool.
pub struct Connection {
    pub(crate) name: String,
    pub(crate) engine: DatabaseEngine,
    pub(crate) pool: sqlx::AnyPool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the database `name` (as the EncryptionKey names it) at `url`, which
    /// must be a URL of `engine`.
    pub async fn connect(
        name: &str,
        engine: DatabaseEngine,
        url: &ConnectionUrl,
    ) -> Result<Self, DatabaseError> {
        if !url.matches(engine) {
            return Err(DatabaseError::UrlScheme {
                database: name.to_owned(),
                engine: engine_name(engine),
                expected: match engine {
                    DatabaseEngine::PostgreSQL => "postgres://",
                    DatabaseEngine::MySQL => "mysql://",
                },
            });
        }
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(&url.0)
            .map_err(sql(name, "read the connection URL"))?
            // Statements carry only placeholders, but nothing of a run needs to be logged
            // by the driver.
            .disable_statement_logging();
        let session = match engine {
            DatabaseEngine::PostgreSQL => POSTGRESQL_SESSION,
            DatabaseEngine::MySQL => MYSQL_SESSION,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *connection, session).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(sql(name, "connect"))?;
        Ok(Self {
            name: name.to_owned(),
            engine,
            pool,
        })
    }

    /// The database's name, as status and errors use it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the pool's connections.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// The engine's name in messages.
pub(crate) fn engine_name(engine: DatabaseEngine) -> &'static str {
    match engine {
        DatabaseEngine::PostgreSQL => "PostgreSQL",
        DatabaseEngine::MySQL => "MySQL",
    }
}
