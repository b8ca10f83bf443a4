//! Parsing a `postgres://` URL: splitting it, percent-decoding and checking each piece, the
//! query parameters libpq and Prisma take, then the TLS settings (see `tls`).

use secrecy::SecretString;

use super::tls::{resolve_root_cert, SslMode};
use super::{PgUrl, UrlError};

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL and resolves its TLS settings (see the module
    /// documentation): a named CA file must exist and hold a PEM certificate.
    pub fn parse(url: &str) -> Result<PgUrl, UrlError> {
        Self::parse_with_env(url, &|k| std::env::var_os(k))
    }

    /// [`PgUrl::parse`] with the environment given as a function (for tests).
    pub(super) fn parse_with_env(
        url: &str,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<PgUrl, UrlError> {
        let pieces = split_url(url)?;
        let mut out = PgUrl {
            host: None,
            port: None,
            user: None,
            password: None,
            dbname: None,
            schema: None,
            sslmode: None,
            root_cert: None,
            connect_timeout: None,
            application_name: None,
        };

        if let Some(userinfo) = pieces.userinfo {
            out.set_userinfo(userinfo)?;
        }
        let (host, port) = split_host_port(pieces.hostport)?;
        if let Some(h) = host {
            out.host = Some(h);
        }
        out.port = port;

        if let Some(path) = pieces.path {
            let db = decode(path, "database name")?;
            check_text(&db, "database name")?;
            if !db.is_empty() {
                out.dbname = Some(db);
            }
        }

        let mut sslrootcert = None;
        for pair in pieces
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k, "query parameters")?;
            let value = decode(v, "query parameters")?;
            out.set_param(&key, value, &mut sslrootcert)?;
        }

        if out.dbname.is_none() && out.user.is_none() {
            return Err(UrlError::MissingDatabase);
        }
        out.root_cert = resolve_root_cert(out.ssl_mode(), sslrootcert, env)?;
        Ok(out)
    }

    /// Takes `user[:password]` (still percent-encoded).
    fn set_userinfo(&mut self, userinfo: &str) -> Result<(), UrlError> {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        let user = decode(user, "user name")?;
        check_text(&user, "user name")?;
        if !user.is_empty() {
            self.user = Some(user);
        }
        if let Some(p) = password {
            let p = decode(p, "password")?;
            if p.contains('\0') {
                return Err(UrlError::ControlCharacter("password"));
            }
            if !p.is_empty() {
                self.password = Some(SecretString::from(p));
            }
        }
        Ok(())
    }

    /// Takes one decoded query parameter; the CA file goes to `sslrootcert`, resolved after all
    /// of them.
    fn set_param(
        &mut self,
        key: &str,
        value: String,
        sslrootcert: &mut Option<String>,
    ) -> Result<(), UrlError> {
        match key {
            "schema" => {
                check_text(&value, "schema")?;
                self.schema = (!value.is_empty()).then_some(value);
            }
            "host" => {
                check_text(&value, "host")?;
                if value.contains(',') {
                    return Err(UrlError::MultipleHosts);
                }
                if !value.is_empty() {
                    self.host = Some(value);
                }
            }
            "port" => self.port = Some(parse_port(&value)?),
            "user" => {
                check_text(&value, "user name")?;
                self.user = (!value.is_empty()).then_some(value);
            }
            "password" => {
                if value.contains('\0') {
                    return Err(UrlError::ControlCharacter("password"));
                }
                self.password = (!value.is_empty()).then(|| SecretString::from(value));
            }
            "dbname" => {
                check_text(&value, "database name")?;
                self.dbname = (!value.is_empty()).then_some(value);
            }
            "sslmode" => self.sslmode = Some(SslMode::parse(&value)?),
            "sslrootcert" => {
                check_text(&value, "sslrootcert")?;
                *sslrootcert = (!value.is_empty()).then_some(value);
            }
            "connect_timeout" => {
                self.connect_timeout =
                    Some(value.parse::<u32>().map_err(|_| UrlError::ConnectTimeout)?);
            }
            "application_name" => {
                check_text(&value, "application name")?;
                self.application_name = Some(value);
            }
            // Prisma-only settings and parameters whose meaning differs between Prisma and
            // libpq: not passed on.
            _ => {}
        }
        Ok(())
    }
}

/// The pieces of a URL after its scheme, still percent-encoded.
struct Pieces<'a> {
    userinfo: Option<&'a str>,
    hostport: &'a str,
    path: Option<&'a str>,
    query: Option<&'a str>,
}

/// Splits a URL into its pieces (the fragment dropped).
fn split_url(url: &str) -> Result<Pieces<'_>, UrlError> {
    let rest = strip_scheme(url.trim()).ok_or(UrlError::Scheme)?;
    // A fragment has no meaning for libpq; drop it.
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    // libpq takes the last '@' of the authority as the end of the user info, so that an
    // unencoded '@' in a password still works.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    Ok(Pieces {
        userinfo,
        hostport,
        path,
        query,
    })
}

fn strip_scheme(url: &str) -> Option<&str> {
    for scheme in ["postgresql://", "postgres://"] {
        if url.len() >= scheme.len()
            && url.is_char_boundary(scheme.len())
            && url[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            return Some(&url[scheme.len()..]);
        }
    }
    None
}

fn split_host_port(hostport: &str) -> Result<(Option<String>, Option<u16>), UrlError> {
    if hostport.contains(',') {
        return Err(UrlError::MultipleHosts);
    }
    if let Some(rest) = hostport.strip_prefix('[') {
        let end = rest.find(']').ok_or(UrlError::Host)?;
        let host = &rest[..end];
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(UrlError::Host);
        }
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or(UrlError::Host)?)?),
        };
        return Ok((Some(host.to_string()), port));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            if p.is_empty() {
                None
            } else {
                Some(parse_port(p)?)
            },
        ),
        None => (hostport, None),
    };
    let host = decode(host, "host")?;
    check_text(&host, "host")?;
    if host.contains(':') || host.contains('[') || host.contains(']') {
        return Err(UrlError::Host);
    }
    Ok(((!host.is_empty()).then_some(host), port))
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::Port);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError::Port),
        Ok(n) => Ok(n),
    }
}

/// Decodes `%XX` escapes. `percent_decode_str` leaves a malformed escape (`%ZZ`, a lone `%`)
/// as it is; libpq refuses it, and so does this.
fn decode(s: &str, part: &'static str) -> Result<String, UrlError> {
    let malformed = s.match_indices('%').any(|(i, _)| {
        s.as_bytes()
            .get(i + 1..i + 3)
            .is_none_or(|hex| !hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(UrlError::PercentEncoding(part));
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| UrlError::PercentEncoding(part))
}

fn check_text(s: &str, part: &'static str) -> Result<(), UrlError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(UrlError::ControlCharacter(part));
    }
    Ok(())
}
