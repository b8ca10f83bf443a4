//! `dualkey slack manifest`, the real binary: the manifest on stdout for Socket Mode and HTTP
//! mode, `--config` before or after the subcommand, and clear usage errors (exit 2).

use std::process::{Command, Output};

use crate::support::{bin_setup, BIN};

fn run(args: &[&str], config: &std::path::Path, config_first: bool) -> Output {
    let mut cmd = Command::new(BIN);
    if config_first {
        cmd.arg("--config").arg(config).args(args);
    } else {
        cmd.args(args).arg("--config").arg(config);
    }
    cmd.env_remove("DUALKEY_CONFIG").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn with_slack(t: String, slack: &str) -> String {
    // A table of its own at the end, after the fixture's last table.
    format!("{t}\n[slack]\n{slack}\n")
}

#[test]
fn socket_mode_manifest_on_stdout() {
    let s = bin_setup(|t| with_slack(t, "mode = \"socket\"\ncommand = \"/dbops\""));
    for config_first in [true, false] {
        let out = run(&["slack", "manifest"], &s.config, config_first);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(stdout.contains("- command: \"/dbops\""), "{stdout}");
        assert!(stdout.contains("socket_mode_enabled: true"), "{stdout}");
        assert!(
            stdout.contains(
                "      - commands\n      - chat:write\n      - channels:read\n      - groups:read\n"
            ),
            "{stdout}"
        );
        assert!(!stdout.contains("url:"), "{stdout}");
        assert!(
            stdout.ends_with("token_rotation_enabled: false\n"),
            "{stdout}"
        );
    }
}

#[test]
fn http_mode_needs_url_and_uses_it() {
    let s = bin_setup(|t| with_slack(t, "mode = \"http\""));
    let out = run(&["slack", "manifest"], &s.config, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("--url https://your.host"), "{err}");

    let out = run(
        &["slack", "manifest", "--url", "https://dk.example.com/"],
        &s.config,
        true,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("url: \"https://dk.example.com/slack/commands\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("request_url: \"https://dk.example.com/slack/interactions\""),
        "{stdout}"
    );
    assert!(stdout.contains("socket_mode_enabled: false"), "{stdout}");

    let out = run(
        &["slack", "manifest", "--url", "http://dk.example.com"],
        &s.config,
        false,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("must start with https://"));
}

#[test]
fn help_explains_the_subcommand() {
    let out = Command::new(BIN)
        .args(["slack", "manifest", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("Slack app manifest"), "{help}");
    assert!(help.contains("--url <URL>"), "{help}");
    assert!(help.contains("api.slack.com/apps"), "{help}");
}
