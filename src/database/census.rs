//! The key-free census: what each encrypted column holds, counted per WSO2 key id,
//! without any key. It decides whether a rotation may be staged (no row without a key
//! id, no legacy AES/ECB row) and retired (no row under the old key id).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::{ResolvedColumn, columns_or_defaults};
use super::connect::Connection;
use super::error::DatabaseError;
use super::pages::page;
use super::rows::KeyValue;
use super::value::{Classified, classify};
use crate::crd::database::EncryptedColumn;
use crate::crypto::wso2::{KeyId, Kind};

/// What one column holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnCensus {
    /// The column's label (`TABLE.COLUMN`, `#PATH` for a JSON path).
    pub column: String,
    /// AES-GCM values per key id (a key id is not secret, but it names a key: keep it
    /// out of metric labels).
    pub by_key_id: BTreeMap<String, u64>,
    /// AES-GCM values without a key id: WSO2 reads them with `old_key` once key ids are
    /// on, so they must be backfilled before a rotation is staged.
    pub without_key_id: u64,
    /// Legacy AES/ECB values: WSO2 reads them with the current `key` only.
    pub legacy_ecb: u64,
    /// RSA values: no symmetric key reads them.
    pub rsa: u64,
    /// Ciphertexts of the empty plaintext, which every key reads.
    pub empty_plaintext: u64,
    /// Values that are not WSO2 ciphertext (plaintext): reported, never rewritten.
    pub not_ciphertext: u64,
    /// Cells over the size any WSO2 value has, not read: what they hold is unknown, so
    /// they count as needing every key (see [`DatabaseCensus::rows_unread`]).
    pub oversized: u64,
    /// NULL or empty cells, or documents without the JSON path: skipped.
    pub absent: u64,
}

impl ColumnCensus {
    /// Rows holding WSO2 ciphertext of any kind.
    pub fn ciphertexts(&self) -> u64 {
        self.by_key_id.values().sum::<u64>()
            + self.without_key_id
            + self.legacy_ecb
            + self.rsa
            + self.empty_plaintext
    }
}

/// What a database's encrypted columns hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseCensus {
    /// The database's name.
    pub database: String,
    /// One entry per column, in the spec's order.
    pub columns: Vec<ColumnCensus>,
    /// Default columns whose table the database does not have.
    pub skipped: Vec<String>,
}

impl DatabaseCensus {
    /// Rows under the key with `key_id`, in every column: what retirement waits on.
    pub fn rows_under(&self, key_id: &KeyId) -> u64 {
        self.columns
            .iter()
            .filter_map(|column| column.by_key_id.get(key_id.as_str()))
            .sum()
    }

    /// AES-GCM rows without a key id, in every column: what staging waits on.
    pub fn rows_without_key_id(&self) -> u64 {
        self.columns
            .iter()
            .map(|column| column.without_key_id)
            .sum()
    }

    /// Legacy AES/ECB rows, in every column: what promotion waits on.
    pub fn legacy_ecb_rows(&self) -> u64 {
        self.columns.iter().map(|column| column.legacy_ecb).sum()
    }

    /// Cells too large to read: no key can be proved not to be needed by them.
    pub fn rows_unread(&self) -> u64 {
        self.columns.iter().map(|column| column.oversized).sum()
    }
}

/// Counts what the columns of `spec` (WSO2's known columns when empty) hold, `page_size`
/// rows at a time.
pub async fn census(
    connection: &Connection,
    spec: &[EncryptedColumn],
    page_size: u32,
) -> Result<DatabaseCensus, DatabaseError> {
    let (columns, skipped) = columns_or_defaults(connection, spec).await?;
    let mut census = DatabaseCensus {
        database: connection.name.clone(),
        columns: Vec::with_capacity(columns.len()),
        skipped,
    };
    for column in &columns {
        census
            .columns
            .push(count_column(connection, column, page_size.max(1)).await?);
    }
    Ok(census)
}

async fn count_column(
    connection: &Connection,
    column: &ResolvedColumn,
    page_size: u32,
) -> Result<ColumnCensus, DatabaseError> {
    let mut counts = ColumnCensus {
        column: column.label.clone(),
        ..ColumnCensus::default()
    };
    let path = column.path();
    let mut after: Option<Vec<KeyValue>> = None;
    loop {
        let rows = page(connection, column, after.as_deref(), page_size).await?;
        for row in &rows {
            if row.oversized {
                counts.oversized += 1;
                continue;
            }
            let text = row.cell.as_ref().map(|cell| cell.text());
            match text {
                None => counts.absent += 1,
                Some(None) => counts.not_ciphertext += 1,
                Some(Some(text)) => match classify(text, path.as_deref()) {
                    Classified::Absent => counts.absent += 1,
                    Classified::NotCiphertext => counts.not_ciphertext += 1,
                    Classified::Ciphertext(value) => match value.kind() {
                        Kind::GcmWithKeyId(id) => {
                            *counts.by_key_id.entry(id.as_str().to_owned()).or_default() += 1;
                        }
                        Kind::GcmWithoutKeyId => counts.without_key_id += 1,
                        Kind::LegacyEcb => counts.legacy_ecb += 1,
                        Kind::Rsa => counts.rsa += 1,
                        Kind::Empty => counts.empty_plaintext += 1,
                    },
                },
            }
        }
        match rows.last() {
            Some(last) if rows.len() == page_size as usize => after = Some(last.key.clone()),
            _ => return Ok(counts),
        }
    }
}
