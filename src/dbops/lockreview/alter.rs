//! `ALTER TABLE` and its subcommands, one rules-table row per subcommand: the default of an
//! added column, a type change, NOT NULL, constraints with or without NOT VALID.

use pg_query::protobuf::{
    self, AlterTableCmd, AlterTableStmt, AlterTableType, ColumnDef, ConstrType, Constraint,
    NullTestType,
};
use pg_query::{NodeEnum, NodeRef};

use super::context::Context;
use super::nodes::{hit, sval, table, Hit};
use super::rules::RuleId;
use super::types::{binary_coercible, ColumnType};
use super::TableRef;

pub(super) fn alter_table(s: &AlterTableStmt, ctx: &mut Context) -> Vec<Hit> {
    let Some(rel) = s.relation.as_ref() else {
        return vec![hit(RuleId::Unknown, Vec::new())];
    };
    let t = table(rel);
    let mut hits = Vec::new();
    for cmd in &s.cmds {
        let Some(NodeEnum::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
            hits.push(hit(RuleId::Unknown, vec![t.clone()]));
            continue;
        };
        alter_table_cmd(cmd, &t, ctx, &mut hits);
    }
    hits
}

fn alter_table_cmd(cmd: &AlterTableCmd, t: &TableRef, ctx: &mut Context, hits: &mut Vec<Hit>) {
    let one = |id| hit(id, vec![t.clone()]);
    let subtype = AlterTableType::try_from(cmd.subtype).unwrap_or(AlterTableType::Undefined);
    match (subtype, def(cmd)) {
        (AlterTableType::AtAddColumn, Some(NodeEnum::ColumnDef(cd))) => {
            add_column(cd, t, ctx, hits)
        }
        (AlterTableType::AtColumnDefault, _) => hits.push(one(RuleId::ColumnDefault)),
        (AlterTableType::AtDropNotNull, _) => hits.push(one(RuleId::DropNotNull)),
        (AlterTableType::AtSetNotNull, _) => {
            let key = (t.name.clone(), cmd.name.clone());
            let checked = ctx
                .not_null_checks
                .get(&key)
                .is_some_and(|(_, valid)| *valid);
            let id = match (ctx.version >= 120000, checked) {
                (true, true) => RuleId::SetNotNullChecked,
                (true, false) => RuleId::SetNotNull,
                (false, _) => RuleId::SetNotNullPre12,
            };
            hits.push(one(id));
        }
        (AlterTableType::AtDropColumn, _) => hits.push(one(RuleId::DropColumn)),
        (AlterTableType::AtAlterColumnType, Some(NodeEnum::ColumnDef(cd))) => {
            hits.push(one(alter_type(cd, &t.name, &cmd.name, ctx)));
        }
        (AlterTableType::AtAddConstraint, Some(NodeEnum::Constraint(c))) => {
            hits.push(add_constraint(c, t, ctx));
        }
        (AlterTableType::AtValidateConstraint, _) => {
            for (name, valid) in ctx.not_null_checks.values_mut() {
                if name == &cmd.name {
                    *valid = true;
                }
            }
            hits.push(one(RuleId::ValidateConstraint));
        }
        (AlterTableType::AtDropConstraint, _) => {
            let key = (t.name.clone(), cmd.name.clone());
            match ctx.foreign_keys.get(&key) {
                Some(r) => hits.push(hit(RuleId::DropForeignKey, vec![t.clone(), r.clone()])),
                None => hits.push(one(RuleId::DropConstraint)),
            }
        }
        _ => hits.push(one(RuleId::Unknown)),
    }
}

fn def(cmd: &AlterTableCmd) -> Option<&NodeEnum> {
    cmd.def.as_ref().and_then(|d| d.node.as_ref())
}

/// `ADD COLUMN`: the default decides between catalog-only and rewrite; inline constraints add
/// their own rows (`REFERENCES` locks the referenced table, `UNIQUE` builds an index).
fn add_column(cd: &ColumnDef, t: &TableRef, ctx: &mut Context, hits: &mut Vec<Hit>) {
    let constraints: Vec<&Constraint> = cd
        .constraints
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::Constraint(c)) => Some(c.as_ref()),
            _ => None,
        })
        .collect();
    let has = |ty: ConstrType| constraints.iter().any(|c| c.contype == ty as i32);
    let ty = cd.type_name.as_ref().map(ColumnType::from_type_name);
    let serial = ty.as_ref().is_some_and(|t| {
        matches!(
            t.name.as_str(),
            "serial" | "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8"
        )
    });
    let default = cd.raw_default.as_deref().or_else(|| {
        constraints
            .iter()
            .find(|c| c.contype == ConstrType::ConstrDefault as i32)
            .and_then(|c| c.raw_expr.as_deref())
    });
    let id = if serial
        || !cd.identity.is_empty()
        || has(ConstrType::ConstrIdentity)
        || has(ConstrType::ConstrGenerated)
    {
        RuleId::AddColumnGenerated
    } else if let Some(expr) = default {
        if volatile(expr) {
            RuleId::AddColumnVolatileDefault
        } else if ctx.version >= 110000 {
            RuleId::AddColumnConstantDefault
        } else {
            RuleId::AddColumnConstantDefaultPre11
        }
    } else {
        RuleId::AddColumn
    };
    hits.push(hit(id, vec![t.clone()]));
    for c in constraints {
        match ConstrType::try_from(c.contype) {
            Ok(ConstrType::ConstrForeign) => {
                ctx.remember_fk(&t.name, c, Some(&cd.colname));
                let mut tables = vec![t.clone()];
                tables.extend(c.pktable.iter().map(table));
                hits.push(hit(RuleId::AddForeignKey, tables));
            }
            Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) => {
                hits.push(hit(RuleId::AddUniqueOrPrimaryKey, vec![t.clone()]));
            }
            Ok(ConstrType::ConstrCheck) => hits.push(hit(RuleId::AddCheck, vec![t.clone()])),
            _ => {}
        }
    }
    if let Some(ty) = ty {
        ctx.columns.insert((t.name.clone(), cd.colname.clone()), ty);
    }
}

/// Functions whose result does not change within a statement (immutable or stable): a default
/// built only from these and constants is stored once (PostgreSQL 11+). Any other function is
/// taken as volatile, which is the safe side (a rewrite is announced).
const NON_VOLATILE: &[&str] = &[
    "now",
    "transaction_timestamp",
    "statement_timestamp",
    "current_timestamp",
    "lower",
    "upper",
    "length",
    "concat",
    "to_jsonb",
    "to_json",
    "jsonb_build_object",
    "json_build_object",
    "jsonb_build_array",
    "json_build_array",
    "array_fill",
    "make_date",
    "make_timestamp",
    "make_interval",
    "to_timestamp",
    "to_date",
    "coalesce",
    "greatest",
    "least",
    "abs",
];

/// Whether the expression calls a function outside [`NON_VOLATILE`] (`gen_random_uuid()`,
/// `random()`, `clock_timestamp()`, `nextval()`, a user function).
fn volatile(expr: &protobuf::Node) -> bool {
    let Some(node) = expr.node.as_ref() else {
        return false;
    };
    node.nodes().iter().any(|(n, ..)| match n {
        NodeRef::FuncCall(f) => {
            let name = f
                .funcname
                .last()
                .and_then(sval)
                .unwrap_or_default()
                .to_lowercase();
            !NON_VOLATILE.contains(&name.as_str())
        }
        _ => false,
    })
}

/// `ALTER COLUMN ... TYPE`: catalog-only when the old type is known and binary coercible to the
/// new one with no `USING` (ALTER TABLE, Notes); a rewrite otherwise.
fn alter_type(cd: &ColumnDef, table: &str, column: &str, ctx: &mut Context) -> RuleId {
    let Some(new) = cd.type_name.as_ref().map(ColumnType::from_type_name) else {
        return RuleId::AlterColumnType;
    };
    let key = (table.to_string(), column.to_string());
    let coercible = cd.raw_default.is_none()
        && ctx
            .columns
            .get(&key)
            .is_some_and(|old| binary_coercible(old, &new));
    ctx.columns.insert(key, new);
    if coercible {
        RuleId::AlterColumnTypeCoercible
    } else {
        RuleId::AlterColumnType
    }
}

fn add_constraint(c: &Constraint, t: &TableRef, ctx: &mut Context) -> Hit {
    let one = |id| hit(id, vec![t.clone()]);
    match ConstrType::try_from(c.contype) {
        Ok(ConstrType::ConstrForeign) => {
            ctx.remember_fk(&t.name, c, None);
            let mut tables = vec![t.clone()];
            tables.extend(c.pktable.iter().map(table));
            let id = if c.skip_validation {
                RuleId::AddForeignKeyNotValid
            } else {
                RuleId::AddForeignKey
            };
            hit(id, tables)
        }
        Ok(ConstrType::ConstrCheck) => {
            if let Some(col) = c.raw_expr.as_deref().and_then(not_null_column) {
                let entry = (c.conname.clone(), !c.skip_validation);
                ctx.not_null_checks.insert((t.name.clone(), col), entry);
            }
            one(if c.skip_validation {
                RuleId::AddCheckNotValid
            } else {
                RuleId::AddCheck
            })
        }
        Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) if !c.indexname.is_empty() => {
            one(RuleId::AddConstraintUsingIndex)
        }
        Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) => {
            one(RuleId::AddUniqueOrPrimaryKey)
        }
        Ok(ConstrType::ConstrExclusion) => one(RuleId::AddExclusion),
        _ => one(RuleId::Unknown),
    }
}

/// `c IS NOT NULL` (a single column): the column's name.
fn not_null_column(expr: &protobuf::Node) -> Option<String> {
    let Some(NodeEnum::NullTest(nt)) = expr.node.as_ref() else {
        return None;
    };
    if nt.nulltesttype != NullTestType::IsNotNull as i32 {
        return None;
    }
    let Some(NodeEnum::ColumnRef(cr)) = nt.arg.as_ref()?.node.as_ref() else {
        return None;
    };
    match cr.fields.as_slice() {
        [f] => sval(f),
        _ => None,
    }
}
