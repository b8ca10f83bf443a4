//! Data-loss warnings read from SQL text (SPEC section 4): `DROP TABLE`, `DROP COLUMN`, `TRUNCATE`,
//! `DELETE`, `ALTER COLUMN ... TYPE` and `DROP SCHEMA`, with the object name when it can be read.
//!
//! This is a lexer plus a few statement patterns, not a SQL parser. It reads PostgreSQL's lexical
//! rules: keywords in any case; `--` and nested `/* */` comments, string literals (`'...'`,
//! `E'...'` with backslash escapes) and dollar-quoted bodies (`$$...$$`, `$tag$...$tag$`) are
//! skipped, so a `DROP TABLE` inside a comment, a string or a function body is not reported (and a
//! destructive statement hidden in a `DO $$ ... $$` block is not seen either). It never fails: on
//! unterminated input it reports what it read so far.
//!
//! Object names are given as written (`"Post"`, `public."Post"`, `users`), for the approval card.

use std::fmt;

/// The kinds of statement that can lose data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataLossKind {
    /// `DROP TABLE`.
    DropTable,
    /// `ALTER TABLE ... DROP [COLUMN]`.
    DropColumn,
    /// `TRUNCATE`.
    Truncate,
    /// `DELETE FROM` (with or without `WHERE`).
    Delete,
    /// `ALTER TABLE ... ALTER [COLUMN] ... [SET DATA] TYPE` (a cast may truncate or fail).
    AlterColumnType,
    /// `DROP SCHEMA`.
    DropSchema,
}

impl DataLossKind {
    /// The statement as users know it: `DROP TABLE`, `ALTER COLUMN ... TYPE`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DataLossKind::DropTable => "DROP TABLE",
            DataLossKind::DropColumn => "DROP COLUMN",
            DataLossKind::Truncate => "TRUNCATE",
            DataLossKind::Delete => "DELETE",
            DataLossKind::AlterColumnType => "ALTER COLUMN ... TYPE",
            DataLossKind::DropSchema => "DROP SCHEMA",
        }
    }
}

impl fmt::Display for DataLossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One data-loss warning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataLossWarning {
    /// What kind of statement.
    pub kind: DataLossKind,
    /// The table (or, for `DROP SCHEMA`, the schema) as written, when it could be read.
    pub object: Option<String>,
    /// The column as written, for `DROP COLUMN` and `ALTER COLUMN ... TYPE`.
    pub column: Option<String>,
    /// 1-based line of the statement's keyword in the scanned text.
    pub line: usize,
}

impl fmt::Display for DataLossWarning {
    /// `DROP TABLE "Post"`, `ALTER TABLE "Post" DROP COLUMN "title"`, `DELETE FROM "Post"`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let obj = self.object.as_deref();
        let col = self.column.as_deref();
        match (self.kind, obj) {
            (DataLossKind::DropTable, Some(o)) => write!(f, "DROP TABLE {o}"),
            (DataLossKind::DropSchema, Some(o)) => write!(f, "DROP SCHEMA {o}"),
            (DataLossKind::Truncate, Some(o)) => write!(f, "TRUNCATE {o}"),
            (DataLossKind::Delete, Some(o)) => write!(f, "DELETE FROM {o}"),
            (DataLossKind::DropColumn, Some(o)) => match col {
                Some(c) => write!(f, "ALTER TABLE {o} DROP COLUMN {c}"),
                None => write!(f, "ALTER TABLE {o} DROP COLUMN"),
            },
            (DataLossKind::AlterColumnType, Some(o)) => match col {
                Some(c) => write!(f, "ALTER TABLE {o} ALTER COLUMN {c} TYPE"),
                None => write!(f, "ALTER TABLE {o} ALTER COLUMN ... TYPE"),
            },
            (kind, None) => f.write_str(kind.as_str()),
        }
    }
}

/// Reads `sql` and returns its data-loss warnings in text order.
pub fn scan(sql: &str) -> Vec<DataLossWarning> {
    let tokens = lex(sql);
    let mut warnings = Vec::new();
    for stmt in tokens.split(|t| t.kind == TokKind::Semicolon) {
        scan_statement(stmt, &mut warnings);
    }
    warnings
}

/// A top-level statement that ends the session's transaction block: `COMMIT`, `END`,
/// `ROLLBACK` (not `ROLLBACK TO [SAVEPOINT]`), `ABORT`, `PREPARE TRANSACTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionEnd {
    /// The statement's keyword(s) as written (`COMMIT`, `end`, `PREPARE TRANSACTION`).
    pub statement: String,
    /// 1-based line of the statement's keyword.
    pub line: usize,
}

/// The statements of `sql` that would end a transaction block it runs in, in text order. Read
/// with the same lexer as [`scan`], so comments, strings and dollar-quoted bodies (`DO $$ …
/// COMMIT; … $$`, which PostgreSQL refuses inside a transaction block anyway) are skipped.
/// `BEGIN`/`START TRANSACTION` are not listed: inside a block they only raise a warning.
pub fn transaction_ends(sql: &str) -> Vec<TransactionEnd> {
    let tokens = lex(sql);
    let mut out = Vec::new();
    for stmt in tokens.split(|t| t.kind == TokKind::Semicolon) {
        let Some(first) = stmt.first() else { continue };
        let second = stmt.get(1);
        let ends = if first.is_kw("COMMIT") || first.is_kw("END") || first.is_kw("ABORT") {
            Some(first.text.to_string())
        } else if first.is_kw("ROLLBACK") {
            // `ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] x` keeps the transaction open.
            let rest = skip_kws(stmt, 1, &["WORK"]);
            let rest = skip_kws(stmt, rest, &["TRANSACTION"]);
            (!stmt.get(rest).is_some_and(|t| t.is_kw("TO"))).then(|| first.text.to_string())
        } else if first.is_kw("PREPARE") && second.is_some_and(|t| t.is_kw("TRANSACTION")) {
            Some(format!(
                "{} {}",
                first.text,
                second.map(|t| t.text).unwrap_or_default()
            ))
        } else {
            None
        };
        if let Some(statement) = ends {
            out.push(TransactionEnd {
                statement,
                line: first.line,
            });
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokKind {
    /// An unquoted identifier or keyword.
    Word,
    /// A `"quoted identifier"` (text includes the quotes).
    Quoted,
    /// A string literal, dollar-quoted body, number or parameter: content not inspected.
    Opaque,
    /// A single punctuation character other than `;`.
    Punct(char),
    /// `;`.
    Semicolon,
}

#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    kind: TokKind,
    text: &'a str,
    line: usize,
}

impl Tok<'_> {
    fn is_kw(&self, kw: &str) -> bool {
        self.kind == TokKind::Word && self.text.eq_ignore_ascii_case(kw)
    }
    fn is_name(&self) -> bool {
        matches!(self.kind, TokKind::Word | TokKind::Quoted)
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_cont(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
}

fn lex(sql: &str) -> Vec<Tok<'_>> {
    let bytes = sql.as_bytes();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let count_lines = |s: &str| s.bytes().filter(|&b| b == b'\n').count();
    while i < sql.len() {
        let c = sql[i..].chars().next().expect("i is on a char boundary");
        let start = i;
        let start_line = line;
        match c {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += c.len_utf8();
                continue;
            }
            '-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(sql.len(), |n| i + n);
                continue;
            }
            '/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(sql, i + 2);
                line += count_lines(&sql[start..i]);
                continue;
            }
            '\'' => {
                i = skip_string(sql, i + 1, false);
                line += count_lines(&sql[start..i]);
                toks.push(Tok {
                    kind: TokKind::Opaque,
                    text: &sql[start..i],
                    line: start_line,
                });
                continue;
            }
            '"' => {
                i = skip_quoted_ident(sql, i + 1);
                line += count_lines(&sql[start..i]);
                toks.push(Tok {
                    kind: TokKind::Quoted,
                    text: &sql[start..i],
                    line: start_line,
                });
                continue;
            }
            '$' => {
                i = skip_dollar(sql, i);
                line += count_lines(&sql[start..i]);
                toks.push(Tok {
                    kind: TokKind::Opaque,
                    text: &sql[start..i],
                    line: start_line,
                });
                continue;
            }
            c if is_ident_start(c) => {
                let end = sql[i..]
                    .find(|c: char| !is_ident_cont(c))
                    .map_or(sql.len(), |n| i + n);
                let word = &sql[i..end];
                // E'...' (backslash escapes), and B'', X'', N'' (plain strings).
                if bytes.get(end) == Some(&b'\'') && word.len() == 1 && "eEbBxXnN".contains(word) {
                    i = skip_string(sql, end + 1, word.eq_ignore_ascii_case("e"));
                    line += count_lines(&sql[start..i]);
                    toks.push(Tok {
                        kind: TokKind::Opaque,
                        text: &sql[start..i],
                        line: start_line,
                    });
                } else {
                    i = end;
                    toks.push(Tok {
                        kind: TokKind::Word,
                        text: word,
                        line: start_line,
                    });
                }
                continue;
            }
            c if c.is_ascii_digit() => {
                let end = sql[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                    .map_or(sql.len(), |n| i + n);
                i = end;
                toks.push(Tok {
                    kind: TokKind::Opaque,
                    text: &sql[start..i],
                    line: start_line,
                });
                continue;
            }
            ';' => {
                i += 1;
                toks.push(Tok {
                    kind: TokKind::Semicolon,
                    text: ";",
                    line: start_line,
                });
                continue;
            }
            c => {
                i += c.len_utf8();
                toks.push(Tok {
                    kind: TokKind::Punct(c),
                    text: &sql[start..i],
                    line: start_line,
                });
            }
        }
    }
    toks
}

/// Skips a (nested) block comment whose opening `/*` is just before `i`; returns the index after
/// its closing `*/` (or the end of the text).
fn skip_block_comment(sql: &str, mut i: usize) -> usize {
    let bytes = sql.as_bytes();
    let mut depth = 1;
    while i < sql.len() && depth > 0 {
        if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    i.min(sql.len())
}

/// Skips a quoted identifier whose opening `"` is just before `i` (`""` inside it is a quote);
/// returns the index after its closing `"` (or the end of the text).
fn skip_quoted_ident(sql: &str, mut i: usize) -> usize {
    let bytes = sql.as_bytes();
    loop {
        match sql[i..].find('"') {
            None => {
                i = sql.len();
                break;
            }
            Some(n) => {
                i += n + 1;
                if bytes.get(i) == Some(&b'"') {
                    i += 1;
                } else {
                    break;
                }
            }
        }
    }
    i
}

/// Skips what starts with the `$` at `i`: a dollar-quoted body with its closing tag, else a
/// parameter (`$1`) or a lone `$`; returns the index after it (or the end of the text).
fn skip_dollar(sql: &str, mut i: usize) -> usize {
    let bytes = sql.as_bytes();
    if let Some(tag_len) = dollar_tag(&sql[i..]) {
        let tag = &sql[i..i + tag_len];
        let body = i + tag_len;
        i = sql[body..]
            .find(tag)
            .map_or(sql.len(), |n| body + n + tag_len);
    } else {
        // A parameter ($1) or a lone '$'.
        i += 1;
        while i < sql.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    i
}

/// Skips a string literal whose opening quote is just before `i`; returns the index after its
/// closing quote (or the end of the text).
fn skip_string(sql: &str, mut i: usize, backslash_escapes: bool) -> usize {
    let bytes = sql.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash_escapes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    // An escape at the very end may step past it; stay on a char boundary.
    let mut end = i.min(sql.len());
    while !sql.is_char_boundary(end) {
        end += 1;
    }
    end
}

/// The length of a dollar-quote delimiter (`$$` or `$tag$`) at the start of `s`, if there is one.
fn dollar_tag(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('$')?;
    let mut chars = rest.char_indices();
    match chars.next()? {
        (_, '$') => return Some(2),
        (_, c) if is_ident_start(c) => {}
        _ => return None,
    }
    for (n, c) in chars {
        if c == '$' {
            return Some(1 + n + 1);
        }
        if !(is_ident_start(c) || c.is_ascii_digit()) {
            return None;
        }
    }
    None
}

/// Reads a possibly qualified name (`a`, `"A"`, `s."A"`) at `toks[i..]`: its text and the index
/// after it.
fn read_name(toks: &[Tok<'_>], mut i: usize) -> Option<(String, usize)> {
    let first = toks.get(i).filter(|t| t.is_name())?;
    let mut name = first.text.to_string();
    i += 1;
    while toks.get(i).map(|t| t.kind) == Some(TokKind::Punct('.')) {
        match toks.get(i + 1).filter(|t| t.is_name()) {
            Some(t) => {
                name.push('.');
                name.push_str(t.text);
                i += 2;
            }
            None => break,
        }
    }
    Some((name, i))
}

/// Skips the given keywords in order if they are all there (`IF EXISTS`); returns the new index.
fn skip_kws(toks: &[Tok<'_>], i: usize, kws: &[&str]) -> usize {
    let all = kws
        .iter()
        .enumerate()
        .all(|(n, kw)| toks.get(i + n).is_some_and(|t| t.is_kw(kw)));
    if all {
        i + kws.len()
    } else {
        i
    }
}

/// Reads a comma-separated list of names (`a, s."B" CASCADE`), skipping `ONLY` and a trailing `*`.
fn read_name_list(toks: &[Tok<'_>], mut i: usize) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        i = skip_kws(toks, i, &["ONLY"]);
        let Some((name, next)) = read_name(toks, i) else {
            break;
        };
        names.push(name);
        i = next;
        if toks.get(i).map(|t| t.kind) == Some(TokKind::Punct('*')) {
            i += 1;
        }
        if toks.get(i).map(|t| t.kind) == Some(TokKind::Punct(',')) {
            i += 1;
        } else {
            break;
        }
    }
    names
}

fn scan_statement(stmt: &[Tok<'_>], out: &mut Vec<DataLossWarning>) {
    let Some(first) = stmt.first() else { return };
    let push_all = |out: &mut Vec<DataLossWarning>, kind, names: Vec<String>, line| {
        if names.is_empty() {
            out.push(DataLossWarning {
                kind,
                object: None,
                column: None,
                line,
            });
        }
        for n in names {
            out.push(DataLossWarning {
                kind,
                object: Some(n),
                column: None,
                line,
            });
        }
    };

    if first.is_kw("DROP") {
        let kind = match stmt.get(1) {
            Some(t) if t.is_kw("TABLE") => Some(DataLossKind::DropTable),
            Some(t) if t.is_kw("SCHEMA") => Some(DataLossKind::DropSchema),
            _ => None,
        };
        if let Some(kind) = kind {
            let i = skip_kws(stmt, 2, &["IF", "EXISTS"]);
            push_all(out, kind, read_name_list(stmt, i), first.line);
        }
    } else if first.is_kw("TRUNCATE") {
        let i = skip_kws(stmt, 1, &["TABLE"]);
        push_all(
            out,
            DataLossKind::Truncate,
            read_name_list(stmt, i),
            first.line,
        );
    } else if first.is_kw("ALTER") && stmt.get(1).is_some_and(|t| t.is_kw("TABLE")) {
        scan_alter_table(stmt, out);
    }

    // DELETE FROM anywhere in the statement (also inside WITH ... and rules); `ON DELETE CASCADE`,
    // `GRANT DELETE` and triggers have no FROM after DELETE.
    for (n, t) in stmt.iter().enumerate() {
        if t.is_kw("DELETE") && stmt.get(n + 1).is_some_and(|f| f.is_kw("FROM")) {
            let i = skip_kws(stmt, n + 2, &["ONLY"]);
            let object = read_name(stmt, i).map(|(name, _)| name);
            out.push(DataLossWarning {
                kind: DataLossKind::Delete,
                object,
                column: None,
                line: t.line,
            });
        }
    }
}

fn scan_alter_table(stmt: &[Tok<'_>], out: &mut Vec<DataLossWarning>) {
    let mut i = skip_kws(stmt, 2, &["IF", "EXISTS"]);
    i = skip_kws(stmt, i, &["ONLY"]);
    let Some((table, after)) = read_name(stmt, i) else {
        return;
    };
    i = after;
    if stmt.get(i).map(|t| t.kind) == Some(TokKind::Punct('*')) {
        i += 1;
    }
    // Actions are separated by commas outside parentheses.
    let mut actions: Vec<&[Tok<'_>]> = Vec::new();
    let mut depth = 0usize;
    let mut begin = i;
    for (n, t) in stmt.iter().enumerate().skip(i) {
        match t.kind {
            TokKind::Punct('(') => depth += 1,
            TokKind::Punct(')') => depth = depth.saturating_sub(1),
            TokKind::Punct(',') if depth == 0 => {
                actions.push(&stmt[begin..n]);
                begin = n + 1;
            }
            _ => {}
        }
    }
    actions.push(&stmt[begin..]);

    for action in actions {
        let Some(verb) = action.first() else { continue };
        if verb.is_kw("DROP") {
            // DROP CONSTRAINT loses no rows; DROP [COLUMN] [IF EXISTS] name does.
            if action.get(1).is_some_and(|t| t.is_kw("CONSTRAINT")) {
                continue;
            }
            let mut j = skip_kws(action, 1, &["COLUMN"]);
            j = skip_kws(action, j, &["IF", "EXISTS"]);
            let column = action
                .get(j)
                .filter(|t| t.is_name())
                .map(|t| t.text.to_string());
            out.push(DataLossWarning {
                kind: DataLossKind::DropColumn,
                object: Some(table.clone()),
                column,
                line: verb.line,
            });
        } else if verb.is_kw("ALTER") {
            let j = skip_kws(action, 1, &["COLUMN"]);
            let Some(col) = action.get(j).filter(|t| t.is_name()) else {
                continue;
            };
            let k = skip_kws(action, j + 1, &["SET", "DATA"]);
            if action.get(k).is_some_and(|t| t.is_kw("TYPE")) {
                out.push(DataLossWarning {
                    kind: DataLossKind::AlterColumnType,
                    object: Some(table.clone()),
                    column: Some(col.text.to_string()),
                    line: verb.line,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ends_are_found_outside_comments_strings_and_bodies() {
        let sql = "BEGIN;\nDROP TABLE \"A\";\n-- COMMIT;\nSELECT 'COMMIT;';\nDO $$ BEGIN COMMIT; END $$;\nSAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nrollback work to s;\ncommit;\nEND;\nABORT;\nROLLBACK;\nPREPARE TRANSACTION 'x';\nPREPARE p AS SELECT 1;\n";
        let found: Vec<(String, usize)> = transaction_ends(sql)
            .into_iter()
            .map(|e| (e.statement, e.line))
            .collect();
        assert_eq!(
            found,
            vec![
                ("commit".to_string(), 9),
                ("END".to_string(), 10),
                ("ABORT".to_string(), 11),
                ("ROLLBACK".to_string(), 12),
                ("PREPARE TRANSACTION".to_string(), 13),
            ]
        );
        assert!(
            transaction_ends("DROP TABLE \"Post\";\nALTER TABLE \"User\" DROP COLUMN \"x\";")
                .is_empty()
        );
    }
}
