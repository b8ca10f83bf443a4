//! Column types as the review compares them, and the documented binary-coercible changes
//! (ALTER TABLE, Notes: no rewrite when the old type is binary coercible to the new one).

use std::collections::HashMap;

use pg_query::protobuf::{self, a_const};
use pg_query::NodeEnum;

use super::nodes::sval;

/// A column's type as the review compares it: the type's name (last component, lower case:
/// `varchar`, `text`, `numeric`) and its modifiers (`[20]`, `[10, 2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// `varchar`, `text`, `numeric`, `int4`, ...
    pub name: String,
    /// The type modifiers as written (`varchar(20)`: `[20]`).
    pub typmods: Vec<i32>,
}

impl ColumnType {
    /// Reads a type as `format_type()` or a script writes it (`character varying(20)`,
    /// `numeric(10,2)`, `text`); `None` when PostgreSQL's grammar does not read it as a type.
    pub fn parse(type_text: &str) -> Option<ColumnType> {
        let parsed = pg_query::parse(&format!("SELECT NULL::{type_text}")).ok()?;
        let stmt = parsed
            .protobuf
            .stmts
            .first()?
            .stmt
            .as_ref()?
            .node
            .as_ref()?;
        let NodeEnum::SelectStmt(s) = stmt else {
            return None;
        };
        let target = s.target_list.first()?.node.as_ref()?;
        let NodeEnum::ResTarget(rt) = target else {
            return None;
        };
        let Some(NodeEnum::TypeCast(tc)) = rt.val.as_ref()?.node.as_ref() else {
            return None;
        };
        tc.type_name.as_ref().map(ColumnType::from_type_name)
    }

    /// From the parse tree's type name.
    pub(super) fn from_type_name(t: &protobuf::TypeName) -> ColumnType {
        let name = t
            .names
            .last()
            .and_then(sval)
            .unwrap_or_default()
            .to_lowercase();
        let typmods = t
            .typmods
            .iter()
            .filter_map(|n| match n.node.as_ref() {
                Some(NodeEnum::AConst(c)) => match &c.val {
                    Some(a_const::Val::Ival(i)) => Some(i.ival),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        ColumnType { name, typmods }
    }
}

/// Column types known before the script runs, keyed by (table name, column name) as PostgreSQL
/// stores them (unquoted, case as created): from the target's catalog when the caller has it.
pub type KnownColumns = HashMap<(String, String), ColumnType>;

/// The documented no-rewrite type changes: `varchar(n)` to `varchar(m >= n)`, `varchar` or
/// `text`; `text` to unconstrained `varchar`; `numeric(p, s)` to `numeric(p' >= p, s)` or
/// unconstrained `numeric`; the same type.
pub fn binary_coercible(old: &ColumnType, new: &ColumnType) -> bool {
    let is_text =
        |t: &ColumnType| t.name == "text" || (t.name == "varchar" && t.typmods.is_empty());
    match (old.name.as_str(), new.name.as_str()) {
        _ if old == new => true,
        ("varchar" | "text", _) if is_text(new) => true,
        ("varchar", "varchar") => match (old.typmods.first(), new.typmods.first()) {
            (Some(o), Some(n)) => n >= o,
            _ => false,
        },
        ("numeric", "numeric") => match (old.typmods.as_slice(), new.typmods.as_slice()) {
            (_, []) => true,
            ([p, s], [p2, s2]) => p2 >= p && s2 == s,
            ([p], [p2]) | ([p], [p2, 0]) => p2 >= p,
            _ => false,
        },
        _ => false,
    }
}
