//! The database benchmark's own section of `docs/benchmarks.md`, between two markers, so
//! the scale benchmark (which writes the rest of the page) and this one can each
//! regenerate their part without losing the other's.

/// The line that opens the section.
pub const BEGIN: &str = "<!-- benches/database: begin -->";
/// The line that closes it.
pub const END: &str = "<!-- benches/database: end -->";

/// The marked section of `page`, markers included, if it has one.
pub fn section(page: &str) -> Option<&str> {
    let start = page.find(BEGIN)?;
    let end = page[start..].find(END)? + start + END.len();
    Some(&page[start..end])
}

/// `page` with its marked section replaced by `body` (between fresh markers), or with
/// the section appended when it has none.
pub fn replace(page: &str, body: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}", body.trim_end());
    match section(page) {
        Some(old) => page.replacen(old, &block, 1),
        None => format!("{}\n\n{block}\n", page.trim_end()),
    }
}

/// A freshly written `page` that keeps the marked section of the page it replaces.
pub fn keep(new_page: &str, old_page: &str) -> String {
    match section(old_page) {
        Some(block) if section(new_page).is_none() => {
            format!("{}\n\n{block}\n", new_page.trim_end())
        }
        _ => new_page.to_owned(),
    }
}
