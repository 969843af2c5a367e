//! The online rewrite of a database's WSO2 ciphertext to AES-GCM under one key, with its
//! key id: the backfill (read as `{key: A, old_key: A}`, write A) and the rotation (read
//! as `{key: B, old_key: A}`, write B) are the same operation.
//!
//! Rows are read a page at a time in key order; each one that needs it is decrypted as a
//! WSO2 node with the `read` settings would, encrypted under the `write` key, and written
//! back only if it still holds what was read (a concurrent API-manager write is re-read
//! and decided again, never overwritten). Writes go one statement at a time, paced. After
//! each page the caller gets a checkpoint it can hand back to resume. A row that does not
//! decrypt, or whose new value would not fit the column, is named (table and key) and
//! left as it is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::catalog::{ResolvedColumn, columns_or_defaults};
use super::connect::Connection;
use super::error::DatabaseError;
use super::pages::{CELL_LIMIT, PageRow, compare_and_swap, page, reread};
use super::rows::{KeyValue, RowRef};
use super::value::{Decision, decide};
use crate::crd::database::EncryptedColumn;
use crate::crypto::KeyMaterial;
use crate::crypto::wso2::{EncryptionSettings, KeyId};
use crate::pacer::Pacer;

/// The most problem rows a progress report names; the counts stay complete.
pub const MAX_PROBLEMS: usize = 100;

/// Where a rewrite has got to, per column label: what a killed run resumes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Per column label, how far the rewrite has got.
    pub columns: BTreeMap<String, ColumnCheckpoint>,
}

/// How far the rewrite of one column has got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ColumnCheckpoint {
    /// Every row with a key up to and including this one is done.
    After(Vec<KeyValue>),
    /// Every row is done.
    Done,
}

/// How a rewrite runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteOptions {
    /// Rows read per page.
    pub page_size: u32,
    /// Upper bound on row updates per second.
    pub writes_per_second: u32,
    /// How many times a row is decided and written before a concurrent writer that keeps
    /// changing it is given up on (counted as contended).
    pub attempts: u32,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        Self {
            page_size: super::DEFAULT_PAGE_SIZE,
            writes_per_second: 1000,
            attempts: 3,
        }
    }
}

/// Counts of a rewrite run, and the rows it could not rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewriteProgress {
    /// Rows read.
    pub seen: u64,
    /// Rows rewritten.
    pub rewritten: u64,
    /// Rows already AES-GCM under the write key with its key id (or the empty plaintext).
    pub current: u64,
    /// Rows that do not decrypt with the key WSO2's rule names: left, and named.
    pub failed: u64,
    /// Rows a concurrent writer kept changing: left for the next run, and named.
    pub contended: u64,
    /// Rows whose new value would not fit the column: left, and named.
    pub too_wide: u64,
    /// RSA rows, which no symmetric key reads: left, and named.
    pub rsa: u64,
    /// Values that are not WSO2 ciphertext (plaintext): left.
    pub not_ciphertext: u64,
    /// NULL or empty cells, documents without the JSON path, rows gone: nothing to do.
    pub absent: u64,
    /// Writes sent.
    pub writes: u64,
    /// The first [`MAX_PROBLEMS`] rows left with a problem.
    pub problems: Vec<RowProblem>,
    /// Default columns whose table the database does not have.
    pub skipped: Vec<String>,
}

impl RewriteProgress {
    /// Whether every row read is now AES-GCM under the write key (or needs nothing):
    /// nothing failed, contended, too wide or RSA.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.contended == 0 && self.too_wide == 0 && self.rsa == 0
    }

    fn report(&mut self, database: &str, row: RowRef, problem: Problem) {
        match &problem {
            Problem::Undecryptable { .. } => self.failed += 1,
            Problem::TooWide { .. } => self.too_wide += 1,
            Problem::Rsa => self.rsa += 1,
            Problem::TooLarge { .. } => self.failed += 1,
            Problem::Contended => self.contended += 1,
        }
        tracing::warn!(database, row = %row, problem = %problem, "row left as it is");
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(RowProblem {
                database: database.to_owned(),
                row,
                problem,
            });
        }
    }
}

/// A row left as it is, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowProblem {
    /// The database's name.
    pub database: String,
    /// The row, by table, column and key.
    pub row: RowRef,
    /// Why it was left.
    pub problem: Problem,
}

/// Why a row was left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Problem {
    /// It does not decrypt with the key WSO2's rule names (why, without any value).
    Undecryptable { reason: String },
    /// Its new value has `length` characters; the column holds `width`.
    TooWide { length: u64, width: u64 },
    /// It is RSA-encrypted.
    Rsa,
    /// Its cell has more than `limit` bytes, more than any WSO2 value: not read.
    TooLarge { limit: u64 },
    /// A concurrent writer kept changing it.
    Contended,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Undecryptable { reason } => write!(f, "does not decrypt: {reason}"),
            Self::TooWide { length, width } => write!(
                f,
                "the new value is {length} long and the column holds {width} (characters, or bytes where the column is bounded in bytes); widen the column"
            ),
            Self::Rsa => f.write_str("RSA-encrypted: no symmetric key reads it"),
            Self::TooLarge { limit } => write!(
                f,
                "the cell has more than {limit} bytes, more than any WSO2 value; not read"
            ),
            Self::Contended => f.write_str("kept changing under the rewrite"),
        }
    }
}

/// Rewrites every value of the columns of `spec` (WSO2's known columns when empty) that
/// is not AES-GCM with `write`'s key id: decrypted as WSO2 does with `read`, encrypted
/// under `write`. Starts from `checkpoint`; after every page, `on_page` gets the new
/// checkpoint and the counts so far.
pub async fn rewrite(
    connection: &Connection,
    spec: &[EncryptedColumn],
    read: &EncryptionSettings<'_>,
    write: &KeyMaterial,
    options: &RewriteOptions,
    mut checkpoint: Checkpoint,
    mut on_page: impl FnMut(&Checkpoint, &RewriteProgress),
) -> Result<RewriteProgress, DatabaseError> {
    let (columns, skipped) = columns_or_defaults(connection, spec).await?;
    let mut run = Run {
        connection,
        read,
        write,
        write_id: KeyId::of(write),
        options,
        pacer: Pacer::new(options.writes_per_second, Instant::now()),
        progress: RewriteProgress {
            skipped,
            ..RewriteProgress::default()
        },
    };
    for column in &columns {
        let mut after = match checkpoint.columns.get(&column.label) {
            Some(ColumnCheckpoint::Done) => continue,
            Some(ColumnCheckpoint::After(key)) if key.len() != column.key_columns.len() => {
                return Err(DatabaseError::Checkpoint {
                    database: connection.name.clone(),
                    column: column.label.clone(),
                    found: key.len(),
                    expected: column.key_columns.len(),
                });
            }
            Some(ColumnCheckpoint::After(key)) => Some(key.clone()),
            None => None,
        };
        loop {
            let page_size = options.page_size.max(1);
            let rows = page(connection, column, after.as_deref(), page_size).await?;
            // A short page is the last one.
            let last = (rows.len() == page_size as usize)
                .then(|| rows.last().map(|row| row.key.clone()))
                .flatten();
            for row in rows {
                run.row(column, row).await?;
            }
            let state = match last {
                Some(last) => {
                    after = Some(last.clone());
                    ColumnCheckpoint::After(last)
                }
                None => ColumnCheckpoint::Done,
            };
            let done = state == ColumnCheckpoint::Done;
            checkpoint.columns.insert(column.label.clone(), state);
            on_page(&checkpoint, &run.progress);
            if done {
                break;
            }
        }
    }
    Ok(run.progress)
}

/// One rewrite run's state.
struct Run<'a> {
    connection: &'a Connection,
    read: &'a EncryptionSettings<'a>,
    write: &'a KeyMaterial,
    write_id: KeyId,
    options: &'a RewriteOptions,
    pacer: Pacer,
    progress: RewriteProgress,
}

impl Run<'_> {
    /// Decides and writes one row, re-reading it when a concurrent writer changed it.
    async fn row(&mut self, column: &ResolvedColumn, row: PageRow) -> Result<(), DatabaseError> {
        let key = row.key.as_slice();
        let (mut cell, mut oversized) = (row.cell, row.oversized);
        self.progress.seen += 1;
        let path = column.path();
        let name = || RowRef {
            table: column.table.clone(),
            column: column.label.clone(),
            key: column
                .key_columns
                .iter()
                .cloned()
                .zip(key.iter().cloned())
                .collect(),
        };
        let database = self.connection.name.as_str();
        for _ in 0..self.options.attempts.max(1) {
            if oversized {
                let problem = Problem::TooLarge { limit: CELL_LIMIT };
                self.progress.report(database, name(), problem);
                return Ok(());
            }
            let Some(current) = cell.take() else {
                self.progress.absent += 1;
                return Ok(());
            };
            let Some(text) = current.text() else {
                self.progress.not_ciphertext += 1;
                return Ok(());
            };
            let new_text =
                match decide(text, path.as_deref(), self.read, self.write, &self.write_id) {
                    Decision::Absent => {
                        self.progress.absent += 1;
                        return Ok(());
                    }
                    Decision::NotCiphertext => {
                        self.progress.not_ciphertext += 1;
                        return Ok(());
                    }
                    Decision::Current => {
                        self.progress.current += 1;
                        return Ok(());
                    }
                    Decision::Rsa => {
                        self.progress.report(database, name(), Problem::Rsa);
                        return Ok(());
                    }
                    Decision::Undecryptable(error) => {
                        let reason = error.to_string();
                        self.progress
                            .report(database, name(), Problem::Undecryptable { reason });
                        return Ok(());
                    }
                    Decision::Write(new_text) => new_text,
                };
            let length = new_text.chars().count() as u64;
            if let Some(width) = column.width.filter(|width| length > *width) {
                self.progress
                    .report(database, name(), Problem::TooWide { length, width });
                return Ok(());
            }
            let bytes = new_text.len() as u64;
            if let Some(octets) = column.octets.filter(|octets| bytes > *octets) {
                let problem = Problem::TooWide {
                    length: bytes,
                    width: octets,
                };
                self.progress.report(database, name(), problem);
                return Ok(());
            }
            let new = current.with_text(new_text);
            // tokio's timer rounds every deadline up to its next millisecond, one
            // already past included: sleeping only when ahead of the limit keeps a
            // limit that does not bind from capping the rewrite near a row a millisecond.
            let at = self.pacer.book(Instant::now());
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            self.progress.writes += 1;
            if compare_and_swap(self.connection, column, key, &current, &new).await? {
                self.progress.rewritten += 1;
                return Ok(());
            }
            match reread(self.connection, column, key).await? {
                Some(now) => (cell, oversized) = (now.cell, now.oversized),
                None => {
                    self.progress.absent += 1;
                    return Ok(());
                }
            }
        }
        self.progress.report(database, name(), Problem::Contended);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Job runs these on a multi-threaded runtime: their futures must be `Send`.
    #[allow(dead_code)]
    fn the_futures_are_send(
        connection: &Connection,
        read: &EncryptionSettings<'_>,
        write: &KeyMaterial,
    ) {
        fn send<T: Send>(_: T) {}
        send(rewrite(
            connection,
            &[],
            read,
            write,
            &RewriteOptions::default(),
            Checkpoint::default(),
            |_, _| {},
        ));
        send(super::super::census(connection, &[], 1));
    }
}
