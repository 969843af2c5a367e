//! Rows as keyward reads them: key values (integers or text), the cell holding the
//! ciphertext (text, or bytes from a binary column), and how a row is named in reports —
//! by table and key, never by value.

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyArguments, AnyRow, AnyTypeInfoKind};
use sqlx::query::Query;
use sqlx::{Any, Row, TypeInfo, ValueRef};

/// One value of a row's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyValue {
    Integer(i64),
    Text(String),
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(value) => write!(f, "{value}"),
            Self::Text(value) => write!(f, "{value:?}"),
        }
    }
}

/// A row named for a report: table, column (with its JSON path) and key values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRef {
    /// The table's name as the catalog spells it.
    pub table: String,
    /// The column's label (`TABLE.COLUMN`, with `#PATH` for a JSON path).
    pub column: String,
    /// The key columns and their values.
    pub key: Vec<(String, KeyValue)>,
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [", self.column)?;
        for (index, (column, value)) in self.key.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{column}={value}")?;
        }
        f.write_str("]")
    }
}

/// The ciphertext cell of a row, as the column's type holds it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    Text(String),
    Bytes(Vec<u8>),
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cell([not shown])")
    }
}

impl Cell {
    /// The cell as text: WSO2 ciphertext is ASCII, so bytes that are not UTF-8 hold none.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
        }
    }

    /// A cell of the same type holding `text`.
    pub(crate) fn with_text(&self, text: String) -> Self {
        match self {
            Self::Text(_) => Self::Text(text),
            Self::Bytes(_) => Self::Bytes(text.into_bytes()),
        }
    }

    pub(crate) fn bind<'q>(
        &self,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        match self {
            Self::Text(text) => query.bind(text.clone()),
            Self::Bytes(bytes) => query.bind(bytes.clone()),
        }
    }
}

/// Binds a key value.
pub(crate) fn bind_key<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    value: &KeyValue,
) -> Query<'q, Any, AnyArguments<'q>> {
    match value {
        KeyValue::Integer(value) => query.bind(*value),
        KeyValue::Text(value) => query.bind(value.clone()),
    }
}

/// Why a column of a row could not be read as keyward reads it.
#[derive(Debug)]
pub(crate) struct UnreadableColumn;

/// Reads column `index` as a key value.
pub(crate) fn key_at(row: &AnyRow, index: usize) -> Result<KeyValue, UnreadableColumn> {
    let raw = row.try_get_raw(index).map_err(|_| UnreadableColumn)?;
    if raw.is_null() {
        return Err(UnreadableColumn);
    }
    let kind = raw.type_info().kind();
    drop(raw);
    if kind.is_integer() {
        row.try_get::<i64, _>(index)
            .map(KeyValue::Integer)
            .map_err(|_| UnreadableColumn)
    } else if kind == AnyTypeInfoKind::Text {
        row.try_get::<String, _>(index)
            .map(KeyValue::Text)
            .map_err(|_| UnreadableColumn)
    } else {
        Err(UnreadableColumn)
    }
}

/// Reads column `index` as the ciphertext cell: `None` for NULL.
pub(crate) fn cell_at(row: &AnyRow, index: usize) -> Result<Option<Cell>, UnreadableColumn> {
    let raw = row.try_get_raw(index).map_err(|_| UnreadableColumn)?;
    if raw.is_null() {
        return Ok(None);
    }
    let kind = raw.type_info().kind();
    let is_null_type = raw.type_info().is_null();
    drop(raw);
    match kind {
        AnyTypeInfoKind::Text => row
            .try_get::<String, _>(index)
            .map(|text| Some(Cell::Text(text)))
            .map_err(|_| UnreadableColumn),
        AnyTypeInfoKind::Blob => row
            .try_get::<Vec<u8>, _>(index)
            .map(|bytes| Some(Cell::Bytes(bytes)))
            .map_err(|_| UnreadableColumn),
        _ if is_null_type => Ok(None),
        _ => Err(UnreadableColumn),
    }
}
