//! Redaction of passwords in database URLs and conninfo strings, for `Debug` output, logs and
//! error messages.

/// Replaces the password of a `scheme://user:password@host/...` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        // The password may itself hold '/', '@' or '?' (libpq reads the userinfo up to the last
        // '@'): take the last '@' anywhere, so a stray one in a query over-redacts rather than
        // a password showing.
        if let Some(at) = rest.rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                out = format!(
                    "{}://{}:***{}",
                    &url[..scheme_end],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
    }
    redact_password_params(&out)
}

/// Replaces the value of `password=...` (URL query parameters and libpq conninfo strings).
pub fn redact_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search = 0;
    while let Some(pos) = lower[search..].find("password=") {
        let start = search + pos + "password=".len();
        let end = text[start..]
            .find(|c: char| c == '&' || c.is_whitespace() || c == '\'' || c == '"')
            .map(|e| start + e)
            .unwrap_or(text.len());
        out.push_str(&text[last..start]);
        out.push_str("***");
        last = end;
        search = end.max(start);
        if search >= text.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_password_form_is_redacted() {
        for (input, secret) in [
            ("postgres://u:p/ss@w0rd@db/x", "p/ss"),
            ("postgres://u:hun?ter5@127.0.0.1:1/db", "hun?ter5"),
            ("postgres://u:a?b@c@db/x?sslmode=require", "a?b@c"),
            (
                "postgres://db/x?user=u&password=hunter2&sslmode=require",
                "hunter2",
            ),
            ("host=db user=u password=hunter2 dbname=x", "hunter2"),
            ("PGPASSWORD=hunter2 psql", "hunter2"),
        ] {
            let r = redact_url(input);
            assert!(!r.contains(secret), "{input} -> {r}");
        }
        assert_eq!(
            redact_url("postgres://db/x?sslmode=require"),
            "postgres://db/x?sslmode=require"
        );
    }
}
