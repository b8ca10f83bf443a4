//! Discord text: markdown escaping, cutting to a limit on a character boundary, code spans
//! and blocks that cannot be closed early, and the message `content` for plain text replies.

use super::CONTENT;

/// Escapes text for Discord markdown: `\ * _ ~ ` | > < # [ ]` get a backslash (so nothing in it
/// is bold, a quote, a spoiler, a heading, a link or a mention), a `-` starting a line too (a
/// list), and `@everyone` / `@here` get a zero-width space after the `@`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut line_start = true;
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '-' if line_start => out.push_str("\\-"),
            c => out.push(c),
        }
        line_start = c == '\n';
    }
    out.replace("@everyone", "@\u{200b}everyone")
        .replace("@here", "@\u{200b}here")
}

/// `s` cut to at most `max` characters, ending in `…` when cut; never ends in a lone escaping
/// backslash (which would escape the `…`).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1);
    let cut = s
        .char_indices()
        .nth(keep)
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let mut head = &s[..cut];
    let trailing = head.len() - head.trim_end_matches('\\').len();
    if trailing % 2 == 1 {
        head = &head[..head.len() - 1];
    }
    format!("{head}…")
}

/// Text inside code (a span or a block) cannot be escaped: backticks become `ˋ` so the code
/// cannot be closed early.
pub(super) fn code_safe(s: &str) -> String {
    s.replace('`', "ˋ")
}

/// A code block holding `s`, at most `max` characters in all, cut on a line with a note.
pub(super) fn code_block(s: &str, max: usize) -> String {
    let body = code_safe(s);
    let wrapped = format!("```\n{body}\n```");
    if wrapped.chars().count() <= max {
        return wrapped;
    }
    let room = max.saturating_sub(8 + 40);
    let lines: Vec<&str> = body.lines().collect();
    let mut kept = String::new();
    let mut shown = 0;
    for l in &lines {
        let add = l.chars().count() + usize::from(!kept.is_empty());
        if kept.chars().count() + add > room {
            break;
        }
        if !kept.is_empty() {
            kept.push('\n');
        }
        kept.push_str(l);
        shown += 1;
    }
    if shown == 0 {
        kept = truncate(&body, room.max(1));
        shown = 1;
    }
    let more = lines.len().saturating_sub(shown);
    let note = if more > 0 {
        format!("\n… {more} more line(s)")
    } else {
        String::new()
    };
    truncate(&format!("```\n{kept}{note}\n```"), max)
}

pub(super) fn text_content(t: &str) -> String {
    let s = escape(t);
    if s.trim().is_empty() {
        return "dualkey".into();
    }
    if s.chars().count() <= CONTENT {
        return s;
    }
    let note = "\n… cut here (Discord shows 2000 characters); run the same command in \
                `dualkey shell` or the CLI for all of it";
    let room = CONTENT - note.chars().count();
    let cut = truncate(&s, room);
    // Prefer a line end when there is one in the last quarter.
    let body = match cut.rfind('\n') {
        Some(i) if cut[..i].chars().count() > room * 3 / 4 => cut[..i].to_string(),
        _ => cut,
    };
    format!("{body}{note}")
}

/// Cut to at most `max` characters without an ellipsis (ids must stay ids).
pub(super) fn truncate_plain(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
