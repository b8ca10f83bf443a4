//! PostgreSQL connection URLs, parsed so that the pieces can be handed to `pg_dump`, `pg_restore` and
//! `psql` one by one: host, port, user and database name as arguments, the password only through the
//! child's `PGPASSWORD` environment variable.
//!
//! A database URL is a secret. Nothing here ever puts the URL or its password into an error message,
//! a `Debug` string or a log line: [`PgUrl`]'s `Debug` redacts the password, [`PgUrl::redacted`] gives
//! a printable form, and every [`UrlError`] names the part that was wrong, never its value.
//!
//! Accepted forms are the libpq/Prisma URI forms
//! `postgres[ql]://[user[:password]@][host][:port][/dbname][?param=value&...]`, with percent-encoding,
//! IPv6 hosts in brackets and a Unix socket directory given as `?host=/var/run/postgresql`. Prisma's
//! `?schema=` is kept (see [`PgUrl::schema`]); `sslmode`, `connect_timeout` and `application_name` are
//! passed on to libpq; every other parameter (Prisma's pool settings, certificate paths whose meaning
//! differs between Prisma and libpq) is ignored. Several comma-separated hosts are refused.

use secrecy::{ExposeSecret, SecretString};

/// Why a database URL could not be used. Never contains the URL or any part of its secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL does not start with `postgres://` or `postgresql://`.
    #[error("the database URL must start with postgres:// or postgresql://")]
    Scheme,
    /// A `%XX` escape is malformed or decodes to invalid UTF-8.
    #[error("the database URL has an invalid percent-encoding in its {0}")]
    PercentEncoding(&'static str),
    /// A part contains a NUL byte or a control character that no PostgreSQL tool can take.
    #[error("the database URL has a control character in its {0}")]
    ControlCharacter(&'static str),
    /// The port is not a number between 1 and 65535.
    #[error("the database URL has an invalid port")]
    Port,
    /// An IPv6 host is missing its closing `]`, or the host is otherwise malformed.
    #[error("the database URL has a malformed host")]
    Host,
    /// The URL lists several hosts (`h1,h2`), which dualkey does not support.
    #[error("the database URL lists several hosts; dualkey needs exactly one")]
    MultipleHosts,
    /// Neither a database name nor a user name (libpq's default database) is given.
    #[error("the database URL names no database")]
    MissingDatabase,
    /// `sslmode` has a value libpq does not know.
    #[error("the database URL has an unknown sslmode (expected disable, allow, prefer, require, verify-ca or verify-full)")]
    SslMode,
    /// `connect_timeout` is not a whole number of seconds.
    #[error("the database URL has an invalid connect_timeout")]
    ConnectTimeout,
}

/// A parsed PostgreSQL URL. `Debug` redacts the password; use [`PgUrl::redacted`] to print it.
#[derive(Clone)]
pub struct PgUrl {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<SecretString>,
    dbname: Option<String>,
    schema: Option<String>,
    sslmode: Option<String>,
    connect_timeout: Option<u32>,
    application_name: Option<String>,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("dbname", &self.dbname)
            .field("schema", &self.schema)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> Result<PgUrl, UrlError> {
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

        let mut out = PgUrl {
            host: None,
            port: None,
            user: None,
            password: None,
            dbname: None,
            schema: None,
            sslmode: None,
            connect_timeout: None,
            application_name: None,
        };

        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            let user = decode(user, "user name")?;
            check_text(&user, "user name")?;
            if !user.is_empty() {
                out.user = Some(user);
            }
            if let Some(p) = password {
                let p = decode(p, "password")?;
                if p.contains('\0') {
                    return Err(UrlError::ControlCharacter("password"));
                }
                if !p.is_empty() {
                    out.password = Some(SecretString::from(p));
                }
            }
        }

        let (host, port) = split_host_port(hostport)?;
        if let Some(h) = host {
            out.host = Some(h);
        }
        out.port = port;

        if let Some(path) = path {
            let db = decode(path, "database name")?;
            check_text(&db, "database name")?;
            if !db.is_empty() {
                out.dbname = Some(db);
            }
        }

        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k, "query parameters")?;
            let value = decode(v, "query parameters")?;
            match key.as_str() {
                "schema" => {
                    check_text(&value, "schema")?;
                    out.schema = (!value.is_empty()).then_some(value);
                }
                "host" => {
                    check_text(&value, "host")?;
                    if value.contains(',') {
                        return Err(UrlError::MultipleHosts);
                    }
                    if !value.is_empty() {
                        out.host = Some(value);
                    }
                }
                "port" => out.port = Some(parse_port(&value)?),
                "user" => {
                    check_text(&value, "user name")?;
                    out.user = (!value.is_empty()).then_some(value);
                }
                "password" => {
                    if value.contains('\0') {
                        return Err(UrlError::ControlCharacter("password"));
                    }
                    out.password = (!value.is_empty()).then(|| SecretString::from(value));
                }
                "dbname" => {
                    check_text(&value, "database name")?;
                    out.dbname = (!value.is_empty()).then_some(value);
                }
                "sslmode" => {
                    if !SSLMODES.contains(&value.as_str()) {
                        return Err(UrlError::SslMode);
                    }
                    out.sslmode = Some(value);
                }
                "connect_timeout" => {
                    out.connect_timeout =
                        Some(value.parse::<u32>().map_err(|_| UrlError::ConnectTimeout)?);
                }
                "application_name" => {
                    check_text(&value, "application name")?;
                    out.application_name = Some(value);
                }
                // Prisma-only settings and parameters whose meaning differs between Prisma and
                // libpq: not passed on.
                _ => {}
            }
        }

        if out.dbname.is_none() && out.user.is_none() {
            return Err(UrlError::MissingDatabase);
        }
        Ok(out)
    }

    /// The host name, IP address (IPv6 without brackets) or Unix socket directory, if given.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The port, if given (libpq's default is 5432).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The user name, if given.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password, if given. Only for handing to a child's `PGPASSWORD`.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }

    /// The database the tools will connect to: the URL's path, or libpq's default (the user name).
    pub fn database(&self) -> &str {
        self.dbname
            .as_deref()
            .or(self.user.as_deref())
            .expect("parse guarantees a database or a user name")
    }

    /// Prisma's `?schema=` parameter, if given (Prisma's default is `public`).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// libpq's `sslmode`, if given.
    pub fn sslmode(&self) -> Option<&str> {
        self.sslmode.as_deref()
    }

    /// The URL with the password replaced by `***`, safe to print.
    pub fn redacted(&self) -> String {
        let mut s = String::from("postgres://");
        if let Some(u) = &self.user {
            s.push_str(&percent_encode(u));
            if self.password.is_some() {
                s.push_str(":***");
            }
            s.push('@');
        }
        match &self.host {
            Some(h) if h.starts_with('/') => {}
            Some(h) if h.contains(':') => s.push_str(&format!("[{h}]")),
            Some(h) => s.push_str(&percent_encode(h)),
            None => {}
        }
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push('/');
        s.push_str(&percent_encode(self.database()));
        if let Some(h) = self.host.as_deref().filter(|h| h.starts_with('/')) {
            s.push_str("?host=");
            s.push_str(&percent_encode(h));
        }
        s
    }

    /// Arguments for `pg_dump`, `pg_restore` and `psql` that select this server and database.
    ///
    /// Every value is attached to its option (`--host=...`), so a value starting with `-` cannot be
    /// read as an option, and the database goes in as a quoted `dbname='...'` connection string, so a
    /// name containing `=` or starting with `postgres://` cannot smuggle in other settings. The
    /// password is never among them: see [`PgUrl::child_env`].
    pub fn connection_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(h) = &self.host {
            args.push(format!("--host={h}"));
        }
        if let Some(p) = self.port {
            args.push(format!("--port={p}"));
        }
        if let Some(u) = &self.user {
            args.push(format!("--username={u}"));
        }
        let mut conninfo = format!("dbname={}", conninfo_quote(self.database()));
        if let Some(m) = &self.sslmode {
            conninfo.push_str(&format!(" sslmode={}", conninfo_quote(m)));
        }
        if let Some(t) = self.connect_timeout {
            conninfo.push_str(&format!(" connect_timeout={t}"));
        }
        if let Some(a) = &self.application_name {
            conninfo.push_str(&format!(" application_name={}", conninfo_quote(a)));
        }
        args.push(format!("--dbname={conninfo}"));
        args
    }

    /// Environment for a child PostgreSQL tool: the `PG*` variables that could redirect it
    /// elsewhere are removed (`None`), and `PGPASSWORD` is set when the URL has a password.
    pub fn child_env(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut env: Vec<(&'static str, Option<&str>)> = [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSERVICE",
            "PGPASSWORD",
            "PGSSLMODE",
            "PGREQUIRESSL",
        ]
        .into_iter()
        .map(|k| (k, None))
        .collect();
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", Some(p.expose_secret())));
        }
        env
    }
}

/// The database name a URL points at (its path, or the user name when the path is empty).
pub fn database_name(url: &str) -> Result<String, UrlError> {
    Ok(PgUrl::parse(url)?.database().to_string())
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

fn decode(s: &str, part: &'static str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(UrlError::PercentEncoding(part))?;
            let hex = std::str::from_utf8(hex).map_err(|_| UrlError::PercentEncoding(part))?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| UrlError::PercentEncoding(part))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::PercentEncoding(part))
}

fn check_text(s: &str, part: &'static str) -> Result<(), UrlError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(UrlError::ControlCharacter(part));
    }
    Ok(())
}

/// Quotes a value for a libpq connection string: single quotes, with `\` and `'` escaped.
fn conninfo_quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        if c == '\\' || c == '\'' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

fn percent_encode(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(u: &PgUrl) -> Option<String> {
        u.password().map(|p| p.expose_secret().to_string())
    }

    #[test]
    fn parses_the_usual_prisma_url() {
        let u = PgUrl::parse(
            "postgresql://app:s3cr%40t@db.internal:6543/taskflow?schema=public&connection_limit=5",
        )
        .unwrap();
        assert_eq!(u.host(), Some("db.internal"));
        assert_eq!(u.port(), Some(6543));
        assert_eq!(u.user(), Some("app"));
        assert_eq!(pw(&u).as_deref(), Some("s3cr@t"));
        assert_eq!(u.database(), "taskflow");
        assert_eq!(u.schema(), Some("public"));
    }

    #[test]
    fn hostile_and_unusual_urls() {
        type Check = fn(&Result<PgUrl, UrlError>) -> bool;
        let cases: &[(&str, Check)] = &[
            ("mysql://u:p@h/db", |r| matches!(r, Err(UrlError::Scheme))),
            ("postgres//u@h/db", |r| matches!(r, Err(UrlError::Scheme))),
            ("POSTGRES://u@h/db", |r| {
                r.as_ref().unwrap().database() == "db"
            }),
            ("postgres://u:p@h:0/db", |r| {
                matches!(r, Err(UrlError::Port))
            }),
            ("postgres://u:p@h:65536/db", |r| {
                matches!(r, Err(UrlError::Port))
            }),
            ("postgres://u:p@h:-1/db", |r| {
                matches!(r, Err(UrlError::Port))
            }),
            ("postgres://u:p@h:5432x/db", |r| {
                matches!(r, Err(UrlError::Port))
            }),
            ("postgres://u:p@h1,h2/db", |r| {
                matches!(r, Err(UrlError::MultipleHosts))
            }),
            ("postgres://u:p@h/db?host=a,b", |r| {
                matches!(r, Err(UrlError::MultipleHosts))
            }),
            ("postgres://u:p@h/d%ZZb", |r| {
                matches!(r, Err(UrlError::PercentEncoding(_)))
            }),
            ("postgres://u:p@h/d%ff", |r| {
                matches!(r, Err(UrlError::PercentEncoding(_)))
            }),
            ("postgres://u:p@h/d%00b", |r| {
                matches!(r, Err(UrlError::ControlCharacter(_)))
            }),
            ("postgres://u:p%00@h/db", |r| {
                matches!(r, Err(UrlError::ControlCharacter("password")))
            }),
            ("postgres://u%0a@h/db", |r| {
                matches!(r, Err(UrlError::ControlCharacter(_)))
            }),
            ("postgres://[::1/db", |r| matches!(r, Err(UrlError::Host))),
            ("postgres://[::1]x/db", |r| matches!(r, Err(UrlError::Host))),
            ("postgres://[evil.com;x]/db", |r| {
                matches!(r, Err(UrlError::Host))
            }),
            ("postgres://h/db?sslmode=yolo", |r| {
                matches!(r, Err(UrlError::SslMode))
            }),
            ("postgres://h/db?connect_timeout=1;2", |r| {
                matches!(r, Err(UrlError::ConnectTimeout))
            }),
            ("postgres://h", |r| {
                matches!(r, Err(UrlError::MissingDatabase))
            }),
            ("postgres://h/", |r| {
                matches!(r, Err(UrlError::MissingDatabase))
            }),
            // libpq's default database is the user name.
            ("postgres://bob@h", |r| {
                r.as_ref().unwrap().database() == "bob"
            }),
            // An unencoded '@' in the password: the last '@' ends the user info.
            ("postgres://u:p@ss@h/db", |r| {
                let u = r.as_ref().unwrap();
                pw(u).as_deref() == Some("p@ss") && u.host() == Some("h")
            }),
            ("postgres://u:@h/db", |r| {
                r.as_ref().unwrap().password().is_none()
            }),
            ("postgres://[::1]:5433/db", |r| {
                let u = r.as_ref().unwrap();
                u.host() == Some("::1") && u.port() == Some(5433)
            }),
            ("postgres://u@/db?host=%2Fvar%2Frun%2Fpostgresql", |r| {
                r.as_ref().unwrap().host() == Some("/var/run/postgresql")
            }),
            ("postgres://u@h/db#frag", |r| {
                r.as_ref().unwrap().database() == "db"
            }),
            // Names that would be options or connection strings if handed over naively.
            ("postgres://-oProxyCommand@h/--help", |r| {
                let u = r.as_ref().unwrap();
                u.user() == Some("-oProxyCommand") && u.database() == "--help"
            }),
            ("postgres://u@h/host=evil%20port=1", |r| {
                r.as_ref().unwrap().database() == "host=evil port=1"
            }),
            ("postgres://u@h/postgres:%2F%2Fevil%2Fdb", |r| {
                r.as_ref().unwrap().database() == "postgres://evil/db"
            }),
            ("postgres://u@h/..%2F..%2Fetc", |r| {
                r.as_ref().unwrap().database() == "../../etc"
            }),
            ("postgres://u@h/%E2%9C%93db", |r| {
                r.as_ref().unwrap().database() == "✓db"
            }),
        ];
        for (url, check) in cases {
            let r = PgUrl::parse(url);
            assert!(check(&r), "{url}: {r:?}");
        }
    }

    #[test]
    fn arguments_never_carry_the_password_and_quote_the_database() {
        let u = PgUrl::parse("postgres://-x:hunter22@-h:5433/a'b\\c%20host=evil?sslmode=require")
            .unwrap();
        let args = u.connection_args();
        assert_eq!(
            args,
            vec![
                "--host=-h".to_string(),
                "--port=5433".to_string(),
                "--username=-x".to_string(),
                "--dbname=dbname='a\\'b\\\\c host=evil' sslmode='require'".to_string(),
            ]
        );
        assert!(!args.iter().any(|a| a.contains("hunter22")));
        let env = u.child_env();
        assert!(env.contains(&("PGPASSWORD", Some("hunter22"))));
        assert!(env.contains(&("PGHOST", None)));
    }

    #[test]
    fn debug_and_errors_do_not_show_the_password() {
        let u = PgUrl::parse("postgres://app:hunter22@h/db").unwrap();
        let dbg = format!("{u:?}");
        assert!(!dbg.contains("hunter22"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
        assert_eq!(u.redacted(), "postgres://app:***@h/db");
        let err = PgUrl::parse("postgres://app:hunter22@h:99999/db").unwrap_err();
        assert!(!err.to_string().contains("hunter22"));
        assert!(!format!("{err:?}").contains("hunter22"));
    }

    #[test]
    fn database_name_reads_the_path() {
        assert_eq!(
            database_name("postgresql://u:p@localhost:5432/taskflow?schema=app").unwrap(),
            "taskflow"
        );
        assert_eq!(
            database_name("postgres://u:p@localhost/My%20DB").unwrap(),
            "My DB"
        );
        assert!(database_name("not a url").is_err());
    }
}
