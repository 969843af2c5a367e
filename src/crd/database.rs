//! The databases a WSO2 API Manager keeps its own ciphertext in, as an EncryptionKey's
//! `spec.reencryption.databases` names them: where to connect, and which columns hold
//! WSO2 ciphertext.
//!
//! Identifiers are bounded and restricted by the schema, and the database layer quotes
//! them anyway; filter values are always bound as parameters. No raw SQL is accepted.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// Regular expression for a table or column name: letters, digits, `_` and `$`, not
/// starting with a digit (what WSO2's schemas use, and what both engines take unquoted).
pub const SQL_IDENTIFIER: &str = r"^[A-Za-z_][A-Za-z0-9_$]*$";
/// The longest table or column name: PostgreSQL's limit (MySQL's is 64).
pub const SQL_IDENTIFIER_MAX: u32 = 63;
/// Regular expression for a JSON path: object member names joined by dots.
pub const JSON_PATH: &str = r"^[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*$";
/// Regular expression for a DNS label (a database's name in status and metrics).
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A database holding WSO2 ciphertext that re-encryption rewrites and the census counts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// Names the database in status, logs and metrics: a DNS label, unique in the list.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub name: String,
    /// `PostgreSQL`, or `MySQL` (which covers MariaDB).
    pub engine: DatabaseEngine,
    /// A Secret key holding the connection URL, `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// or `mysql://USER:PASSWORD@HOST:PORT/DB`, with TLS options as URL parameters
    /// (`sslmode=verify-full`, `ssl-mode=VERIFY_IDENTITY`, `sslrootcert=…`). The URL is
    /// never logged or shown in status.
    pub connection_secret_ref: SecretKeyRef,
    /// The columns holding WSO2 ciphertext. Default (empty): WSO2's known encrypted
    /// columns, those of its own key-rotation tool plus `IDN_OAUTH_CONSUMER_SECRETS`;
    /// tables the database does not have are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.table == c.table && d.column == c.column && (has(d.jsonPath) ? d.jsonPath : '') == (has(c.jsonPath) ? c.jsonPath : '')))")
        .message("spec.reencryption.databases columns must each name a different table, column and jsonPath: one re-encryption pass per column"))]
    pub columns: Vec<EncryptedColumn>,
}

/// A database engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DatabaseEngine {
    /// PostgreSQL.
    PostgreSQL,
    /// MySQL or MariaDB.
    MySQL,
}

/// A column holding WSO2 ciphertext, whole or at a JSON path inside it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedColumn {
    /// The table, in the connection's current schema (matched without regard to case,
    /// as WSO2's scripts create them unquoted).
    #[schemars(length(min = 1, max = SQL_IDENTIFIER_MAX), regex(pattern = SQL_IDENTIFIER))]
    pub table: String,
    /// The column holding the ciphertext (text or binary).
    #[schemars(length(min = 1, max = SQL_IDENTIFIER_MAX), regex(pattern = SQL_IDENTIFIER))]
    pub column: String,
    /// Columns that identify a row (together unique, never NULL; integers or text),
    /// which rows are paged and updated by. Default: the table's primary key, read from
    /// the catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 1, max = SQL_IDENTIFIER_MAX), regex(pattern = SQL_IDENTIFIER))
    )]
    pub key_columns: Vec<String>,
    /// Only rows whose `column` holds one of these values (as `REG_PROPERTY`'s
    /// `REG_NAME` picks its passwords).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<RowFilter>,
    /// The ciphertext is the string at this path inside a JSON object held by the
    /// column (`a.b.c`: member `c` of member `b` of member `a`); only that string is
    /// rewritten, every other byte of the document is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = JSON_PATH))]
    pub json_path: Option<String>,
}

/// Rows whose `column` equals one of `in`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RowFilter {
    /// The column compared.
    #[schemars(length(min = 1, max = SQL_IDENTIFIER_MAX), regex(pattern = SQL_IDENTIFIER))]
    pub column: String,
    /// The values it may hold.
    #[serde(rename = "in")]
    #[schemars(length(min = 1, max = 32), inner(length(max = 1024)))]
    pub values: Vec<String>,
}

impl EncryptedColumn {
    /// A whole column, keyed by the table's primary key.
    pub fn whole(table: &str, column: &str) -> Self {
        Self {
            table: table.to_owned(),
            column: column.to_owned(),
            key_columns: Vec::new(),
            filter: None,
            json_path: None,
        }
    }

    /// How status, logs and checkpoints name it: `TABLE.COLUMN`, with `#PATH` for a
    /// JSON path.
    pub fn label(&self) -> String {
        match &self.json_path {
            Some(path) => format!("{}.{}#{}", self.table, self.column, path),
            None => format!("{}.{}", self.table, self.column),
        }
    }
}

/// WSO2's known encrypted columns: those its own offline key-rotation tool re-encrypts
/// (wso2/identity-tools `DBConstants.java`) and API Manager 4.7's
/// `IDN_OAUTH_CONSUMER_SECRETS.SECRET_VALUE`. Not `WF_REQUEST.REQUEST`: WSO2 keeps a
/// Java-serialized workflow request there with the ciphertext inside it, which no column
/// rule can reach (a `jobTemplate` must).
pub fn wso2_default_columns() -> Vec<EncryptedColumn> {
    let mut columns: Vec<EncryptedColumn> = [
        ("IDN_IDENTITY_USER_DATA", "DATA_VALUE"),
        ("IDN_OAUTH2_AUTHORIZATION_CODE", "AUTHORIZATION_CODE"),
        ("IDN_OAUTH2_ACCESS_TOKEN", "ACCESS_TOKEN"),
        ("IDN_OAUTH2_ACCESS_TOKEN", "REFRESH_TOKEN"),
        ("IDN_OAUTH_CONSUMER_APPS", "CONSUMER_SECRET"),
        ("IDN_OAUTH_CONSUMER_SECRETS", "SECRET_VALUE"),
        ("WF_BPS_PROFILE", "PASSWORD"),
    ]
    .into_iter()
    .map(|(table, column)| EncryptedColumn::whole(table, column))
    .collect();
    columns.push(EncryptedColumn {
        filter: Some(RowFilter {
            column: "REG_NAME".to_owned(),
            values: ["password", "privatekeyPass", "subscriberPassword"]
                .map(str::to_owned)
                .to_vec(),
        }),
        ..EncryptedColumn::whole("REG_PROPERTY", "REG_VALUE")
    });
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_columns_are_wso2s_and_labelled_uniquely() {
        let columns = wso2_default_columns();
        let mut labels: Vec<String> = columns.iter().map(EncryptedColumn::label).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), columns.len());
        assert!(labels.contains(&"REG_PROPERTY.REG_VALUE".to_owned()));
    }

    #[test]
    fn a_database_reads_from_the_documented_yaml() {
        let database: Database = serde_yaml::from_str(
            r#"
name: apim-db
engine: PostgreSQL
connectionSecretRef: {name: apim-db, key: url}
columns:
- table: REG_PROPERTY
  column: REG_VALUE
  keyColumns: [REG_ID, REG_TENANT_ID]
  where: {column: REG_NAME, in: [password]}
- table: AM_KEY_MANAGER
  column: ADDITIONAL_PROPERTIES
  jsonPath: "a.b.c"
"#,
        )
        .expect("valid");
        assert_eq!(
            database.columns[0].filter.as_ref().expect("filter").values,
            ["password"]
        );
        assert_eq!(
            database.columns[1].label(),
            "AM_KEY_MANAGER.ADDITIONAL_PROPERTIES#a.b.c"
        );
    }
}
