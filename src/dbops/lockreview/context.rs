//! What a script did so far, as the review reads it in order: the version, the column types it
//! knows, the `CHECK (c IS NOT NULL)` constraints and foreign keys it added, the tables it
//! created.

use std::collections::{HashMap, HashSet};

use pg_query::protobuf;

use super::nodes::sval;
use super::types::KnownColumns;
use super::TableRef;

/// What the script did so far.
pub(super) struct Context {
    pub(super) version: u32,
    pub(super) columns: KnownColumns,
    /// (table, column) -> (constraint name, validated) for `CHECK (column IS NOT NULL)`.
    pub(super) not_null_checks: HashMap<(String, String), (String, bool)>,
    /// (table, constraint name) -> referenced table, for the foreign keys the script added.
    pub(super) foreign_keys: HashMap<(String, String), TableRef>,
    /// Tables the script created (not `IF NOT EXISTS`): empty, unknown to the running app.
    pub(super) created: HashSet<String>,
}

impl Context {
    /// Remembers a foreign key of `table` (its name as written, else PostgreSQL's default name
    /// `table_column_fkey`; `column` is the column of an inline `REFERENCES`).
    pub(super) fn remember_fk(
        &mut self,
        table: &str,
        c: &protobuf::Constraint,
        column: Option<&str>,
    ) {
        let Some(pk) = c.pktable.as_ref() else { return };
        let name = if c.conname.is_empty() {
            let cols: Vec<String> = match column {
                Some(col) => vec![col.to_string()],
                None => c.fk_attrs.iter().filter_map(sval).collect(),
            };
            format!("{table}_{}_fkey", cols.join("_"))
        } else {
            c.conname.clone()
        };
        self.foreign_keys
            .insert((table.to_string(), name), super::nodes::table(pk));
    }
}
