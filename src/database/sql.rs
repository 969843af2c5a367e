//! The two engines' SQL dialects, as far as keyward speaks them: quoting identifiers and
//! numbering placeholders. Every statement is built here from names read back from the
//! catalog; values are only ever placeholders.

use crate::crd::database::DatabaseEngine;

/// A statement being built, with its placeholders numbered for the engine.
pub(crate) struct Statement {
    engine: DatabaseEngine,
    text: String,
    parameters: usize,
}

impl Statement {
    pub(crate) fn new(engine: DatabaseEngine) -> Self {
        Self {
            engine,
            text: String::new(),
            parameters: 0,
        }
    }

    /// Appends SQL text written by keyward.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends an identifier, quoted.
    pub(crate) fn identifier(&mut self, name: &str) -> &mut Self {
        let quote = match self.engine {
            DatabaseEngine::PostgreSQL => '"',
            DatabaseEngine::MySQL => '`',
        };
        self.text.push(quote);
        for character in name.chars() {
            // Doubling the quote is both engines' escape; names from the catalog of
            // schema-validated tables never hold one, but a quote must never end early.
            if character == quote {
                self.text.push(quote);
            }
            self.text.push(character);
        }
        self.text.push(quote);
        self
    }

    /// Appends identifiers separated by commas.
    pub(crate) fn identifiers(&mut self, names: &[String]) -> &mut Self {
        for (index, name) in names.iter().enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.identifier(name);
        }
        self
    }

    /// Appends the next placeholder (`$n` or `?`); the caller binds its value in order.
    pub(crate) fn parameter(&mut self) -> &mut Self {
        self.parameters += 1;
        match self.engine {
            DatabaseEngine::PostgreSQL => {
                self.text.push('$');
                self.text.push_str(&self.parameters.to_string());
            }
            DatabaseEngine::MySQL => self.text.push('?'),
        }
        self
    }

    /// Appends `(p, p, …)` with `count` placeholders.
    pub(crate) fn parameter_list(&mut self, count: usize) -> &mut Self {
        self.push("(");
        for index in 0..count {
            if index > 0 {
                self.push(", ");
            }
            self.parameter();
        }
        self.push(")")
    }

    /// Appends `k1 = p AND k2 = p …` for `names`.
    pub(crate) fn equal_each(&mut self, names: &[String]) -> &mut Self {
        for (index, name) in names.iter().enumerate() {
            if index > 0 {
                self.push(" AND ");
            }
            self.identifier(name).push(" = ").parameter();
        }
        self
    }

    /// Appends a comparison of `column` with the next placeholder that is exact: MySQL's
    /// usual collations ignore case and trailing spaces, and Base64 has case.
    pub(crate) fn exactly_equal(&mut self, column: &str) -> &mut Self {
        match self.engine {
            DatabaseEngine::PostgreSQL => self.identifier(column).push(" = ").parameter(),
            DatabaseEngine::MySQL => self
                .push("CAST(")
                .identifier(column)
                .push(" AS BINARY) = CAST(")
                .parameter()
                .push(" AS BINARY)"),
        }
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_placeholders_numbered_per_engine() {
        let mut postgres = Statement::new(DatabaseEngine::PostgreSQL);
        postgres
            .push("UPDATE ")
            .identifier("REG_PROPERTY")
            .push(" WHERE ")
            .equal_each(&["A".to_owned(), "B\"".to_owned()]);
        assert_eq!(
            postgres.text(),
            r#"UPDATE "REG_PROPERTY" WHERE "A" = $1 AND "B""" = $2"#
        );
        let mut mysql = Statement::new(DatabaseEngine::MySQL);
        mysql.identifier("a`b").push(" IN ").parameter_list(2);
        assert_eq!(mysql.text(), "`a``b` IN (?, ?)");
    }
}
