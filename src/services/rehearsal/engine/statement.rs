//! The error of a migration that failed on the restored copy, in one readable piece, and the
//! statement of its script that failed: found from the error's position when PostgreSQL gave one,
//! else from the names the error quotes (a unique index, a column, a table).

/// `(error, statement)` from Prisma's P3018 text (`…Database error:\nERROR: …\nDETAIL: …`) and
/// the migration's script when it could be read.
pub fn failure(p3018: &str, script: Option<&str>) -> (String, Option<String>) {
    let error = database_error(p3018);
    let statement = script.and_then(|s| failing_statement(p3018, &error, s));
    (error, statement)
}

/// The `ERROR: …` (with `DETAIL:`/`HINT:`) part of a P3018 text; the whole text otherwise.
fn database_error(p3018: &str) -> String {
    let Some((_, rest)) = p3018.split_once("Database error:\n") else {
        return p3018.trim().to_string();
    };
    let end = ["\n\nPosition:", "\n\nDbError"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .unwrap_or(rest.len());
    rest[..end].trim().to_string()
}

/// PostgreSQL's 1-based character position of the error in the script, from the error's debug
/// rendering (`position: Some(Original(17))`).
fn position(p3018: &str) -> Option<usize> {
    let (_, rest) = p3018.split_once("position: Some(Original(")?;
    rest.split(')').next()?.parse().ok()
}

/// The names the error's first line quotes: `"Task_code_key"`, `"title"`.
fn quoted(error: &str) -> Vec<String> {
    let first = error.lines().next().unwrap_or_default();
    first
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The script's statements with their byte offsets.
fn statements(script: &str) -> Vec<(usize, &str)> {
    let parts = pg_query::split_with_scanner(script).unwrap_or_else(|_| vec![script]);
    parts
        .into_iter()
        .map(|p| {
            let p = without_leading_comments(p);
            (p.as_ptr() as usize - script.as_ptr() as usize, p)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// `s` trimmed, without the `-- …` lines before its first word (Prisma's `-- CreateIndex`).
fn without_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        match s.strip_prefix("--") {
            Some(rest) => s = rest.split_once('\n').map_or("", |(_, r)| r),
            None => return s.trim_end(),
        }
    }
}

fn failing_statement(p3018: &str, error: &str, script: &str) -> Option<String> {
    let all = statements(script);
    if let Some(pos) = position(p3018) {
        // A character position; the byte offset of that character.
        let byte = script
            .char_indices()
            .nth(pos.saturating_sub(1))
            .map(|(b, _)| b)?;
        if let Some((_, s)) = all
            .iter()
            .find(|(off, s)| *off <= byte && byte < off + s.len())
        {
            return Some(s.to_string());
        }
        // The scanner gave up on it: from the `;` before to the `;` after.
        let start = script[..byte].rfind(';').map_or(0, |i| i + 1);
        let end = script[byte..].find(';').map_or(script.len(), |i| byte + i);
        return Some(script[start..end].trim().to_string());
    }
    let names = quoted(error);
    let best = all
        .iter()
        .map(|(_, s)| (names.iter().filter(|n| s.contains(n.as_str())).count(), *s))
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n);
    match best {
        Some((_, s)) => Some(s.to_string()),
        None if all.len() == 1 => Some(all[0].1.to_string()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIQUE: &str = "A migration failed to apply. New migrations cannot be applied before the error is recovered from.\n\nMigration name: 2_uniq\n\nDatabase error code: 23505\n\nDatabase error:\nERROR: could not create unique index \"Task_title_key\"\nDETAIL: Key (title)=(a) is duplicated.\n\nDbError { severity: \"ERROR\", position: None }\n";

    #[test]
    fn the_failing_statement_is_found_by_the_names_the_error_quotes() {
        let script = "-- add\nALTER TABLE \"Task\" ADD COLUMN \"x\" INTEGER;\n\n-- CreateIndex\nCREATE UNIQUE INDEX \"Task_title_key\" ON \"Task\"(\"title\");\n";
        let (error, statement) = failure(UNIQUE, Some(script));
        assert_eq!(
            error,
            "ERROR: could not create unique index \"Task_title_key\"\nDETAIL: Key (title)=(a) is duplicated."
        );
        assert_eq!(
            statement.as_deref(),
            Some("CREATE UNIQUE INDEX \"Task_title_key\" ON \"Task\"(\"title\")")
        );
    }

    #[test]
    fn the_failing_statement_is_found_by_position() {
        let script = "SELECT 1;\nSELEC 2;\n";
        let text = "Database error:\nERROR: syntax error at or near \"SELEC\"\n\nPosition:\n  1 SELECT 1;\n\nDbError { position: Some(Original(11)), where_: None }";
        let (error, statement) = failure(text, Some(script));
        assert_eq!(error, "ERROR: syntax error at or near \"SELEC\"");
        assert_eq!(statement.as_deref(), Some("SELEC 2"));
    }

    #[test]
    fn without_a_clue_there_is_no_statement() {
        let (_, s) = failure(
            "Database error:\nERROR: out of memory",
            Some("SELECT 1; SELECT 2;"),
        );
        assert_eq!(s, None);
        let (e, s) = failure("P3015 no script", None);
        assert_eq!((e.as_str(), s), ("P3015 no script", None));
    }
}
