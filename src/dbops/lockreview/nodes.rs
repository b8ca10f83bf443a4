//! The small pieces of a parse tree every part of the review reads: a matched rules-table row
//! ([`Hit`]), a table from a `RangeVar`, a string node's value.

use pg_query::protobuf::{self, RangeVar};
use pg_query::NodeEnum;

use super::rules::RuleId;
use super::TableRef;

/// One rules-table row a statement (or one of its subcommands) matched, with the tables it locks.
pub(super) struct Hit {
    pub(super) id: RuleId,
    pub(super) tables: Vec<TableRef>,
}

pub(super) fn hit(id: RuleId, tables: Vec<TableRef>) -> Hit {
    Hit { id, tables }
}

/// A table as the statement names it.
pub(super) fn table(r: &RangeVar) -> TableRef {
    TableRef {
        schema: (!r.schemaname.is_empty()).then(|| r.schemaname.clone()),
        name: r.relname.clone(),
    }
}

/// The value of a string node.
pub(super) fn sval(n: &protobuf::Node) -> Option<String> {
    match n.node.as_ref() {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        _ => None,
    }
}
