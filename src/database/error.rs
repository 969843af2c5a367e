//! The database layer's errors, in our own words: a driver's error can carry a
//! connection URL, a user name or a row's value, so only its kind and SQLSTATE pass.

use std::fmt;

/// Why a database operation failed. Never holds a URL, password or column value.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("database {database}: the connection URL is not a {engine} URL (expected {expected}…)")]
    UrlScheme {
        database: String,
        engine: &'static str,
        expected: &'static str,
    },
    #[error("database {database}: cannot {action}: {cause}")]
    Sql {
        database: String,
        action: &'static str,
        cause: SqlCause,
    },
    #[error("database {database}: table {table} is not in the connection's current schema")]
    NoTable { database: String, table: String },
    #[error("database {database}: table {table} has no column {column}")]
    NoColumn {
        database: String,
        table: String,
        column: String,
    },
    #[error(
        "database {database}: {what} {name} matches more than one name differing only in case; rename one"
    )]
    Ambiguous {
        database: String,
        what: &'static str,
        name: String,
    },
    #[error("database {database}: table {table} has no primary key; name its keyColumns")]
    NoPrimaryKey { database: String, table: String },
    #[error(
        "database {database}: keyColumns {columns:?} of table {table} are not its primary key or a unique key of NOT NULL columns; rows would be skipped"
    )]
    KeyNotUnique {
        database: String,
        table: String,
        columns: Vec<String>,
    },
    #[error(
        "database {database}: column {table}.{column} is NULL in a row, or of a type keyward does not read as a row key (integers and text are)"
    )]
    KeyType {
        database: String,
        table: String,
        column: String,
    },
    #[error(
        "database {database}: column {table}.{column} is of a type keyward does not read as ciphertext (text and binary are)"
    )]
    ValueType {
        database: String,
        table: String,
        column: String,
    },
    #[error(
        "database {database}: the checkpoint for {column} has {found} key values; the table's key has {expected}"
    )]
    Checkpoint {
        database: String,
        column: String,
        found: usize,
        expected: usize,
    },
}

/// What went wrong in the driver, without anything it may have quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlCause {
    /// The URL did not parse or names an unknown option.
    Configuration,
    /// The server answered with an error.
    Server { sqlstate: Option<String> },
    /// The network failed.
    Io(std::io::ErrorKind),
    /// TLS failed (certificate, protocol).
    Tls,
    /// The server spoke something unexpected.
    Protocol,
    /// No connection came within the timeout.
    Timeout,
    /// A result had an unexpected shape or type.
    Decode,
    /// Anything else the driver reports.
    Other,
}

impl fmt::Display for SqlCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Configuration => f.write_str("the connection URL is invalid"),
            Self::Server {
                sqlstate: Some(code),
            } => write!(f, "the server refused (SQLSTATE {code})"),
            Self::Server { sqlstate: None } => f.write_str("the server refused"),
            Self::Io(kind) => write!(f, "network error ({kind})"),
            Self::Tls => f.write_str("TLS failed"),
            Self::Protocol => f.write_str("protocol error"),
            Self::Timeout => f.write_str("no connection within the timeout"),
            Self::Decode => f.write_str("a result had an unexpected type"),
            Self::Other => f.write_str("driver error"),
        }
    }
}

impl SqlCause {
    /// The cause of a driver error, keeping only what cannot quote a secret: a SQLSTATE
    /// is five characters from a fixed set, an I/O error kind is an enum.
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Configuration(_) => Self::Configuration,
            sqlx::Error::Database(database) => Self::Server {
                sqlstate: database
                    .code()
                    .filter(|code| {
                        code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric())
                    })
                    .map(|code| code.into_owned()),
            },
            sqlx::Error::Io(io) => Self::Io(io.kind()),
            sqlx::Error::Tls(_) => Self::Tls,
            sqlx::Error::Protocol(_) => Self::Protocol,
            sqlx::Error::PoolTimedOut => Self::Timeout,
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::RowNotFound => Self::Decode,
            _ => Self::Other,
        }
    }
}

/// Maps a driver error for `action` on `database`.
pub(crate) fn sql(
    database: &str,
    action: &'static str,
) -> impl FnOnce(sqlx::Error) -> DatabaseError {
    let database = database.to_owned();
    move |error| DatabaseError::Sql {
        database,
        action,
        cause: SqlCause::of(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_keeps_only_its_sqlstate() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "postgres://user:hunter2@db/x",
        ));
        let error = sql("apim-db", "connect")(io);
        let text = format!("{error} {error:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("apim-db"));
        let configuration = sqlx::Error::Configuration("postgres://user:hunter2@db/x".into());
        let text = format!("{:?}", sql("apim-db", "connect")(configuration));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
