//! mrkdwn text: escaping, cutting to a limit without splitting an entity, and splitting long
//! text into pieces at line ends.

/// Escapes text for mrkdwn: `&`, `<` and `>` become entities, so nothing in it is read as a
/// mention, a link or a special token like `<!channel>`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Byte index after at most `max` characters of `s`, moved back so that it does not split an
/// entity (`&amp;`) that [`escape`] wrote.
pub(super) fn cut_point(s: &str, max: usize) -> usize {
    let mut cut = s.char_indices().nth(max).map(|(i, _)| i).unwrap_or(s.len());
    if let Some(amp) = s[..cut].rfind('&') {
        if cut - amp < 6 && !s[amp..cut].contains(';') && s[amp..].contains(';') {
            let rest = &s[amp..];
            if rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;") {
                cut = amp;
            }
        }
    }
    cut
}

/// `s` cut to at most `max` characters, ending in `…` when cut (plain text).
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut = s
        .char_indices()
        .nth(max.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    format!("{}…", &s[..cut])
}

/// Like [`truncate`], for escaped mrkdwn: never splits an entity.
pub(super) fn truncate_md(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    format!("{}…", &s[..cut_point(s, max.saturating_sub(1))])
}

/// Splits mrkdwn into pieces of at most `max` characters, at line ends where it can.
pub(super) fn split_md(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for line in text.split('\n') {
        let mut line = line.to_string();
        let mut len = line.chars().count();
        while len > max {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            let mut cut = cut_point(&line, max);
            if cut == 0 {
                cut = line
                    .char_indices()
                    .nth(1)
                    .map(|(i, _)| i)
                    .unwrap_or(line.len());
            }
            out.push(line[..cut].to_string());
            line = line[cut..].to_string();
            len = line.chars().count();
        }
        let extra = if cur.is_empty() { len } else { len + 1 };
        if cur_len + extra > max {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if !cur.is_empty() {
            cur.push('\n');
            cur_len += 1;
        }
        cur.push_str(&line);
        cur_len += len;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.retain(|s| !s.trim().is_empty());
    out
}
