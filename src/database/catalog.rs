//! The columns to read, resolved against the database's catalog: each table and column
//! name is matched (without regard to case, as WSO2's scripts create them unquoted) to
//! the one the catalog holds, which is then the only spelling keyward sends, quoted.

use sqlx::Row;

use super::connect::Connection;
use super::error::{DatabaseError, sql};
use super::sql::Statement;
use crate::crd::database::{DatabaseEngine, EncryptedColumn, wso2_default_columns};

/// A column spec, checked against the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedColumn {
    /// The label of the spec (`TABLE.COLUMN`, `#PATH` for a JSON path), as given.
    pub label: String,
    /// The table, as the catalog spells it.
    pub table: String,
    /// The column holding the ciphertext, as the catalog spells it.
    pub column: String,
    /// The key columns rows are paged and updated by, as the catalog spells them.
    pub key_columns: Vec<String>,
    /// The filter column and the values it may hold.
    pub filter: Option<(String, Vec<String>)>,
    /// The JSON path's member names.
    pub json_path: Option<Vec<String>>,
    /// The column's declared width in characters, when it has one.
    pub width: Option<u64>,
    /// The column's declared width in bytes, when it has one (MySQL's TEXT and BLOB
    /// types are bounded in bytes, not characters).
    pub octets: Option<u64>,
}

impl ResolvedColumn {
    pub(crate) fn path(&self) -> Option<Vec<&str>> {
        self.json_path
            .as_ref()
            .map(|path| path.iter().map(String::as_str).collect())
    }
}

/// The columns a database's spec names, or WSO2's known columns when it names none; with
/// the defaults, tables the database does not have are skipped (returned by label).
pub(crate) async fn columns_or_defaults(
    connection: &Connection,
    spec: &[EncryptedColumn],
) -> Result<(Vec<ResolvedColumn>, Vec<String>), DatabaseError> {
    let defaults = spec.is_empty();
    let columns = if defaults {
        wso2_default_columns()
    } else {
        spec.to_vec()
    };
    let mut resolved = Vec::with_capacity(columns.len());
    let mut skipped = Vec::new();
    for column in &columns {
        match resolve(connection, column).await {
            Ok(column) => resolved.push(column),
            Err(DatabaseError::NoTable { .. }) if defaults => skipped.push(column.label()),
            Err(error) => return Err(error),
        }
    }
    Ok((resolved, skipped))
}

/// One column of the catalog: name, declared widths, and whether it may be NULL.
struct CatalogColumn {
    name: String,
    width: Option<u64>,
    octets: Option<u64>,
    nullable: bool,
}

async fn resolve(
    connection: &Connection,
    spec: &EncryptedColumn,
) -> Result<ResolvedColumn, DatabaseError> {
    let database = &connection.name;
    let table = table_named(connection, &spec.table).await?;
    let columns = columns_of(connection, &table).await?;
    let column_named = |name: &str| -> Result<&CatalogColumn, DatabaseError> {
        let mut matches = columns
            .iter()
            .filter(|column| column.name.eq_ignore_ascii_case(name));
        let found = matches.next().ok_or_else(|| DatabaseError::NoColumn {
            database: database.clone(),
            table: table.clone(),
            column: name.to_owned(),
        })?;
        if matches.next().is_some() {
            return Err(DatabaseError::Ambiguous {
                database: database.clone(),
                what: "column",
                name: name.to_owned(),
            });
        }
        Ok(found)
    };
    let value = column_named(&spec.column)?;
    let key_columns = if spec.key_columns.is_empty() {
        let primary = primary_key(connection, &table).await?;
        if primary.is_empty() {
            return Err(DatabaseError::NoPrimaryKey {
                database: database.clone(),
                table,
            });
        }
        primary
    } else {
        let named: Vec<&CatalogColumn> = spec
            .key_columns
            .iter()
            .map(|name| column_named(name))
            .collect::<Result<_, _>>()?;
        let names: Vec<String> = named.iter().map(|column| column.name.clone()).collect();
        // Rows are paged after the last key read: a key that two rows share, or that is
        // NULL, would skip rows, and the census with them.
        let unique = unique_keys(connection, &table)
            .await?
            .iter()
            .any(|key| same_columns(key, &names));
        if !unique || named.iter().any(|column| column.nullable) {
            return Err(DatabaseError::KeyNotUnique {
                database: database.clone(),
                table,
                columns: names,
            });
        }
        names
    };
    let filter = match &spec.filter {
        Some(filter) => Some((
            column_named(&filter.column)?.name.clone(),
            filter.values.clone(),
        )),
        None => None,
    };
    Ok(ResolvedColumn {
        label: spec.label(),
        column: value.name.clone(),
        width: value.width,
        octets: value.octets,
        table,
        key_columns,
        filter,
        json_path: spec
            .json_path
            .as_ref()
            .map(|path| path.split('.').map(str::to_owned).collect()),
    })
}

/// The catalog's spelling of table `name` in the current schema.
async fn table_named(connection: &Connection, name: &str) -> Result<String, DatabaseError> {
    let text = match connection.engine {
        DatabaseEngine::PostgreSQL => {
            "SELECT CAST(table_name AS VARCHAR) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND lower(table_name) = lower($1)"
        }
        DatabaseEngine::MySQL => {
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND lower(table_name) = lower(?)"
        }
    };
    let rows = sqlx::query(text)
        .bind(name.to_owned())
        .fetch_all(&connection.pool)
        .await
        .map_err(sql(&connection.name, "read the catalog's tables"))?;
    let mut names = rows
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(&connection.name, "read the catalog's tables"))?;
    match names.len() {
        0 => Err(DatabaseError::NoTable {
            database: connection.name.clone(),
            table: name.to_owned(),
        }),
        1 => Ok(names.remove(0)),
        _ => Err(DatabaseError::Ambiguous {
            database: connection.name.clone(),
            what: "table",
            name: name.to_owned(),
        }),
    }
}

/// The columns of `table` (as the catalog spells it).
async fn columns_of(
    connection: &Connection,
    table: &str,
) -> Result<Vec<CatalogColumn>, DatabaseError> {
    let text = match connection.engine {
        DatabaseEngine::PostgreSQL => {
            "SELECT CAST(column_name AS VARCHAR), CAST(character_maximum_length AS BIGINT), \
             CAST(character_octet_length AS BIGINT), CAST(is_nullable AS VARCHAR) \
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1"
        }
        DatabaseEngine::MySQL => {
            "SELECT CAST(column_name AS CHAR), CAST(character_maximum_length AS SIGNED), \
             CAST(character_octet_length AS SIGNED), CAST(is_nullable AS CHAR) \
             FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?"
        }
    };
    let rows = sqlx::query(text)
        .bind(table.to_owned())
        .fetch_all(&connection.pool)
        .await
        .map_err(sql(&connection.name, "read the catalog's columns"))?;
    rows.iter()
        .map(|row| {
            let width = |index| -> Result<Option<u64>, sqlx::Error> {
                Ok(row
                    .try_get::<Option<i64>, _>(index)?
                    .and_then(|width| u64::try_from(width).ok()))
            };
            Ok(CatalogColumn {
                name: row.try_get::<String, _>(0)?,
                width: width(1)?,
                // PostgreSQL's octet length is an upper bound it does not enforce (it
                // limits characters); MySQL enforces bytes for its TEXT and BLOB types.
                octets: match connection.engine {
                    DatabaseEngine::MySQL => width(2)?,
                    DatabaseEngine::PostgreSQL => None,
                },
                nullable: row.try_get::<String, _>(3)? != "NO",
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(sql(&connection.name, "read the catalog's columns"))
}

/// The primary key's columns of `table`, in key order.
async fn primary_key(connection: &Connection, table: &str) -> Result<Vec<String>, DatabaseError> {
    let mut statement = Statement::new(connection.engine);
    match connection.engine {
        DatabaseEngine::PostgreSQL => statement.push(
            "SELECT CAST(k.column_name AS VARCHAR) FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name \
             AND k.constraint_schema = c.constraint_schema AND k.table_name = c.table_name \
             WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema() \
             AND c.table_name = $1 ORDER BY k.ordinal_position",
        ),
        DatabaseEngine::MySQL => statement.push(
            "SELECT CAST(column_name AS CHAR) FROM information_schema.key_column_usage \
             WHERE table_schema = DATABASE() AND table_name = ? AND constraint_name = 'PRIMARY' \
             ORDER BY ordinal_position",
        ),
    };
    let rows = sqlx::query(statement.text())
        .bind(table.to_owned())
        .fetch_all(&connection.pool)
        .await
        .map_err(sql(&connection.name, "read the table's primary key"))?;
    rows.iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(sql(&connection.name, "read the table's primary key"))
}

/// The column sets of `table`'s primary key and unique constraints.
async fn unique_keys(
    connection: &Connection,
    table: &str,
) -> Result<Vec<Vec<String>>, DatabaseError> {
    let text = match connection.engine {
        DatabaseEngine::PostgreSQL => {
            "SELECT CAST(c.constraint_name AS VARCHAR), CAST(k.column_name AS VARCHAR) \
             FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name \
             AND k.constraint_schema = c.constraint_schema AND k.table_name = c.table_name \
             WHERE c.constraint_type IN ('PRIMARY KEY', 'UNIQUE') \
             AND c.table_schema = current_schema() AND c.table_name = $1"
        }
        DatabaseEngine::MySQL => {
            "SELECT CAST(c.constraint_name AS CHAR), CAST(k.column_name AS CHAR) \
             FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name \
             AND k.constraint_schema = c.constraint_schema AND k.table_name = c.table_name \
             WHERE c.constraint_type IN ('PRIMARY KEY', 'UNIQUE') \
             AND c.table_schema = DATABASE() AND c.table_name = ?"
        }
    };
    let rows = sqlx::query(text)
        .bind(table.to_owned())
        .fetch_all(&connection.pool)
        .await
        .map_err(sql(&connection.name, "read the table's unique keys"))?;
    let mut keys: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in &rows {
        let read = |index| row.try_get::<String, _>(index);
        let (constraint, column) = read(0)
            .and_then(|constraint| Ok((constraint, read(1)?)))
            .map_err(sql(&connection.name, "read the table's unique keys"))?;
        keys.entry(constraint).or_default().push(column);
    }
    Ok(keys.into_values().collect())
}

/// Whether `key` and `columns` name the same columns, in any order.
fn same_columns(key: &[String], columns: &[String]) -> bool {
    let mut key = key.to_vec();
    let mut columns = columns.to_vec();
    key.sort();
    columns.sort();
    key == columns
}
