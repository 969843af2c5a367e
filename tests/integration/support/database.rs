//! Real database servers for the database tests: one PostgreSQL and one MariaDB per test
//! binary, each started on first use by `hack/database-server.sh` (from the Debian
//! packages, on loopback, in a temporary directory, as an unprivileged user), and one
//! fresh database per test.
//!
//! A server lives as long as the test binary: the script watches its standard input,
//! which closes when this process exits for any reason, and then stops the server and
//! removes its directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use keyward::crd::database::DatabaseEngine;
use sqlx::any::AnyPoolOptions;

/// A running server.
pub struct Server {
    engine: DatabaseEngine,
    /// `scheme://keyward:PASSWORD@127.0.0.1:PORT`, without a database.
    base_url: String,
    password: String,
    /// Kept so the script's standard input stays open while this process lives.
    _script: Mutex<Child>,
}

static POSTGRESQL: OnceLock<Server> = OnceLock::new();
static MARIADB: OnceLock<Server> = OnceLock::new();

/// The shared server of `engine`, started on first use.
pub fn server(engine: DatabaseEngine) -> &'static Server {
    match engine {
        DatabaseEngine::PostgreSQL => POSTGRESQL.get_or_init(|| Server::start(engine)),
        DatabaseEngine::MySQL => MARIADB.get_or_init(|| Server::start(engine)),
    }
}

impl Server {
    fn start(engine: DatabaseEngine) -> Self {
        let name = match engine {
            DatabaseEngine::PostgreSQL => "postgresql",
            DatabaseEngine::MySQL => "mariadb",
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!("keyward-{name}-{}", std::process::id()));
        let mut script = Command::new("bash")
            .arg(root.join("hack/database-server.sh"))
            .arg("run")
            .arg(name)
            .arg(&dir)
            .arg("--until-stdin-closes")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hack/database-server.sh starts");
        let stdout = script.stdout.take().expect("piped stdout");
        let base_url = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("ready ").map(str::to_owned))
            .unwrap_or_else(|| panic!("the {name} server came up (its log is above)"));
        let password = base_url
            .split_once("keyward:")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(password, _)| password.to_owned())
            .expect("the URL holds a password");
        Self {
            engine,
            base_url,
            password,
            _script: Mutex::new(script),
        }
    }

    /// The password of the server's user, which no error or log may show.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `scheme://keyward:PASSWORD@127.0.0.1:PORT/`, with no database (for broken URLs).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A fresh, empty database named after the test.
    pub async fn database(&'static self, test: &str) -> TestDatabase {
        sqlx::any::install_default_drivers();
        let name: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let admin_database = match self.engine {
            DatabaseEngine::PostgreSQL => "postgres",
            DatabaseEngine::MySQL => "mysql",
        };
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/{admin_database}", self.base_url))
            .await
            .expect("the server takes its user's connection");
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&admin)
            .await
            .expect("drop database");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let url = format!("{}/{name}", self.base_url);
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to the test database");
        TestDatabase {
            server: self,
            url,
            pool,
        }
    }
}

/// A test's own database, and a pool for the test's own statements.
pub struct TestDatabase {
    pub server: &'static Server,
    /// Its URL, with the password.
    pub url: String,
    pub pool: sqlx::AnyPool,
}

impl TestDatabase {
    /// The engine.
    pub fn engine(&self) -> DatabaseEngine {
        self.server.engine
    }

    /// Runs statements (no parameters), e.g. DDL.
    pub async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// `?` placeholders rewritten as the engine numbers them.
    pub fn placeholders(&self, sql: &str) -> String {
        match self.engine() {
            DatabaseEngine::MySQL => sql.to_owned(),
            DatabaseEngine::PostgreSQL => {
                let mut out = String::new();
                let mut count = 0;
                for character in sql.chars() {
                    if character == '?' {
                        count += 1;
                        out.push_str(&format!("${count}"));
                    } else {
                        out.push(character);
                    }
                }
                out
            }
        }
    }

    /// The text type wide enough for any value, and the binary type, of the engine.
    pub fn types(&self) -> (&'static str, &'static str) {
        match self.engine() {
            DatabaseEngine::PostgreSQL => ("TEXT", "BYTEA"),
            DatabaseEngine::MySQL => ("LONGTEXT", "LONGBLOB"),
        }
    }
}
