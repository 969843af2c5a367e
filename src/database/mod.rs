//! WSO2's own ciphertext in its databases (PostgreSQL, MySQL/MariaDB): a key-free census
//! of what each encrypted column holds, and the online rewrite that moves every value to
//! AES-GCM under one key with its key id (the backfill and the rotation of a WSO2 key).
//!
//! Rows are paged by key (keyset pagination, never OFFSET), each one updated only if it
//! still holds the value read, one short statement at a time, within a write-rate limit,
//! from a resumable checkpoint. Identifiers are read back from the catalog and always
//! quoted; values are always bound. Nothing here ever shows a connection URL, a password
//! or a column's value: driver errors are mapped to our own words ([`DatabaseError`]),
//! rows are named by table and key only, plaintexts live in zeroizing buffers.
//!
//! Not here: reading the connection Secret, status, metrics (callers get counts and a
//! checkpoint through callbacks).

mod catalog;
mod census;
mod connect;
mod error;
mod json_path;
mod pages;
mod rewrite;
mod rows;
mod sql;
mod value;

pub use census::{ColumnCensus, DatabaseCensus, census};
pub use connect::{Connection, ConnectionUrl};
pub use error::{DatabaseError, SqlCause};
pub use rewrite::{
    Checkpoint, ColumnCheckpoint, MAX_PROBLEMS, Problem, RewriteOptions, RewriteProgress,
    RowProblem, rewrite,
};
pub use rows::{KeyValue, RowRef};

/// Rows read per page when not told otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
