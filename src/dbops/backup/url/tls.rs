//! TLS settings of a URL: the `sslmode` values dualkey supports and the CA file, resolved once
//! so that dualkey's driver and the PostgreSQL tools make the same choice.

use std::path::PathBuf;

use super::UrlError;

/// The `sslmode` values dualkey supports, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, no certificate check (libpq's default).
    Prefer,
    /// TLS or fail; the certificate is checked only when a CA file is given.
    Require,
    /// TLS, and the certificate must chain to the CA file.
    VerifyCa,
    /// TLS, the certificate must chain to the CA file and name the host.
    VerifyFull,
}

impl SslMode {
    pub(super) fn parse(v: &str) -> Result<SslMode, UrlError> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err(UrlError::SslModeAllow),
            _ => return Err(UrlError::SslMode),
        })
    }

    /// libpq's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The CA file for `mode`: the URL's `sslrootcert`, else `PGSSLROOTCERT`, else libpq's default
/// `~/.postgresql/root.crt` when it exists; checked to exist and hold a PEM certificate.
pub(super) fn resolve_root_cert(
    mode: SslMode,
    from_url: Option<String>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Option<PathBuf>, UrlError> {
    // libpq would read a CA file under prefer too, and fall back to plain text when the check
    // fails; sqlx would not check. Neither checks here: the tools get [`NO_ROOT_CERT`].
    if matches!(mode, SslMode::Disable | SslMode::Prefer) {
        return Ok(None);
    }
    let named = match from_url {
        Some(p) => Some(("sslrootcert", PathBuf::from(p))),
        None => env("PGSSLROOTCERT")
            .filter(|v| !v.is_empty())
            .map(|v| ("PGSSLROOTCERT", PathBuf::from(v))),
    };
    let found = named.or_else(|| {
        let default = PathBuf::from(env("HOME")?).join(".postgresql/root.crt");
        default
            .exists()
            .then_some(("~/.postgresql/root.crt", default))
    });
    let Some((source_name, path)) = found else {
        return match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => Err(UrlError::NoRootCert(mode.as_str())),
            _ => Ok(None),
        };
    };
    let problem = |problem: String| UrlError::RootCert {
        source_name,
        path: path.display().to_string(),
        problem,
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(problem("does not exist".into()))
        }
        Err(e) => return Err(problem(format!("cannot be read ({e})"))),
    };
    if !text
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(problem(
            "holds no PEM certificate (no -----BEGIN CERTIFICATE----- line)".into(),
        ));
    }
    // An absolute path, so that a child started in another directory reads the same file.
    Ok(Some(std::path::absolute(&path).unwrap_or(path)))
}
