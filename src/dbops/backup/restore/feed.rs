//! What reaches psql's stdin: the SQL copied line by line, with pg_dump's `\restrict` pair and
//! pg_restore's own `BEGIN;`/closing `COMMIT;` blanked, and whether that `COMMIT;` was seen.

use std::io::{self, BufRead, Write};

/// `\restrict KEY` or `\unrestrict KEY` as pg_dump writes them: the key, if `line` is one.
fn restrict_line<'a>(line: &'a [u8], command: &str) -> Option<&'a [u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_prefix(b"\\")?
        .strip_prefix(command.as_bytes())?
        .strip_prefix(b" ")?;
    (!rest.is_empty() && rest.iter().all(u8::is_ascii_alphanumeric)).then_some(rest)
}

/// Whether `line` is exactly `stmt` (pg_restore writes its own `BEGIN;`/`COMMIT;` that way).
fn is_line(line: &[u8], stmt: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line == stmt
}

/// Copies a plain SQL dump to psql, blanking (keeping line numbers) pg_dump's own `\restrict KEY`
/// in the header (before the first line that is not blank or a `--` comment) and the matching
/// `\unrestrict KEY` when it is the last non-blank line. Everything else passes unchanged.
#[cfg(test)]
fn feed_plain_sql(input: impl BufRead, out: &mut impl Write) -> io::Result<()> {
    feed_sql(input, out, false).map(|_| ())
}

/// Copies SQL to psql, blanking (keeping line numbers) pg_dump's own `\restrict KEY` in the
/// header (before the first line that is not blank or a `--` comment) and the matching
/// `\unrestrict KEY` when nothing but blank lines and comments follow it. Everything else passes
/// unchanged.
///
/// `from_pg_restore`: the input is `pg_restore --single-transaction --file=-` output, whose
/// first statement is its own `BEGIN;` and whose last one its own `COMMIT;`. Both are blanked
/// (dualkey holds the transaction), and the result says whether that closing `COMMIT;` was
/// there, i.e. whether pg_restore wrote its output to the end. A `COMMIT;` line followed by
/// anything but blank lines, comments and the final `\unrestrict` (a line of `COPY` data, a
/// line in a function body) passes unchanged. For plain files the result is always `true`.
pub(super) fn feed_sql(
    mut input: impl BufRead,
    out: &mut impl Write,
    from_pg_restore: bool,
) -> io::Result<bool> {
    let mut line = Vec::with_capacity(8192);
    let mut in_header = true;
    let mut begin_pending = from_pg_restore;
    let mut key: Option<Vec<u8>> = None;
    // Lines held back because they may be the end of the script: pg_restore's closing
    // `COMMIT;`, the final `\unrestrict`, and blank and comment lines after either.
    let mut held: Vec<Vec<u8>> = Vec::new();
    // Indexes in `held` of the lines to blank if the script ends here.
    let mut held_commit: Option<usize> = None;
    let mut held_unrestrict: Option<usize> = None;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let blank = line.iter().all(u8::is_ascii_whitespace);
        let comment = line.starts_with(b"--");
        if in_header {
            if let Some(k) = restrict_line(&line, "restrict") {
                key = Some(k.to_vec());
                in_header = false;
                out.write_all(b"\n")?;
                continue;
            }
            if !blank && !comment {
                in_header = false;
            }
        }
        if begin_pending && !blank && !comment {
            begin_pending = false;
            if is_line(&line, b"BEGIN;") {
                out.write_all(b"\n")?;
                continue;
            }
        }
        let is_commit = from_pg_restore && is_line(&line, b"COMMIT;");
        let is_unrestrict = key.is_some() && restrict_line(&line, "unrestrict") == key.as_deref();
        if is_commit || is_unrestrict {
            if is_commit {
                // Only a COMMIT after which nothing runs is pg_restore's closing one.
                for h in held.drain(..) {
                    out.write_all(&h)?;
                }
                held_unrestrict = None;
                held_commit = Some(0);
            } else {
                held_unrestrict = Some(held.len());
            }
            held.push(line.clone());
            continue;
        }
        if !held.is_empty() {
            if blank || comment {
                held.push(line.clone());
                continue;
            }
            for h in held.drain(..) {
                out.write_all(&h)?;
            }
            held_commit = None;
            held_unrestrict = None;
        }
        out.write_all(&line)?;
    }
    for i in [held_commit, held_unrestrict].into_iter().flatten() {
        held[i] = b"\n".to_vec();
    }
    for h in held {
        out.write_all(&h)?;
    }
    Ok(!from_pg_restore || held_commit.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(input: &str) -> String {
        let mut out = Vec::new();
        feed_plain_sql(input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pg_dumps_own_restrict_pair_is_blanked() {
        let dump = "--\n-- dump\n--\n\n\\restrict abc123\n\nSET x = 1;\nCOPY t FROM stdin;\n1\n\\.\n\n\\unrestrict abc123\n\n";
        assert_eq!(
            feed(dump),
            "--\n-- dump\n--\n\n\n\nSET x = 1;\nCOPY t FROM stdin;\n1\n\\.\n\n\n\n"
        );
    }

    #[test]
    fn other_backslash_lines_pass_through_for_psql_to_refuse() {
        for input in [
            // A second \restrict after the header, an \unrestrict that is not last, another key.
            "SET x = 1;\n\\restrict abc\n",
            "\\restrict k1\nSELECT 1;\n\\unrestrict k1\n\\! id\n",
            "\\restrict k1\nSELECT 1;\n\\unrestrict k2\n",
            "\\restrict k1\n\\! id\n",
            "\\restrict k1 \\! id\n",
        ] {
            let out = feed(input);
            let kept: Vec<&str> = out.lines().filter(|l| l.starts_with('\\')).collect();
            let expected: Vec<&str> = input
                .lines()
                .filter(|l| l.starts_with('\\'))
                .filter(|l| *l != "\\restrict k1")
                .collect();
            assert_eq!(kept, expected, "{input:?}");
        }
    }

    #[test]
    fn lines_and_bytes_are_kept_otherwise() {
        let input = "SELECT 'caf\u{e9}';\r\nCOPY t FROM stdin;\nx\\ty\n\\.\nno newline at end";
        assert_eq!(feed(input), input);
    }

    fn feed_restore(input: &str) -> (String, bool) {
        let mut out = Vec::new();
        let complete = feed_sql(input.as_bytes(), &mut out, true).unwrap();
        (String::from_utf8(out).unwrap(), complete)
    }

    /// What `pg_restore --single-transaction --file=-` writes, around `body`.
    fn pg_restore_output(body: &str) -> String {
        format!("--\n-- PostgreSQL database dump\n--\n\n\\restrict k9\n\n-- Dumped by pg_dump\n\nBEGIN;\n\nSET x = 0;\n{body}\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict k9\n\n")
    }

    #[test]
    fn pg_restores_own_begin_and_closing_commit_are_blanked_and_the_end_is_seen() {
        let input = pg_restore_output("CREATE TABLE t (id int);\n");
        let (out, complete) = feed_restore(&input);
        assert!(complete);
        assert!(!out.contains("BEGIN;") && !out.contains("COMMIT;"), "{out}");
        assert!(!out.contains("restrict"), "{out}");
        assert!(
            out.contains("SET x = 0;\nCREATE TABLE t (id int);\n"),
            "{out}"
        );
        assert_eq!(
            out.lines().count(),
            input.lines().count(),
            "line numbers are kept"
        );
    }

    #[test]
    fn a_commit_line_that_is_data_or_a_function_body_passes_unchanged() {
        for body in [
            "COPY t (v) FROM stdin;\nCOMMIT;\n\\.\n",
            "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$\nBEGIN\nCOMMIT;\n-- c\nEND $$;\n",
        ] {
            let (out, complete) = feed_restore(&pg_restore_output(body));
            assert!(complete, "{body}");
            assert!(out.contains(body), "{out}");
            assert_eq!(out.matches("COMMIT;").count(), 1, "{out}");
        }
    }

    #[test]
    fn pg_restore_output_cut_before_its_closing_commit_is_incomplete() {
        let full = pg_restore_output("CREATE TABLE t ();\n");
        let cut = &full[..full.rfind("COMMIT;").unwrap()];
        assert!(!feed_restore(cut).1);
        // COPY data ending in a COMMIT line, cut before the end marker: not the closing one.
        let cut = "BEGIN;\nCOPY t (v) FROM stdin;\nx\nCOMMIT;\n";
        let (out, complete) = feed_restore(cut);
        // A cut stream can end in a line that reads like the closing COMMIT; the restore still
        // does not commit then, because pg_restore did not exit 0 (see run_restore).
        assert!(complete && !out.contains("COMMIT;"));
        assert!(!feed_restore("BEGIN;\nSET x = 1;\n").1);
        assert!(!feed_restore("").1);
    }

    #[test]
    fn plain_files_keep_their_begin_and_commit_for_the_guard_to_refuse() {
        let input = "BEGIN;\nCREATE TABLE t ();\nCOMMIT;\n";
        let mut out = Vec::new();
        assert!(feed_sql(input.as_bytes(), &mut out, false).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), input);
    }
}
