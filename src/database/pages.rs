//! Reading rows a page at a time in key order (keyset pagination: `WHERE (keys) > (last
//! read) ORDER BY keys LIMIT n`, never OFFSET), re-reading one row, and the
//! compare-and-swap update that writes a row only if it still holds what was read.

use super::catalog::ResolvedColumn;
use super::connect::Connection;
use super::error::{DatabaseError, sql};
use super::rows::{Cell, KeyValue, bind_key, cell_at, key_at};
use super::sql::Statement;

/// A row of a page: its key and its ciphertext cell (`None` for NULL).
pub(crate) struct PageRow {
    pub key: Vec<KeyValue>,
    pub cell: Option<Cell>,
}

/// Up to `size` rows after `after` (from the start when `None`), in key order.
pub(crate) async fn page(
    connection: &Connection,
    column: &ResolvedColumn,
    after: Option<&[KeyValue]>,
    size: u32,
) -> Result<Vec<PageRow>, DatabaseError> {
    let mut statement = Statement::new(connection.engine);
    statement
        .push("SELECT ")
        .identifiers(&column.key_columns)
        .push(", ")
        .identifier(&column.column)
        .push(" FROM ")
        .identifier(&column.table);
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

/// The cell of the row with `key` now: `None` when the row is gone (or left the filter).
pub(crate) async fn reread(
    connection: &Connection,
    column: &ResolvedColumn,
    key: &[KeyValue],
) -> Result<Option<Option<Cell>>, DatabaseError> {
    let mut statement = Statement::new(connection.engine);
    statement
        .push("SELECT ")
        .identifiers(&column.key_columns)
        .push(", ")
        .identifier(&column.column)
        .push(" FROM ")
        .identifier(&column.table)
        .push(" WHERE ")
        .equal_each(&column.key_columns);
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
    match row {
        Some(row) => Ok(Some(read_row(connection, column, &row)?.cell)),
        None => Ok(None),
    }
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
    let cell = cell_at(row, column.key_columns.len()).map_err(|_| DatabaseError::ValueType {
        database: connection.name.clone(),
        table: column.table.clone(),
        column: column.column.clone(),
    })?;
    Ok(PageRow { key, cell })
}
