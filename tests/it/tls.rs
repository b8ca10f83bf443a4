//! TLS to the target database, against the local server (Debian's PostgreSQL runs with `ssl = on`
//! and the self-signed "snakeoil" certificate for `localhost`; `.ci/run` makes sure of it).
//!
//! What is checked, per `sslmode`: dualkey's own connections (sqlx: status, the store) and the
//! tools (`pg_dump` for a backup, `psql` for a restore). The tools' traffic goes through a small
//! TCP relay that notes, for each connection, whether the client asked for TLS (`SSLRequest`) and
//! whether the server agreed (`S`); the bytes themselves pass untouched between the real tools and
//! the real server. dualkey's own sessions are also checked from the server side, in `pg_stat_ssl`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dualkey::dbops::backup::{dump, restore, BackupKind, PgUrl};
use sqlx::{ConnectOptions, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backup_common::{fingerprint, request, seed};
use crate::support::{pg_base, TestDb};

/// The CA that signed the test server's certificate: `DUALKEY_TEST_PG_CA`, else the file the
/// server itself names in `ssl_cert_file` (readable here when the server is local), else Debian's
/// snakeoil certificate.
async fn ca_file() -> PathBuf {
    if let Ok(p) = std::env::var("DUALKEY_TEST_PG_CA") {
        return PathBuf::from(p);
    }
    let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
        .await
        .unwrap();
    let (ssl, file): (String, String) =
        sqlx::query_as("SELECT current_setting('ssl'), current_setting('ssl_cert_file')")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(
        ssl, "on",
        "the test server must run with ssl = on (.ci/run turns it on)"
    );
    let file = PathBuf::from(file);
    if file.is_absolute() && file.is_file() {
        file
    } else {
        PathBuf::from("/etc/ssl/certs/ssl-cert-snakeoil.pem")
    }
}

/// `url` with `params` appended as its query string.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// What the relay saw on one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The client asked for TLS and the server said yes.
    Tls,
    /// The client asked for TLS and the server said no.
    TlsRefused,
    /// The client started in plain text.
    Plain,
}

/// A TCP relay in front of the test server that records [`Seen`] for each connection.
struct Relay {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Relay {
    async fn start() -> Relay {
        let base = PgUrl::parse(&format!("{}/postgres", pg_base())).unwrap();
        let upstream = format!(
            "{}:{}",
            base.host().unwrap_or("127.0.0.1"),
            base.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    let _ = relay_one(client, &upstream, &record).await;
                });
            }
        });
        Relay { port, seen }
    }

    /// `url` (a URL of the test server) pointed at the relay instead.
    fn url(&self, url: &str) -> String {
        let base = pg_base();
        assert!(url.starts_with(&base), "{url}");
        let at = base.rfind('@').map_or("postgres://".len(), |i| i + 1);
        format!(
            "{}127.0.0.1:{}{}",
            &base[..at],
            self.port,
            &url[base.len()..]
        )
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

async fn relay_one(
    mut client: tokio::net::TcpStream,
    upstream: &str,
    record: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut server = tokio::net::TcpStream::connect(upstream).await?;
    loop {
        let mut head = [0u8; 8];
        client.read_exact(&mut head).await?;
        server.write_all(&head).await?;
        if head == GSSENC_REQUEST || head == SSL_REQUEST {
            let mut answer = [0u8; 1];
            server.read_exact(&mut answer).await?;
            client.write_all(&answer).await?;
            if head == GSSENC_REQUEST {
                // GSS encryption refused: the client goes on with SSLRequest or plain text.
                continue;
            }
            record.lock().unwrap().push(if answer[0] == b'S' {
                Seen::Tls
            } else {
                Seen::TlsRefused
            });
        } else {
            record.lock().unwrap().push(Seen::Plain);
        }
        break;
    }
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// Whether dualkey's own driver settings for `url` give an encrypted session, asked of the server.
async fn session_is_encrypted(url: &str) -> Result<bool, String> {
    let opts = dualkey::dbops::prisma::connect_options(url).map_err(|e| e.to_string())?;
    let mut c = opts.connect().await.map_err(|e| e.to_string())?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ssl)
}

fn migrations_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/taskflow/prisma/migrations"
    ))
}

#[tokio::test]
async fn require_encrypts_status_backup_and_restore() {
    let db = TestDb::create("tls_require").await;
    seed(&db.url, 50).await;
    let before = fingerprint(&db.url, "items").await.unwrap();
    let relay = Relay::start().await;
    let url = relay.url(&with_params(&db.url, "sslmode=require"));

    // dualkey's own connection (sqlx): the migration status.
    let st = dualkey::dbops::prisma::status(&url, migrations_dir())
        .await
        .expect("status over TLS");
    assert_eq!(st.applied.len(), 0);
    let seen = relay.take();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == Seen::Tls),
        "{seen:?}"
    );
    assert!(
        session_is_encrypted(&with_params(&db.url, "sslmode=require"))
            .await
            .unwrap()
    );

    // The tools: pg_dump for the backup, psql for the restore.
    let dir = tempfile::tempdir().unwrap();
    let out = dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .expect("backup over TLS");
    let seen = relay.take();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == Seen::Tls),
        "{seen:?}"
    );
    crate::backup_common::exec(
        &db.url,
        "DELETE FROM notes; DELETE FROM items WHERE id > 10",
    )
    .await;
    restore(&url, &out.path, None)
        .await
        .expect("restore over TLS");
    let seen = relay.take();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == Seen::Tls),
        "{seen:?}"
    );
    assert_eq!(fingerprint(&db.url, "items").await.unwrap(), before);
}

#[tokio::test]
async fn disable_stays_in_plain_text_and_prefer_takes_tls() {
    let db = TestDb::create("tls_disable").await;
    seed(&db.url, 5).await;
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();

    let url = relay.url(&with_params(&db.url, "sslmode=disable"));
    dualkey::dbops::prisma::status(&url, migrations_dir())
        .await
        .unwrap();
    dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap();
    let seen = relay.take();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == Seen::Plain),
        "{seen:?}"
    );
    assert!(
        !session_is_encrypted(&with_params(&db.url, "sslmode=disable"))
            .await
            .unwrap()
    );

    // prefer (also libpq's default) takes TLS when the server offers it, in both.
    for url in [
        relay.url(&with_params(&db.url, "sslmode=prefer")),
        relay.url(&db.url),
    ] {
        dualkey::dbops::prisma::status(&url, migrations_dir())
            .await
            .unwrap();
        dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
            .await
            .unwrap();
        let seen = relay.take();
        assert!(
            !seen.is_empty() && seen.iter().all(|s| *s == Seen::Tls),
            "{seen:?}"
        );
    }
}

/// The name the test server's certificate is issued for (the snakeoil certificate's is the
/// machine's name, `localhost` in a container), if it resolves here.
async fn cert_name(ca: &Path) -> Option<String> {
    let name = cert_dns_name(ca)?;
    let mut addrs = tokio::net::lookup_host(format!("{name}:5432")).await.ok()?;
    addrs.next()?;
    Some(name)
}

#[tokio::test]
async fn verify_ca_and_verify_full_check_the_certificate_and_its_name() {
    let db = TestDb::create("tls_verify").await;
    seed(&db.url, 5).await;
    let ca = ca_file().await;
    let dir = tempfile::tempdir().unwrap();

    // By the certificate's name, both modes pass the check, for sqlx and for the tools.
    match cert_name(&ca).await {
        Some(name) => {
            for mode in ["verify-ca", "verify-full"] {
                let url = with_params(
                    &db.url.replacen("@127.0.0.1", &format!("@{name}"), 1),
                    &format!("sslmode={mode}&sslrootcert={}", ca.display()),
                );
                assert!(session_is_encrypted(&url).await.unwrap(), "{mode}");
                dualkey::dbops::prisma::status(&url, migrations_dir())
                    .await
                    .unwrap_or_else(|e| panic!("status with {mode}: {e}"));
                dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
                    .await
                    .unwrap_or_else(|e| panic!("backup with {mode}: {e}"));
            }
        }
        None => eprintln!(
            "skipped the by-name half: no resolvable DNS name in {}",
            ca.display()
        ),
    }

    // By 127.0.0.1 the certificate names another host: both refuse, and say so. verify-ca checks
    // the name as well (see `backup::url`).
    for mode in ["verify-ca", "verify-full"] {
        let url = with_params(
            &db.url,
            &format!("sslmode={mode}&sslrootcert={}", ca.display()),
        );
        let err = session_is_encrypted(&url).await.unwrap_err();
        assert!(err.contains("not valid for name \"127.0.0.1\""), "{err}");
        let err = dualkey::dbops::prisma::status(&url, migrations_dir())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("could not connect") && err.contains("not valid for name"),
            "{err}"
        );
        let err = dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not match host name \"127.0.0.1\""),
            "{err}"
        );
    }

    // A certificate signed by another CA is refused, by name too.
    let other = dir.path().join("other-ca.pem");
    write_other_ca(&other);
    let host = cert_name(&ca).await.unwrap_or_else(|| "127.0.0.1".into());
    let url = with_params(
        &db.url.replacen("@127.0.0.1", &format!("@{host}"), 1),
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    );
    let err = session_is_encrypted(&url).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let err = dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate verify failed"), "{err}");
}

/// The first DNS name of a PEM certificate, read with `openssl x509`.
fn cert_dns_name(pem: &Path) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(pem)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split([',', '\n'])
        .filter_map(|p| p.trim().strip_prefix("DNS:"))
        .map(str::to_string)
        .next()
}

#[tokio::test]
async fn a_missing_or_bad_sslrootcert_and_an_unknown_sslmode_are_clear_errors() {
    let db = TestDb::create("tls_errors").await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let url = with_params(
        &db.url,
        &format!("sslmode=verify-full&sslrootcert={}", missing.display()),
    );
    let err = PgUrl::parse(&url).unwrap_err().to_string();
    assert!(
        err.contains("sslrootcert") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
    let status = dualkey::dbops::prisma::status(&url, migrations_dir())
        .await
        .unwrap_err()
        .to_string();
    assert!(status.contains("does not exist"), "{status}");
    let backup = dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(backup.contains("does not exist"), "{backup}");

    // A file that holds no certificate.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = PgUrl::parse(&with_params(
        &db.url,
        &format!("sslmode=verify-ca&sslrootcert={}", junk.display()),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("no PEM certificate"), "{err}");

    // verify-* without any CA: libpq would refuse, so dualkey refuses for both sides alike.
    if std::env::var_os("PGSSLROOTCERT").is_none()
        && !std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".postgresql/root.crt").exists())
            .unwrap_or(false)
    {
        let err = PgUrl::parse(&with_params(&db.url, "sslmode=verify-full"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslrootcert"), "{err}");
    }

    let err = PgUrl::parse(&with_params(&db.url, "sslmode=requir"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("verify-full") && !err.contains("postgres://"),
        "{err}"
    );
    let err =
        dualkey::dbops::prisma::status(&with_params(&db.url, "sslmode=requir"), migrations_dir())
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("sslmode"), "{err}");
}

#[tokio::test]
async fn a_postgres_store_takes_sslmode() {
    let db = TestDb::create("tls_store").await;
    let store = dualkey::store::open(&with_params(&db.url, "sslmode=require"))
        .await
        .expect("store over TLS");
    drop(store);
    let ca = ca_file().await;
    let err = dualkey::store::open(&with_params(
        &db.url,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ))
    .await
    .err()
    .expect("verify-full against 127.0.0.1 must fail")
    .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// Writes a new self-signed CA (which signed nothing on the test server) to `path`.
fn write_other_ca(path: &Path) {
    let key = path.with_extension("key");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=dualkey-test-other-ca", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(path)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn require_over_a_unix_socket_connects_without_tls_like_libpq() {
    // The test server's socket folder: DUALKEY_TEST_PG_SOCKET (scripts/test sets it for a server
    // of its own), else Debian's.
    let socket_dir =
        std::env::var("DUALKEY_TEST_PG_SOCKET").unwrap_or_else(|_| "/var/run/postgresql".into());
    let port = PgUrl::parse(&format!("{}/postgres", pg_base()))
        .unwrap()
        .port()
        .unwrap_or(5432);
    if !Path::new(&socket_dir)
        .join(format!(".s.PGSQL.{port}"))
        .exists()
    {
        eprintln!("skipped: no PostgreSQL socket for port {port} in {socket_dir}");
        return;
    }
    let db = TestDb::create("tls_socket").await;
    seed(&db.url, 5).await;
    let url = format!(
        "postgres://postgres@localhost:{port}/{}?host={}&sslmode=require",
        db.name,
        socket_dir.replace('/', "%2F")
    );
    assert!(!session_is_encrypted(&url).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    dump(&request(&url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .expect("backup over the socket");
}
