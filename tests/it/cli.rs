//! The real binary: the shell adapter end to end, SIGKILL mid-operation then restart,
//! `dualkey audit verify|export` and `dualkey config check`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{bin_setup as setup, BinSetup as Setup, BIN};

fn marker_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn run_shell(s: &Setup, who: &str, input: &str) -> (String, String, Option<i32>) {
    crate::support::shell_session(&s.config, Some(s.dir.path()), who, input.as_bytes(), &[])
}

#[tokio::test]
async fn the_shell_walks_through_a_two_person_approval() {
    let s = setup(|t| t);
    let mut child = tokio::process::Command::new(BIN)
        .args(["--config"])
        .arg(&s.config)
        .args(["shell", "--as", "alice"])
        .current_dir(s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin
        .write_all(b"/db app stop\nclick approve:r000000000\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    let id = loop {
        assert!(Instant::now() < deadline, "no approval card in: {seen}");
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(pos) = line.find("[approve:") {
            break line[pos + 9..pos + 19].to_string();
        }
    };
    // Alice cannot approve her own request; Bob can.
    stdin
        .write_all(format!("click approve:{id}\nas bob\nclick approve:{id}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{seen}");
    assert!(seen.contains("asked for this yourself"), "{seen}");
    assert!(seen.contains(&format!("Approved {id}")), "{seen}");
    assert!(
        seen.contains("succeeded"),
        "the card update must show the outcome: {seen}"
    );
    assert_eq!(marker_lines(&s.marker), vec!["stop"]);
}

#[tokio::test]
async fn a_killed_operation_is_reported_interrupted_and_never_rerun() {
    let s = setup(|t| {
        t.replace("echo start >> ", "sleep 0; echo start >> ")
            .replacen("'\"]\napp_status", "'; sleep 60\"]\napp_status", 1)
    });
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains("sleep 60"), "test config edit failed: {text}");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["shell", "--as", "alice", "--config"])
        .arg(&s.config)
        .current_dir(s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"/db app start\n").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while marker_lines(&s.marker).is_empty() {
        assert!(Instant::now() < deadline, "the operation never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL the whole process group: dualkey and the app command it started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    drop(stdin);
    let (out, err, code) = run_shell(&s, "alice", "/db status\n");
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("was interrupted in step 1"), "{out}");
    assert!(out.contains("will not be resumed"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        marker_lines(&s.marker),
        vec!["start"],
        "an interrupted operation must not run again"
    );
    let (out, _, _) = run_shell(&s, "alice", "/db audit 20\n");
    assert!(out.contains("operation.interrupted"), "{out}");
}

#[tokio::test]
async fn audit_verify_and_export_from_the_command_line() {
    let s = setup(|t| t);
    let (out, err, code) = run_shell(&s, "alice", "/db status\n/db help\n/db approvals\n");
    assert_eq!(code, Some(0), "{out}{err}");
    let verify = |before: bool| {
        let mut c = Command::new(BIN);
        if before {
            c.arg("--config").arg(&s.config).args(["audit", "verify"]);
        } else {
            c.args(["audit", "verify", "--config"]).arg(&s.config);
        }
        c.current_dir(s.dir.path()).output().unwrap()
    };
    let ok = verify(true);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 events verified"));
    let export = Command::new(BIN)
        .args(["audit", "export", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["seq"], 2);
    let url = format!("sqlite://{}/data/dualkey.db", s.dir.path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit_events SET operator = 'mallory' WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let bad = verify(false);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("BROKEN") && text.contains("#2"), "{text}");
}

#[test]
fn config_check_names_the_bad_key_and_help_works_everywhere() {
    let s = setup(|t| t.replace("ttl = \"15m\"", "ttl = \"soon\""));
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ttl") && err.contains("soon"), "{err}");
    let good = setup(|t| t);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&good.config)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let default = Command::new(BIN)
        .args(["config", "check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(
        default.status.code(),
        Some(0),
        "the shipped config must be valid: {}",
        String::from_utf8_lossy(&default.stderr)
    );
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["shell", "--help"],
        &["config", "check", "--help"],
        &["audit", "verify", "--help"],
        &["audit", "export", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_second_process_on_the_same_sqlite_store_is_refused() {
    let s = setup(|t| t);
    let mut first = Command::new(BIN)
        .args(["shell", "--as", "alice", "--config"])
        .arg(&s.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it has answered a command it holds the store.
    first
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"/db approvals\n")
        .unwrap();
    let mut answer = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(first.stdout.as_mut().unwrap()),
        &mut answer,
    )
    .unwrap();
    assert!(answer.contains("No open requests."), "{answer}");
    let (_, err, code) = run_shell(&s, "bob", "/db status\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("another dualkey process"), "{err}");
    // Read-only commands still work next to it.
    for args in [&["backups"][..], &["audit", "verify"]] {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&s.config)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());
}

#[tokio::test]
async fn status_in_prisma_format_matches_the_cli_streams_and_exit_codes() {
    let db = crate::support::TestDb::create("clistatus").await;
    let migrations = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/taskflow/prisma/migrations"
    );
    let s = setup(|t| {
        t.replacen(
            "database_url_env = \"DK_TEST_UNUSED_URL\"",
            "database_url_env = \"DK_STATUS_URL\"",
            1,
        )
    });
    let run = |format: &str| {
        Command::new(BIN)
            .args([
                "status",
                "--env",
                "production",
                "--format",
                format,
                "--config",
            ])
            .arg(&s.config)
            .env("DK_STATUS_URL", &db.url)
            .output()
            .unwrap()
    };
    let out = run("prisma");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("4 migrations found in prisma/migrations\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Following migrations have not yet been applied:\n20250101000000_init\n"),
        "{stdout}"
    );
    dualkey::dbops::prisma::deploy(
        &db.url,
        Path::new(migrations),
        &mut dualkey::dbops::prisma::NoProgress,
    )
    .await
    .unwrap();
    let out = run("prisma");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "4 migrations found in prisma/migrations\n\nDatabase schema is up to date!\n"
    );
    let json: serde_json::Value = serde_json::from_slice(&run("json").stdout).unwrap();
    assert_eq!(json["applied"].as_array().unwrap().len(), 4);
    let missing = Command::new(BIN)
        .args(["status", "--format", "prisma", "--config"])
        .arg(&s.config)
        .env_remove("DK_STATUS_URL")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("DK_STATUS_URL"));
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_answers_health_readiness_and_metrics_then_stops_on_sigterm() {
    use std::io::BufRead;
    let s = setup(|t| t);
    let (_, _, code) = run_shell(&s, "alice", "/db app stop\n");
    assert_eq!(code, Some(0));
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&s.config)
        .env("DUALKEY_SERVER_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .current_dir(s.dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited before listening"
        );
        if let Some(pos) = line.find("listen=") {
            break line[pos + 7..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(&addr, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("dualkey_requests{state=\"pending\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dualkey_audit_events_total 2"),
        "{metrics}"
    );
    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_request_survives_a_restart_and_is_approved_in_the_next_process() {
    let s = setup(|t| t);
    let (out, err, code) = run_shell(&s, "alice", "/db app stop\n");
    assert_eq!(code, Some(0), "{err}");
    let pos = out.find("[approve:").expect("approval card");
    let id = &out[pos + 9..pos + 19];
    assert!(marker_lines(&s.marker).is_empty());
    let (out, err, code) = run_shell(&s, "bob", &format!("/db approvals\nclick approve:{id}\n"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("{id} [production]")),
        "the open request is listed after the restart: {out}"
    );
    assert!(out.contains(&format!("Approved {id}")), "{out}");
    assert_eq!(marker_lines(&s.marker), vec!["stop"]);
}

/// `serve` says on stdout how to talk to it and what is missing; `--shell-as` reads commands
/// from stdin in the same process (a SQLite store admits one process), and end of input stops it.
#[test]
fn serve_says_how_to_talk_to_it_and_takes_shell_lines_in_the_same_process() {
    let s = setup(|t| t);
    let serve = |extra: &[&str], input: &[u8]| {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&s.config)
            .args(extra)
            .env("DUALKEY_SERVER_LISTEN", "127.0.0.1:0")
            .current_dir(s.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child
    };
    // Without a shell: the banner, then it keeps running until SIGTERM.
    let mut child = serve(&[], b"");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("dualkey doctor") {
        use std::io::BufRead;
        assert!(
            stdout.read_line(&mut banner).unwrap() > 0,
            "serve ended before its banner: {banner}"
        );
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    for want in [
        "Slack:   off",
        "Discord: off",
        "dualkey serve --shell-as alice --config",
        "Missing (",
    ] {
        assert!(banner.contains(want), "no `{want}` in:\n{banner}");
    }

    // With a shell: a request typed into serve itself; end of input stops it.
    let child = serve(&["--shell-as", "alice"], b"/db app stop\n");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("type commands below as `alice`"), "{text}");
    assert!(text.contains("Request r"), "no card in:\n{text}");
    // Bob approves in a second run: the request outlived the first process.
    let id = text
        .split("[approve:")
        .nth(1)
        .map(|r| r[..10].to_string())
        .expect("an approve button");
    let again = serve(
        &["--shell-as", "bob"],
        format!("click approve:{id}\n").as_bytes(),
    )
    .wait_with_output()
    .unwrap();
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{text}");
    assert!(text.contains("approved"), "bob's approval in:\n{text}");
    assert!(
        marker_lines(&s.marker).iter().any(|l| l.contains("stop")),
        "the app stop ran: {:?}",
        marker_lines(&s.marker)
    );
}

/// An operator the config does not know is refused before anything starts.
#[test]
fn serve_refuses_an_unknown_shell_operator() {
    let s = setup(|t| t);
    let out = Command::new(BIN)
        .args(["serve", "--shell-as", "mallory", "--config"])
        .arg(&s.config)
        .env("DUALKEY_SERVER_LISTEN", "127.0.0.1:0")
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`mallory` is not an operator"));
}
