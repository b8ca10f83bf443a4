//! From a script to its reviews: `pg_query` (PostgreSQL's own grammar) gives the statements and
//! their trees; each tree is matched to rows of the rules table ([`super::rules`]) for the
//! server's version; a statement with several subcommands (`ALTER TABLE t ADD ..., ALTER ...`)
//! gets the strongest lock and effect of its rows and the safer form of the worst one.
//!
//! The script is read in order, so what it did earlier informs later statements: a column it
//! created has a known type (an `ALTER COLUMN ... TYPE` from `varchar(10)` to `varchar(20)` is
//! then catalog-only), and a validated `CHECK (c IS NOT NULL)` lets `SET NOT NULL` skip its scan
//! on PostgreSQL 12 and later.

use std::collections::{HashMap, HashSet};

use pg_query::protobuf::{self, DropStmt, IndexStmt, ObjectType, RenameStmt};
use pg_query::{NodeEnum, NodeRef};

use super::alter::alter_table;
use super::context::Context;
use super::nodes::{hit, sval, table, Hit};
use super::rules::RuleId;
use super::types::{ColumnType, KnownColumns};
use super::{Effect, ScriptReview, StatementReview, TableRef};

/// Reviews `sql` for a server of `version`, knowing `known` column types.
pub(super) fn review(sql: &str, version: u32, known: &KnownColumns) -> ScriptReview {
    let parsed = match pg_query::parse(sql) {
        Ok(p) => p,
        Err(e) => {
            return ScriptReview {
                statements: Vec::new(),
                transactional: false,
                parse_error: Some(e.to_string()),
            }
        }
    };
    let mut ctx = Context {
        version,
        columns: known.clone(),
        not_null_checks: HashMap::new(),
        foreign_keys: HashMap::new(),
        created: HashSet::new(),
    };
    let mut out = ScriptReview {
        statements: Vec::new(),
        transactional: true,
        parse_error: None,
    };
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        let (text, line) = statement_text(sql, raw.stmt_location, raw.stmt_len);
        let hits = classify(node, &mut ctx);
        out.transactional &= hits.iter().all(|h| h.id.rule().transactional);
        let hits = on_new_tables(hits, &ctx.created);
        out.statements.push(combine(text, line, hits, version));
        if let NodeEnum::CreateStmt(s) = node {
            if let Some(r) = s.relation.as_ref().filter(|_| !s.if_not_exists) {
                ctx.created.insert(r.relname.clone());
            }
        }
    }
    out
}

/// A row whose table the script itself created becomes `new-table` (nobody waits for an empty
/// table the running app does not know), or, for a foreign key from it, `create-table-foreign-key`
/// on the referenced table; a row that also locks other existing tables is kept as it is.
fn on_new_tables(hits: Vec<Hit>, created: &HashSet<String>) -> Vec<Hit> {
    let is_new = |t: &TableRef| created.contains(&t.name);
    hits.into_iter()
        .map(|h| {
            if !h.tables.first().is_some_and(is_new) {
                return h;
            }
            let others: Vec<TableRef> = h.tables.iter().filter(|t| !is_new(t)).cloned().collect();
            match h.id {
                _ if others.is_empty() => hit(RuleId::NewTable, Vec::new()),
                RuleId::AddForeignKey | RuleId::AddForeignKeyNotValid => {
                    hit(RuleId::CreateTableForeignKey, others)
                }
                _ => h,
            }
        })
        .collect()
}

/// The statement's text (without leading comments, trailing blanks and `;`) and its 1-based
/// line. `location`/`len` are byte offsets; `len` 0 means "to the end".
fn statement_text(sql: &str, location: i32, len: i32) -> (String, usize) {
    let start = (location.max(0) as usize).min(sql.len());
    let end = if len <= 0 {
        sql.len()
    } else {
        (start + len as usize).min(sql.len())
    };
    let mut from = start;
    loop {
        let rest = &sql[from..end];
        let trimmed = rest.trim_start();
        from += rest.len() - trimmed.len();
        if trimmed.starts_with("--") {
            from += trimmed.find('\n').map(|i| i + 1).unwrap_or(trimmed.len());
        } else if trimmed.starts_with("/*") {
            from += block_comment_len(trimmed);
        } else {
            break;
        }
    }
    let text = sql[from..end].trim_end().trim_end_matches(';').trim_end();
    let line = 1 + sql[..from].matches('\n').count();
    (text.to_string(), line)
}

/// Length of the (nested) block comment `s` starts with.
fn block_comment_len(s: &str) -> usize {
    let b = s.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// One review from a statement's hits: the strongest lock and effect, the worst row's rule,
/// doc and safer form (else the first safer form of the others).
fn combine(sql: String, line: usize, hits: Vec<Hit>, version: u32) -> StatementReview {
    let hits = if hits.is_empty() {
        vec![hit(RuleId::Unknown, Vec::new())]
    } else {
        hits
    };
    let rank = |e: Effect| match e {
        Effect::Metadata => 0,
        Effect::Scan => 1,
        Effect::Rewrite => 2,
    };
    let worst = hits
        .iter()
        .max_by_key(|h| (rank(h.id.rule().effect), h.id.rule().lock))
        .map(|h| h.id.rule())
        .unwrap_or(RuleId::Unknown.rule());
    debug_assert!(hits.iter().all(|h| h.id.rule().versions.holds(version)));
    let mut tables: Vec<TableRef> = Vec::new();
    for t in hits.iter().flat_map(|h| h.tables.iter()) {
        if !tables.contains(t) {
            tables.push(t.clone());
        }
    }
    let lock = if tables.is_empty() {
        None
    } else {
        hits.iter()
            .filter(|h| !h.tables.is_empty())
            .filter_map(|h| h.id.rule().lock)
            .max()
    };
    let safer = worst
        .safer
        .or_else(|| hits.iter().find_map(|h| h.id.rule().safer))
        .map(str::to_string);
    StatementReview {
        sql,
        line,
        lock,
        tables,
        effect: worst.effect,
        rule: worst.name,
        doc: worst.doc,
        safer,
    }
}

fn classify(node: &NodeEnum, ctx: &mut Context) -> Vec<Hit> {
    match node {
        NodeEnum::AlterTableStmt(s) => alter_table(s, ctx),
        NodeEnum::IndexStmt(s) => vec![create_index(s)],
        NodeEnum::CreateStmt(s) => create_table(s, ctx),
        NodeEnum::RenameStmt(s) => vec![rename(s, ctx.version)],
        NodeEnum::DropStmt(s) => vec![drop(s)],
        NodeEnum::TruncateStmt(s) => vec![hit(RuleId::Truncate, range_vars(&s.relations))],
        NodeEnum::AlterEnumStmt(s) if s.old_val.is_empty() => {
            vec![hit(
                pick(
                    ctx.version,
                    RuleId::AlterEnumAddValue,
                    RuleId::AlterEnumAddValuePre12,
                ),
                vec![],
            )]
        }
        NodeEnum::ClusterStmt(s) => match s.relation.as_ref() {
            Some(r) => vec![hit(RuleId::Cluster, vec![table(r)])],
            // Every clustered table of the database: refused in a transaction block.
            None => vec![
                hit(RuleId::Cluster, vec![]),
                hit(RuleId::NotInTransaction, vec![]),
            ],
        },
        NodeEnum::VacuumStmt(s) => vec![vacuum(s)],
        NodeEnum::ReindexStmt(s) => vec![reindex(s, ctx.version)],
        NodeEnum::InsertStmt(s) => {
            vec![hit(RuleId::Insert, s.relation.iter().map(table).collect())]
        }
        NodeEnum::UpdateStmt(s) => vec![hit(
            RuleId::UpdateOrDelete,
            s.relation.iter().map(table).collect(),
        )],
        NodeEnum::DeleteStmt(s) => vec![hit(
            RuleId::UpdateOrDelete,
            s.relation.iter().map(table).collect(),
        )],
        NodeEnum::SelectStmt(_) => vec![hit(RuleId::Select, all_range_vars(node))],
        NodeEnum::TransactionStmt(_) => vec![hit(RuleId::TransactionControl, vec![])],
        NodeEnum::CreatedbStmt(_)
        | NodeEnum::DropdbStmt(_)
        | NodeEnum::AlterSystemStmt(_)
        | NodeEnum::CreateTableSpaceStmt(_)
        | NodeEnum::DropTableSpaceStmt(_) => vec![hit(RuleId::NotInTransaction, vec![])],
        NodeEnum::AlterEnumStmt(_)
        | NodeEnum::VariableSetStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::CreateSchemaStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::CreateSeqStmt(_)
        | NodeEnum::CreateDomainStmt(_)
        | NodeEnum::DefineStmt(_)
        | NodeEnum::ViewStmt(_) => vec![hit(RuleId::NoTableLock, vec![])],
        _ => vec![hit(RuleId::Unknown, all_range_vars(node))],
    }
}

/// `newer` when the server is 12 or later, else `older` (the rows that changed in 12).
fn pick(version: u32, newer: RuleId, older: RuleId) -> RuleId {
    if version >= 120000 {
        newer
    } else {
        older
    }
}

fn create_index(s: &IndexStmt) -> Hit {
    let id = match (s.unique, s.concurrent) {
        (false, false) => RuleId::CreateIndex,
        (false, true) => RuleId::CreateIndexConcurrently,
        (true, false) => RuleId::CreateUniqueIndex,
        (true, true) => RuleId::CreateUniqueIndexConcurrently,
    };
    hit(id, s.relation.iter().map(table).collect())
}

/// `CREATE TABLE`: no existing table, except those its foreign keys reference.
fn create_table(s: &protobuf::CreateStmt, ctx: &mut Context) -> Vec<Hit> {
    let mut referenced = Vec::new();
    let own = s
        .relation
        .as_ref()
        .map(|r| r.relname.clone())
        .unwrap_or_default();
    for elt in s.table_elts.iter().chain(s.constraints.iter()) {
        let (constraints, column): (Vec<&protobuf::Node>, _) = match elt.node.as_ref() {
            Some(NodeEnum::ColumnDef(cd)) => {
                if let Some(ty) = cd.type_name.as_ref() {
                    let key = (own.clone(), cd.colname.clone());
                    ctx.columns.insert(key, ColumnType::from_type_name(ty));
                }
                (cd.constraints.iter().collect(), Some(cd.colname.as_str()))
            }
            Some(NodeEnum::Constraint(_)) => (vec![elt], None),
            _ => (vec![], None),
        };
        for c in constraints {
            if let Some(NodeEnum::Constraint(c)) = c.node.as_ref() {
                ctx.remember_fk(&own, c, column);
                if let Some(pk) = c.pktable.as_ref().filter(|pk| pk.relname != own) {
                    let t = table(pk);
                    if !referenced.contains(&t) {
                        referenced.push(t);
                    }
                }
            }
        }
    }
    if referenced.is_empty() {
        vec![hit(RuleId::CreateTable, vec![])]
    } else {
        vec![hit(RuleId::CreateTableForeignKey, referenced)]
    }
}

fn rename(s: &RenameStmt, version: u32) -> Hit {
    let tables: Vec<TableRef> = s.relation.iter().map(table).collect();
    match ObjectType::try_from(s.rename_type) {
        Ok(ObjectType::ObjectColumn) => hit(RuleId::RenameColumn, tables),
        Ok(ObjectType::ObjectTabconstraint) => hit(RuleId::RenameConstraint, tables),
        Ok(ObjectType::ObjectIndex) => hit(
            pick(version, RuleId::RenameIndex, RuleId::RenameIndexPre12),
            tables,
        ),
        Ok(ObjectType::ObjectTable | ObjectType::ObjectView | ObjectType::ObjectMatview) => {
            hit(RuleId::RenameTable, tables)
        }
        Ok(ObjectType::ObjectType | ObjectType::ObjectSchema | ObjectType::ObjectFunction) => {
            hit(RuleId::NoTableLock, vec![])
        }
        _ => hit(RuleId::Unknown, tables),
    }
}

fn drop(s: &DropStmt) -> Hit {
    let names = || s.objects.iter().filter_map(object_name).collect::<Vec<_>>();
    match ObjectType::try_from(s.remove_type) {
        Ok(ObjectType::ObjectIndex) if s.concurrent => hit(RuleId::DropIndexConcurrently, names()),
        Ok(ObjectType::ObjectIndex) => hit(RuleId::DropIndex, names()),
        Ok(
            ObjectType::ObjectTable
            | ObjectType::ObjectView
            | ObjectType::ObjectMatview
            | ObjectType::ObjectSequence
            | ObjectType::ObjectForeignTable,
        ) => hit(RuleId::DropTable, names()),
        Ok(
            ObjectType::ObjectType
            | ObjectType::ObjectDomain
            | ObjectType::ObjectFunction
            | ObjectType::ObjectProcedure
            | ObjectType::ObjectExtension,
        ) => hit(RuleId::NoTableLock, vec![]),
        _ => hit(RuleId::Unknown, vec![]),
    }
}

/// A dropped relation's name: `List` of `String`s (`schema`, `name`).
fn object_name(n: &protobuf::Node) -> Option<TableRef> {
    let Some(NodeEnum::List(l)) = n.node.as_ref() else {
        return None;
    };
    let parts: Vec<String> = l.items.iter().filter_map(sval).collect();
    match parts.as_slice() {
        [name] => Some(TableRef {
            schema: None,
            name: name.clone(),
        }),
        [.., schema, name] => Some(TableRef {
            schema: Some(schema.clone()),
            name: name.clone(),
        }),
        [] => None,
    }
}

fn vacuum(s: &protobuf::VacuumStmt) -> Hit {
    let tables = s
        .rels
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::VacuumRelation(v)) => v.relation.as_ref().map(table),
            _ => None,
        })
        .collect();
    let full = has_option(&s.options, "full");
    let id = match (s.is_vacuumcmd, full) {
        (false, _) => RuleId::Analyze,
        (true, true) => RuleId::VacuumFull,
        (true, false) => RuleId::Vacuum,
    };
    hit(id, tables)
}

fn reindex(s: &protobuf::ReindexStmt, version: u32) -> Hit {
    let tables = s.relation.iter().map(table).collect();
    let id = if has_option(&s.params, "concurrently") {
        RuleId::ReindexConcurrently
    } else {
        pick(version, RuleId::Reindex, RuleId::ReindexPre12)
    };
    hit(id, tables)
}

fn has_option(options: &[protobuf::Node], name: &str) -> bool {
    options.iter().any(|o| match o.node.as_ref() {
        Some(NodeEnum::DefElem(d)) => d.defname.eq_ignore_ascii_case(name),
        _ => false,
    })
}

fn range_vars(nodes: &[protobuf::Node]) -> Vec<TableRef> {
    nodes
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::RangeVar(r)) => Some(table(r)),
            _ => None,
        })
        .collect()
}

/// Every table a statement names anywhere (the conservative default).
fn all_range_vars(node: &NodeEnum) -> Vec<TableRef> {
    let mut out: Vec<TableRef> = Vec::new();
    for (n, ..) in node.nodes() {
        if let NodeRef::RangeVar(r) = n {
            let t = table(r);
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}
