//! Database URLs: [`PgUrl`], [`UrlError`] and what the tools get from a URL here; the parser in
//! `parse`, `sslmode` and the CA file in `tls`.
//!
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
//! `?schema=` is kept (see [`PgUrl::schema`]); `connect_timeout` and `application_name` are passed on
//! to libpq; every other parameter (Prisma's pool settings, `sslcert`/`sslkey`, whose meaning differs
//! between Prisma and libpq) is ignored. Several comma-separated hosts are refused.
//!
//! # Why a parser of its own
//!
//! `url::Url` (the WHATWG parser reqwest uses) was tried and left out: it refuses
//! `postgres://u@/db?host=/socket` (empty host), reads `h1:5432,h2:5433` as a bad port instead
//! of several hosts, silently drops a raw tab or newline (`/d<TAB>b` becomes database `db`),
//! reads `+` in the query as a space, lets a malformed escape (`%ZZ`) through and turns a
//! non-UTF-8 one into U+FFFD, and accepts port 0. What it does split off (user info, host,
//! query) still comes back percent-encoded, so this module would keep its decoding, its checks
//! and a rewrite for the empty host around it. The test
//! `the_url_crate_refuses_or_changes_forms_libpq_reads` pins each of these. Escapes are
//! decoded and encoded with the `percent-encoding` crate.
//!
//! # TLS
//!
//! `sslmode` and `sslrootcert` are resolved once, here, and both sides get the same result: dualkey's
//! own connections through [`PgUrl::apply_tls`] (sqlx with rustls) and the tools through
//! `PGSSLMODE`/`PGSSLROOTCERT` in their environment ([`PgUrl::child_env`]), never on their command
//! line. The rules, chosen so that sqlx and libpq behave alike:
//! - `sslmode` comes from the URL only (default `prefer`); `PGSSLMODE` in dualkey's environment is
//!   ignored. `allow` is refused: sqlx treats it as `disable`, libpq falls back to TLS.
//! - The CA file is the URL's `sslrootcert`, else `PGSSLROOTCERT` from dualkey's environment, else
//!   libpq's default `~/.postgresql/root.crt` when it exists. It must exist, be readable and hold a
//!   PEM certificate, or the URL is refused with the path named. `verify-ca` and `verify-full`
//!   without any CA file are refused (libpq refuses them too; sqlx would trust only public roots).
//! - A certificate that is checked is always checked with its name: `verify-ca`, and `require`
//!   with a CA file (which libpq treats as `verify-ca`), both behave as `verify-full` on both sides.
//!   sqlx 0.8.6 cannot check a chain without the name (its `verify-ca` rejects every name mismatch
//!   under rustls >= 0.23.24, launchbadge/sqlx#3793), and a name-less check in sqlx would also
//!   accept any certificate from the public roots it bundles. The one remaining difference: sqlx
//!   trusts those public roots besides the CA file, libpq only the CA file.
//! - Under `disable` and `prefer` the CA file is neither checked nor passed on. Over a Unix socket
//!   neither side uses TLS (libpq never does there).
//! - Client certificates: `PGSSLCERT`/`PGSSLKEY` in dualkey's environment reach both sides (the
//!   tools inherit them, sqlx reads them); the URL's `sslcert`/`sslkey` are ignored because Prisma
//!   reads `sslcert` as the CA.

mod parse;
mod tls;

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

pub use tls::SslMode;

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
    #[error("the database URL has an unknown sslmode (expected disable, prefer, require, verify-ca or verify-full)")]
    SslMode,
    /// `sslmode=allow`, which sqlx and libpq do not handle alike.
    #[error("the database URL has sslmode=allow, which dualkey does not support (its driver would never use TLS, the PostgreSQL tools would); use prefer (TLS when the server offers it) or require")]
    SslModeAllow,
    /// The CA file (`sslrootcert`, `PGSSLROOTCERT` or `~/.postgresql/root.crt`) cannot be used.
    #[error("the database URL's CA file ({source_name}) {path} {problem}; give sslrootcert=/path/to/ca.pem, the PEM file of the CA that signed the server's certificate")]
    RootCert {
        /// Where the path came from: `sslrootcert`, `PGSSLROOTCERT` or `~/.postgresql/root.crt`.
        source_name: &'static str,
        /// The path (a file name is not a secret).
        path: String,
        /// What is wrong with it, e.g. `does not exist`.
        problem: String,
    },
    /// `verify-ca` or `verify-full` without any CA file.
    #[error("the database URL has sslmode={0} but no sslrootcert; add sslrootcert=/path/to/ca.pem (the CA that signed the server's certificate, e.g. your provider's CA bundle)")]
    NoRootCert(&'static str),
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
    sslmode: Option<SslMode>,
    root_cert: Option<PathBuf>,
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
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

impl PgUrl {
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
        self.sslmode.map(SslMode::as_str)
    }

    /// The `sslmode` asked for: the URL's, or `prefer` (libpq's default).
    pub fn ssl_mode(&self) -> SslMode {
        self.sslmode.unwrap_or(SslMode::Prefer)
    }

    /// The `sslmode` both sides actually use: a certificate that is checked is checked with its
    /// name, so `verify-ca`, and `require` with a CA file, become `verify-full` (see the module
    /// documentation for why).
    pub fn effective_ssl_mode(&self) -> SslMode {
        match (self.ssl_mode(), &self.root_cert) {
            (SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => SslMode::VerifyFull,
            (mode, _) => mode,
        }
    }

    /// The checked CA file both sides verify the server's certificate with, if any (always `None`
    /// under `disable` and `prefer`).
    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// Applies the resolved TLS settings to sqlx options, overriding whatever sqlx took from the
    /// URL or from `PGSSLMODE`/`PGSSLROOTCERT`, so that dualkey's own connection makes the same
    /// choice as libpq in the tools.
    ///
    /// One difference remains: sqlx's rustls build trusts Mozilla's public roots besides the CA
    /// file, libpq only the CA file. With the name always checked, a certificate from a public CA
    /// passes only if it was issued for the server's name.
    pub fn apply_tls(&self, options: PgConnectOptions) -> PgConnectOptions {
        // libpq never uses TLS on a Unix socket, whatever the sslmode, and the server refuses it
        // there; sqlx would ask anyway and fail under `require`.
        if options.get_socket().is_some() {
            return options.ssl_mode(PgSslMode::Disable);
        }
        let mode = match self.effective_ssl_mode() {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        };
        let options = options.ssl_mode(mode);
        match &self.root_cert {
            Some(p) => options.ssl_root_cert(p),
            None => options,
        }
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
    /// elsewhere are removed (`None`), `PGPASSWORD` is set when the URL has a password, and the
    /// resolved TLS settings go in as `PGSSLMODE` and `PGSSLROOTCERT` (see the module docs).
    pub fn child_env(&self) -> Vec<(&'static str, Option<String>)> {
        let mut env: Vec<(&'static str, Option<String>)> = [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSERVICE",
            "PGPASSWORD",
            "PGSSLMODE",
            "PGREQUIRESSL",
            "PGSSLROOTCERT",
        ]
        .into_iter()
        .map(|k| (k, None))
        .collect();
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", Some(p.expose_secret().to_string())));
        }
        env.push((
            "PGSSLMODE",
            Some(self.effective_ssl_mode().as_str().to_string()),
        ));
        if let Some(p) = &self.root_cert {
            env.push(("PGSSLROOTCERT", Some(p.display().to_string())));
        } else if matches!(
            self.effective_ssl_mode(),
            SslMode::Prefer | SslMode::Require
        ) {
            // Without a CA file dualkey's driver does not check the certificate. libpq would still
            // read ~/.postgresql/root.crt, check with it, and under `prefer` fall back to plain
            // text when the check fails: a path that cannot exist makes it do what the driver does.
            env.push(("PGSSLROOTCERT", Some(NO_ROOT_CERT.to_string())));
        }
        env
    }
}

/// `PGSSLROOTCERT` for the tools when no CA file applies (`prefer`, `require` without one): a
/// path that cannot exist, so libpq checks no certificate, like dualkey's own driver, instead of
/// reading `~/.postgresql/root.crt` on its own.
pub const NO_ROOT_CERT: &str = "/nonexistent/dualkey-no-ssl-root-cert";

/// The database name a URL points at (its path, or the user name when the path is empty).
pub fn database_name(url: &str) -> Result<String, UrlError> {
    Ok(PgUrl::parse(url)?.database().to_string())
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

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`) is escaped.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub(crate) fn percent_encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, ESCAPED).to_string()
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
            ("postgres://h/db?sslmode=allow", |r| {
                matches!(r, Err(UrlError::SslModeAllow))
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
                "--dbname=dbname='a\\'b\\\\c host=evil'".to_string(),
            ]
        );
        assert!(!args.iter().any(|a| a.contains("hunter22")));
        let env = u.child_env();
        assert!(env.contains(&("PGPASSWORD", Some("hunter22".to_string()))));
        assert!(env.contains(&("PGHOST", None)));
        // The TLS settings travel in the environment, after the removal of the inherited ones.
        let last = |k: &str| env.iter().rev().find(|(n, _)| *n == k).cloned();
        assert_eq!(
            last("PGSSLMODE"),
            Some(("PGSSLMODE", Some("require".into())))
        );
        // No CA file: libpq must not pick up ~/.postgresql/root.crt on its own.
        assert_eq!(
            last("PGSSLROOTCERT"),
            Some(("PGSSLROOTCERT", Some(NO_ROOT_CERT.into())))
        );
    }

    #[test]
    fn the_ca_file_comes_from_the_url_then_the_environment_then_libpqs_default() {
        let dir = std::env::temp_dir().join(format!("dk-url-ca-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".postgresql")).unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let (a, b, home) = (
            dir.join("a.pem"),
            dir.join("b.pem"),
            dir.join(".postgresql/root.crt"),
        );
        for p in [&a, &b, &home] {
            std::fs::write(p, pem).unwrap();
        }
        let env_b = |k: &str| match k {
            "PGSSLROOTCERT" => Some(b.clone().into_os_string()),
            "HOME" => Some(dir.clone().into_os_string()),
            _ => None,
        };
        let env_home = |k: &str| (k == "HOME").then(|| dir.clone().into_os_string());
        let no_env = |_: &str| None;
        let parse = |url: &str, env: &dyn Fn(&str) -> Option<std::ffi::OsString>| {
            PgUrl::parse_with_env(url, env)
        };
        let url_a = format!(
            "postgres://h/db?sslmode=require&sslrootcert={}",
            a.display()
        );
        assert_eq!(
            parse(&url_a, &env_b).unwrap().root_cert(),
            Some(a.as_path())
        );
        let u = parse("postgres://h/db?sslmode=verify-ca", &env_b).unwrap();
        assert_eq!(u.root_cert(), Some(b.as_path()));
        assert_eq!(u.effective_ssl_mode(), SslMode::VerifyFull);
        let u = parse("postgres://h/db?sslmode=require", &env_home).unwrap();
        assert_eq!(u.root_cert(), Some(home.as_path()));
        assert_eq!(u.effective_ssl_mode(), SslMode::VerifyFull);
        let u = parse("postgres://h/db?sslmode=require", &no_env).unwrap();
        assert_eq!(u.effective_ssl_mode(), SslMode::Require);
        // prefer (the default) checks no certificate, on either side.
        let u = parse("postgres://h/db", &env_home).unwrap();
        assert_eq!((u.ssl_mode(), u.root_cert()), (SslMode::Prefer, None));
        // disable ignores (and does not check) the CA file.
        let u = parse(
            "postgres://h/db?sslmode=disable&sslrootcert=/nonexistent",
            &no_env,
        )
        .unwrap();
        assert_eq!(u.root_cert(), None);
        assert!(matches!(
            parse("postgres://h/db?sslmode=verify-full", &no_env),
            Err(UrlError::NoRootCert("verify-full"))
        ));
        let err = parse(
            "postgres://h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the database URL's CA file (sslrootcert) /nonexistent/ca.pem does not exist; give \
             sslrootcert=/path/to/ca.pem, the PEM file of the CA that signed the server's certificate"
        );
        std::fs::write(&b, "junk").unwrap();
        let err = parse("postgres://h/db?sslmode=require", &env_b).unwrap_err();
        assert!(err.to_string().contains("(PGSSLROOTCERT)"), "{err}");
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_driver_gets_the_same_mode_as_the_tools_and_no_tls_on_a_unix_socket() {
        use std::str::FromStr;
        // (driver mode, PGSSLMODE for the tools); PgSslMode has no PartialEq: its Debug name.
        let both = |url: &str| {
            let u = PgUrl::parse_with_env(url, &|_| None).unwrap();
            let opts = u.apply_tls(PgConnectOptions::from_str(url).unwrap());
            let tools = u
                .child_env()
                .into_iter()
                .rev()
                .find(|(k, _)| *k == "PGSSLMODE");
            (
                format!("{:?}", opts.get_ssl_mode()),
                tools.and_then(|(_, v)| v).unwrap(),
            )
        };
        let cases = [
            ("", "Prefer", "prefer"),
            ("?sslmode=disable", "Disable", "disable"),
            ("?sslmode=require", "Require", "require"),
            // Over a Unix socket libpq uses no TLS whatever the mode; neither does the driver.
            (
                "?host=%2Fvar%2Frun%2Fpostgresql&sslmode=require",
                "Disable",
                "require",
            ),
        ];
        for (query, driver, tools) in cases {
            let got = both(&format!("postgres://u@h/db{query}"));
            assert_eq!((got.0.as_str(), got.1.as_str()), (driver, tools), "{query}");
        }
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

    /// Why the URL is split here and not by `url::Url` (see the module documentation): each
    /// row is a form libpq reads, what `url::Url` makes of it, and what [`PgUrl`] makes of it.
    #[test]
    fn the_url_crate_refuses_or_changes_forms_libpq_reads() {
        use url::{ParseError, Url};
        // A user with an empty host and the socket folder in ?host=: refused by url.
        let form = "postgres://u@/db?host=%2Fvar%2Frun%2Fpostgresql";
        assert_eq!(Url::parse(form), Err(ParseError::EmptyHost));
        let u = PgUrl::parse(form).unwrap();
        assert_eq!(
            (u.user(), u.host()),
            (Some("u"), Some("/var/run/postgresql"))
        );
        // Several hosts with ports: url sees a bad port; dualkey says what is unsupported.
        let form = "postgres://host1:5432,host2:5433/db";
        assert_eq!(Url::parse(form), Err(ParseError::InvalidPort));
        assert!(matches!(PgUrl::parse(form), Err(UrlError::MultipleHosts)));
        // A raw tab or newline is dropped by url: another database, silently.
        for form in ["postgres://u@h/d\tb", "postgres://u@h/d\nb"] {
            assert_eq!(Url::parse(form).unwrap().path(), "/db");
            assert!(
                matches!(
                    PgUrl::parse(form),
                    Err(UrlError::ControlCharacter("database name"))
                ),
                "{form:?}"
            );
        }
        // '+' in the query: url's query_pairs reads form encoding (a space); libpq keeps '+'.
        let form = "postgres://u@h/db?application_name=a+b";
        let parsed = Url::parse(form).unwrap();
        let (_, v) = parsed.query_pairs().next().unwrap();
        assert_eq!(v, "a b");
        let args = PgUrl::parse(form).unwrap().connection_args();
        assert!(
            args.last().unwrap().ends_with("application_name='a+b'"),
            "{args:?}"
        );
        // A malformed escape passes url; a non-UTF-8 one becomes U+FFFD. libpq refuses both.
        assert_eq!(Url::parse("postgres://u@h/d%ZZb").unwrap().path(), "/d%ZZb");
        let form = "postgres://u@h/db?sslrootcert=%ff";
        let parsed = Url::parse(form).unwrap();
        let (_, v) = parsed.query_pairs().next().unwrap();
        assert_eq!(v, "\u{FFFD}");
        assert!(matches!(
            PgUrl::parse(form),
            Err(UrlError::PercentEncoding(_))
        ));
        // Port 0, which no server listens on.
        assert_eq!(Url::parse("postgres://h:0/db").unwrap().port(), Some(0));
        // What url splits off still needs decoding: the password and a socket folder given as
        // the host stay percent-encoded.
        let form = "postgres://u:p%40ss@%2Fvar%2Frun%2Fpostgresql/db";
        let u = Url::parse(form).unwrap();
        assert_eq!(
            (u.password(), u.host_str()),
            (Some("p%40ss"), Some("%2Fvar%2Frun%2Fpostgresql"))
        );
        let p = PgUrl::parse(form).unwrap();
        assert_eq!(
            (pw(&p).as_deref(), p.host()),
            (Some("p@ss"), Some("/var/run/postgresql"))
        );
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
