//! Reading rows a page at a time in key order (keyset pagination: `WHERE (keys) > (last
//! read) ORDER BY keys LIMIT n`, never OFFSET), re-reading one row, and the
//! compare-and-swap update that writes a row only if it still holds what was read.

use super::catalog::ResolvedColumn;
use super::connect::Connection;
use super::error::{DatabaseError, sql};
use super::rows::{Cell, KeyValue, bind_key, cell_at, key_at};
use super::sql::Statement;
use crate::crd::database::DatabaseEngine;

/// The largest cell read, in bytes: a larger one is only counted and named, never
/// fetched, so a page costs at most its row count times this whatever the table holds
/// (a cell may be a gigabyte, and the server is whoever the connection Secret names).
/// WSO2's values are a few hundred bytes to a few kilobytes.
pub(crate) const CELL_LIMIT: u64 = 256 * 1024;

/// A row of a page: its key and its ciphertext cell (`None` for NULL, and for a cell
/// over [`CELL_LIMIT`], which `oversized` tells apart).
pub(crate) struct PageRow {
    pub key: Vec<KeyValue>,
    pub cell: Option<Cell>,
    pub oversized: bool,
}

/// Pushes the ciphertext column, capped: the cell when it has at most [`CELL_LIMIT`]
/// bytes (else NULL), then whether it has more.
fn capped_cell(statement: &mut Statement, engine: DatabaseEngine, column: &str) {
    let integer = match engine {
        DatabaseEngine::PostgreSQL => "BIGINT",
        DatabaseEngine::MySQL => "SIGNED",
    };
    statement
        .push("CASE WHEN OCTET_LENGTH(")
        .identifier(column)
        .push(&format!(") <= {CELL_LIMIT} THEN "))
        .identifier(column)
        .push(" END, CAST(CASE WHEN OCTET_LENGTH(")
        .identifier(column)
        .push(&format!(") > {CELL_LIMIT} THEN 1 ELSE 0 END AS {integer})"));
}

/// `SELECT keys, capped cell, oversized FROM table`, for [`read_row`].
fn select(connection: &Connection, column: &ResolvedColumn) -> Statement {
    let mut statement = Statement::new(connection.engine);
    statement
        .push("SELECT ")
        .identifiers(&column.key_columns)
        .push(", ");
    capped_cell(&mut statement, connection.engine, &column.column);
    statement.push(" FROM ").identifier(&column.table);
    statement
}

/// Up to `size` rows after `after` (from the start when `None`), in key order.
pub(crate) async fn page(
    connection: &Connection,
    column: &ResolvedColumn,
    after: Option<&[KeyValue]>,
    size: u32,
) -> Result<Vec<PageRow>, DatabaseError> {
    let mut statement = select(connection, column);
    let mut conditions = 0;
    if let Some((filter, values)) = &column.filter {
        statement
            .push(" WHERE ")
            .identifier(filter)
            .push(" IN ")
            .parameter_list(values.len());
        conditions += 1;
    }
    if after.is_some() {
        statement.push(if conditions > 0 { " AND (" } else { " WHERE (" });
        statement
            .identifiers(&column.key_columns)
            .push(") > ")
            .parameter_list(column.key_columns.len());
    }
    statement
        .push(" ORDER BY ")
        .identifiers(&column.key_columns)
        .push(" LIMIT ")
        .push(&size.to_string());
    let mut query = sqlx::query(statement.text());
    if let Some((_, values)) = &column.filter {
        for value in values {
            query = query.bind(value.clone());
        }
    }
    for value in after.unwrap_or_default() {
        query = bind_key(query, value);
    }
    let rows = query
        .fetch_all(&connection.pool)
        .await
        .map_err(sql(&connection.name, "read a page of rows"))?;
    rows.iter()
        .map(|row| read_row(connection, column, row))
        .collect()
}

/// The row with `key` now: `None` when it is gone (or left the filter).
pub(crate) async fn reread(
    connection: &Connection,
    column: &ResolvedColumn,
    key: &[KeyValue],
) -> Result<Option<PageRow>, DatabaseError> {
    let mut statement = select(connection, column);
    statement.push(" WHERE ").equal_each(&column.key_columns);
    if let Some((filter, values)) = &column.filter {
        statement
            .push(" AND ")
            .identifier(filter)
            .push(" IN ")
            .parameter_list(values.len());
    }
    let mut query = sqlx::query(statement.text());
    for value in key {
        query = bind_key(query, value);
    }
    if let Some((_, values)) = &column.filter {
        for value in values {
            query = query.bind(value.clone());
        }
    }
    let row = query
        .fetch_optional(&connection.pool)
        .await
        .map_err(sql(&connection.name, "re-read a row"))?;
    row.map(|row| read_row(connection, column, &row))
        .transpose()
}

/// Writes `new` into the row with `key` only if it still holds `old`, in one statement
/// (its own short transaction); false when it did not (a concurrent writer won).
pub(crate) async fn compare_and_swap(
    connection: &Connection,
    column: &ResolvedColumn,
    key: &[KeyValue],
    old: &Cell,
    new: &Cell,
) -> Result<bool, DatabaseError> {
    let mut statement = Statement::new(connection.engine);
    statement
        .push("UPDATE ")
        .identifier(&column.table)
        .push(" SET ")
        .identifier(&column.column)
        .push(" = ")
        .parameter()
        .push(" WHERE ")
        .equal_each(&column.key_columns)
        .push(" AND ")
        .exactly_equal(&column.column);
    let mut query = new.bind(sqlx::query(statement.text()));
    for value in key {
        query = bind_key(query, value);
    }
    query = old.bind(query);
    let result = query
        .execute(&connection.pool)
        .await
        .map_err(sql(&connection.name, "update a row"))?;
    Ok(result.rows_affected() > 0)
}

fn read_row(
    connection: &Connection,
    column: &ResolvedColumn,
    row: &sqlx::any::AnyRow,
) -> Result<PageRow, DatabaseError> {
    let key = column
        .key_columns
        .iter()
        .enumerate()
        .map(|(index, name)| {
            key_at(row, index).map_err(|_| DatabaseError::KeyType {
                database: connection.name.clone(),
                table: column.table.clone(),
                column: name.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let unreadable = || DatabaseError::ValueType {
        database: connection.name.clone(),
        table: column.table.clone(),
        column: column.column.clone(),
    };
    let index = column.key_columns.len();
    let cell = cell_at(row, index).map_err(|_| unreadable())?;
    let oversized = sqlx::Row::try_get::<i64, _>(row, index + 1).map_err(|_| unreadable())? != 0;
    Ok(PageRow {
        key,
        cell,
        oversized,
    })
}
