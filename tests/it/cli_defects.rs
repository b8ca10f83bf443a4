//! The real binary against the smaller defects of issue 11, item 7: shell input and exit
//! status, the terminal greeting, closed pipes, the SQLite store lock, the HTTP server's
//! limits and the audit chain head recorded elsewhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bin_setup as setup, BinSetup as Setup, BIN};

fn shell_with(
    config: &Path,
    who: &str,
    input: &[u8],
    env: &[(&str, &str)],
) -> (String, String, Option<i32>) {
    crate::support::shell_session(config, None, who, input, env)
}

fn shell(s: &Setup, who: &str, input: &[u8]) -> (String, String, Option<i32>) {
    shell_with(&s.config, who, input, &[])
}

/// A child process killed when the test ends, also when an assertion fails first.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn request_id(out: &str) -> String {
    let pos = out.find("[approve:").expect("an approval card");
    out[pos + 9..pos + 19].to_string()
}

#[test]
fn an_invalid_utf8_line_is_refused_and_the_lines_after_it_still_run() {
    let s = setup(|t| t);
    let (out, err, code) = shell(&s, "alice", b"/db approvals\n\xff\xfe oops\n/db help\n");
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("line 2 is not valid UTF-8"),
        "the bad line is named: {out}"
    );
    assert!(
        out.contains("/db help [COMMAND]"),
        "the line after the bad one runs: {out}"
    );
    assert!(
        !out.contains("ctrl-d"),
        "no greeting when stdin is not a terminal: {out}"
    );
}

#[test]
fn the_shell_exits_non_zero_when_an_operation_its_input_started_failed() {
    let s = setup(|t| t.replace("echo stop >> ", "exit 3; echo stop >> "));
    let (out, err, code) = shell(&s, "alice", b"/db app stop\n");
    assert_eq!(code, Some(0), "asking is not failing: {out}\n{err}");
    let id = request_id(&out);
    let (out, err, code) = shell(&s, "bob", format!("click approve:{id}\n").as_bytes());
    assert!(out.contains("failed"), "{out}");
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("operation") && err.contains("failed"),
        "stderr says why the exit status is 1: {err}"
    );
    // A later session that starts nothing does not inherit the old failure.
    let (out, err, code) = shell(&s, "bob", b"/db approvals\n");
    assert_eq!(code, Some(0), "{out}\n{err}");
}

/// Opens a pseudo-terminal: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors we then own; null name/termios/winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn on_a_terminal_the_shell_greets_with_who_you_are_and_how_to_start() {
    let s = setup(|t| t);
    let (master, slave) = openpty();
    let child = Command::new(BIN)
        .args(["shell", "--as", "alice", "--config"])
        .arg(&s.config)
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut m = std::fs::File::from(master);
    // A line, then ctrl-d at the start of a line: end of input on a terminal.
    m.write_all(b"/db approvals\n\x04").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for needle in ["alice", "/db help", "as NAME", "click", "ctrl-d"] {
        assert!(
            stdout.contains(needle),
            "greeting lacks `{needle}`: {stdout}"
        );
    }
    assert!(stdout.contains("No open requests."), "{stdout}");
}

/// A stdout/stderr whose reader is already gone: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two new descriptors that we own from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors; the read end is dropped (closed) at once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

fn quiet_exit(what: &str, out: &std::process::Output, allowed: &[i32]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{what}: a closed pipe must end quietly: {err}"
    );
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| allowed.contains(&c)),
        "{what}: exit {:?} (signal {:?}), stderr: {err}",
        code,
        std::os::unix::process::ExitStatusExt::signal(&out.status)
    );
}

#[tokio::test]
async fn every_printing_command_ends_quietly_when_its_reader_closes_the_pipe() {
    let db = crate::support::TestDb::create("clipipe").await;
    // test_config already points every environment at the example project's migrations.
    let s = setup(|t| {
        t.replacen(
            "database_url_env = \"DK_TEST_UNUSED_URL\"",
            "database_url_env = \"DK_PIPE_URL\"",
            1,
        )
    });
    let (_, err, code) = shell(&s, "alice", b"/db help\n/db approvals\n");
    assert_eq!(code, Some(0), "{err}");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&s.config)
            .env("DK_PIPE_URL", &db.url)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    for args in [
        &["status", "--format", "json"][..],
        &["status", "--format", "text"],
        &["status", "--format", "prisma"],
        &["backups"],
        &["audit", "export"],
        &["audit", "verify"],
        &["config", "check"],
    ] {
        quiet_exit(&format!("{args:?}"), &run(args), &[0, 141]);
    }
    let shell = Command::new(BIN)
        .args(["shell", "--as", "alice", "--config"])
        .arg(&s.config)
        .stdin(Stdio::piped())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut shell = shell;
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(b"/db help\n/db approvals\n")
        .unwrap();
    quiet_exit("shell", &shell.wait_with_output().unwrap(), &[0, 141]);
    // Both streams closed (`2>&1 | head -1`) and an error to report: no panic either.
    let bad = setup(|t| t.replace("ttl = \"15m\"", "ttl = \"soon\""));
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&bad.config)
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", out.status);
}

/// Starts `dualkey shell` on `config` and returns once it has answered a command, so it holds
/// the store from then on; its stdin stays open until the caller drops it.
fn hold_store(config: &Path) -> (Reaped, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(BIN)
        .args(["shell", "--as", "alice", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"/db approvals\n")
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("No open requests."), "{line}");
    (Reaped(child), stdout)
}

#[test]
fn a_symlinked_path_or_a_deleted_lock_file_does_not_let_a_second_process_in() {
    let s = setup(|t| t);
    let text = std::fs::read_to_string(&s.config).unwrap();
    let dir = s.dir.path();
    // The same store reached through a symlinked folder and through a symlinked file.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::os::unix::fs::symlink(dir.join("data"), dir.join("alias")).unwrap();
    std::os::unix::fs::symlink(dir.join("data/dualkey.db"), dir.join("link.db")).unwrap();
    let via_dir = dir.join("via_dir.toml");
    std::fs::write(
        &via_dir,
        text.replace("/data/dualkey.db", "/alias/dualkey.db"),
    )
    .unwrap();
    let via_file = dir.join("via_file.toml");
    std::fs::write(&via_file, text.replace("/data/dualkey.db", "/link.db")).unwrap();

    let (mut first, _stdout) = hold_store(&s.config);
    for (what, config) in [
        ("symlinked folder", &via_dir),
        ("symlinked file", &via_file),
    ] {
        let (out, err, code) = shell_with(config, "bob", b"/db status\n", &[]);
        assert_eq!(code, Some(1), "{what}: {out}\n{err}");
        assert!(err.contains("another dualkey process"), "{what}: {err}");
    }
    // Deleting whatever lock file there is next to the store must not open the door either.
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "lock") {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let (out, err, code) = shell(&s, "bob", b"/db status\n");
    assert_eq!(code, Some(1), "deleted lock file: {out}\n{err}");
    assert!(err.contains("another dualkey process"), "{err}");

    drop(first.0.stdin.take());
    assert!(first.0.wait().unwrap().success());
    // Once the first process is gone, the store opens through either path.
    let (out, err, code) = shell_with(&via_dir, "bob", b"/db approvals\n", &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
}

fn audit_export(s: &Setup) -> Vec<dualkey::core::audit::AuditRecord> {
    let out = Command::new(BIN)
        .args(["audit", "export", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(s: &Setup, head: Option<&str>) -> (String, String, Option<i32>) {
    let mut c = Command::new(BIN);
    c.args(["audit", "verify"]);
    if let Some(h) = head {
        c.args(["--head", h]);
    }
    let out = c.arg("--config").arg(&s.config).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.code(),
    )
}

#[tokio::test]
async fn audit_verify_with_a_head_recorded_elsewhere_catches_a_rewritten_chain() {
    let s = setup(|t| t);
    let (_, err, code) = shell(&s, "alice", b"/db help\n/db approvals\n/db status\n");
    assert_eq!(code, Some(0), "{err}");
    let before = audit_export(&s);
    assert!(before.len() >= 3);
    let old = before.last().unwrap().clone();
    let old_head = format!("{}:{}", old.seq, old.hash);
    let (out, err, code) = verify(&s, Some(&old_head));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("intact"), "{out}");

    // Someone with write access rewrites event #2 and recomputes every hash after it.
    let url = format!("sqlite://{}/data/dualkey.db", s.dir.path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut prev = before[0].hash.clone();
    for r in &before[1..] {
        let operator = if r.seq == 2 {
            Some("mallory")
        } else {
            r.operator.as_deref()
        };
        let hash = dualkey::core::audit::chain_hash(
            &prev,
            r.seq,
            r.at_ms,
            operator,
            r.account.as_deref(),
            r.env.as_deref(),
            &r.action,
            &r.details,
        );
        sqlx::query(
            "UPDATE audit_events SET operator = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
        )
        .bind(operator)
        .bind(&prev)
        .bind(&hash)
        .bind(r.seq)
        .execute(&pool)
        .await
        .unwrap();
        prev = hash;
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let (out, _, code) = verify(&s, None);
    assert_eq!(code, Some(0), "the rewrite fools a plain verify: {out}");
    let (out, err, code) = verify(&s, Some(&old_head));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("BROKEN") && out.contains(&format!("#{}", old.seq)) && out.contains(&old.hash),
        "the mismatch is named: {out}"
    );
    let new_head = format!("{}:{}", old.seq, prev);
    let (out, err, code) = verify(&s, Some(&new_head));
    assert_eq!(code, Some(0), "{out}{err}");
    // An older head that the rewrite did not touch still checks out.
    let (_, _, code) = verify(&s, Some(&format!("1:{}", before[0].hash)));
    assert_eq!(code, Some(0));
    // A head past the end of the chain: events were removed.
    let (out, _, code) = verify(&s, Some(&format!("{}:{}", old.seq + 5, old.hash)));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("#{}", old.seq + 5)), "{out}");
    for bad in ["abc", "3", "x:ab", "0:ab", &format!("2:{}", "z".repeat(64))] {
        let (_, err, code) = verify(&s, Some(bad));
        assert_eq!(code, Some(1), "{bad}: {err}");
        assert!(err.contains("SEQ:HASH"), "{bad}: {err}");
    }
}

#[test]
fn every_bogus_audit_head_exits_1_with_a_message_naming_what_is_wrong() {
    let s = setup(|t| t);
    let (_, err, code) = shell(&s, "alice", b"/db help\n/db approvals\n");
    assert_eq!(code, Some(0), "{err}");
    let events = audit_export(&s);
    let last = events.last().unwrap();
    let good = "ab".repeat(32);
    let unknown = format!("{}:{}", last.seq + 1, last.hash);
    let wrong = format!("{}:{good}", last.seq);
    let huge = format!("9223372036854775807:{good}");
    let overflow = format!("99999999999999999999:{good}");
    let long = format!("1:{good}00");
    let short = format!("1:{}", &good[..63]);
    let non_hex = format!("1:{}g", &good[..63]);
    let non_ascii = format!("1:{}", "é".repeat(32));
    let spaced = format!("1 {good}");
    let negative = format!("-1:{good}");
    let giant = format!("1:{}", "a".repeat(100_000));
    let cases: [(&str, &str); 15] = [
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "no `:`"),
        (&spaced, "no `:`"),
        (":", "SEQ must be a whole number"),
        (&overflow, "SEQ must be a whole number"),
        ("0:ab", "SEQ starts at 1"),
        (&negative, "SEQ starts at 1"),
        (&long, "not 66"),
        (&short, "not 63"),
        (&non_hex, "other characters"),
        (&non_ascii, "other characters"),
        (&giant, "not 100000"),
        (&unknown, "no such event"),
        (&huge, "no such event"),
    ];
    for (head, says) in cases {
        let (out, err, code) = verify(&s, Some(head));
        let shown: String = head.chars().take(30).collect();
        assert_eq!(code, Some(1), "`{shown}`: {out}{err}");
        assert!(
            out.contains(says) || err.contains(says),
            "`{shown}` must say `{says}`: {out}{err}"
        );
        assert!(!out.contains("intact"), "`{shown}`: {out}");
        assert!(!err.contains("panicked"), "`{shown}`: {err}");
    }
    let (out, _, code) = verify(&s, Some(&wrong));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("BROKEN") && out.contains(&good), "{out}");
    // Its reader gone (`| grep -q`, a closed pipe): still exit 1, the reason on stderr.
    for head in [wrong.as_str(), "0:ab"] {
        let mut child = Command::new(BIN)
            .args(["audit", "verify", "--head", head, "--config"])
            .arg(&s.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let done = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(1), "{head}: {err}");
        assert!(!err.is_empty(), "{head}: the reason is on stderr");
    }
    // The right head still checks out.
    let (out, err, code) = verify(&s, Some(&format!("{}:{}", last.seq, last.hash)));
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn the_audit_head_is_logged_at_start_and_every_100_events() {
    let s = setup(|t| t);
    let input = "/db help\n".repeat(100);
    let env = [("RUST_LOG", "info"), ("NO_COLOR", "1")];
    let (_, err, code) = shell_with(&s.config, "alice", input.as_bytes(), &env);
    assert_eq!(code, Some(0), "{err}");
    let genesis = dualkey::core::audit::GENESIS_HASH;
    assert!(
        err.contains(&format!("audit head seq=0 hash={genesis}")),
        "the head is logged at start: {err}"
    );
    let events = audit_export(&s);
    let hundredth = events.iter().find(|r| r.seq == 100).expect("100 events");
    assert!(
        err.contains(&format!("audit head seq=100 hash={}", hundredth.hash)),
        "the head is logged at event #100: {err}"
    );
    let (_, err, _) = shell_with(&s.config, "alice", b"", &env);
    let last = events.last().unwrap();
    assert!(
        err.contains(&format!("audit head seq={} hash={}", last.seq, last.hash)),
        "{err}"
    );
}

#[test]
fn the_http_server_closes_half_open_connections_and_limits_how_many_it_serves() {
    let s = setup(|t| t + "\n[server]\nmax_connections = 4\nheader_read_timeout = \"1s\"\n");
    let mut child = Reaped(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&s.config)
            .env("DUALKEY_SERVER_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited before listening: {seen}"
        );
        seen.push_str(&line);
        if let Some(pos) = line.find("listen=") {
            break line[pos + 7..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    // Keep reading the log so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    for needle in ["no chat adapter", "dualkey shell --as", "/healthz"] {
        assert!(seen.contains(needle), "serve must say `{needle}`: {seen}");
    }

    let t0 = Instant::now();
    // Three connections that never finish their request line, one that sends nothing: the
    // limit (4) is reached.
    let mut slow = Vec::new();
    for i in 0..4 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        if i < 3 {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: sl").unwrap();
        }
        slow.push(c);
    }
    // A fifth client takes the place of the connection that has waited longest without a
    // request (the first slow one): it is answered at once, not after the header timeout.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    let waited = t0.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited < Duration::from_millis(900),
        "beyond max_connections a new client is served at once, answered after {waited:?}"
    );
    for (i, mut c) in slow.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("slow connection {i} was not closed: {e}"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
    // A graceful stop does not wait forever on a half-sent request either.
    let mut last = std::net::TcpStream::connect(&addr).unwrap();
    last.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let mut probe = std::net::TcpStream::connect(&addr).unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    probe.read_to_string(&mut String::new()).unwrap();
    let stopping = Instant::now();
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        stopping.elapsed()
    );
    drop(last);
}
