//! `dualkey doctor`, the real binary, against the stand-in Slack and Discord, a real database, a
//! real SQLite store, the real client tools and a small health endpoint: a healthy set-up passes
//! with one `ok` line per check, and each fault made on purpose fails with its own line and
//! exit code 1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::discord_standin::{overwrite, DiscordStandin, APP_ID, BOT_TOKEN, BOT_USER_ID, GUILD_ID};
use crate::slack_standin::SlackStandin;
use crate::support::{TestDb, BIN, FIXTURE_MIGRATIONS};

const SLACK_BOT: &str = "xoxb-doctor-bot-secret";
const SLACK_APP: &str = "xapp-doctor-app-secret";
const APPROVALS: &str = "C0APPROVALS";
const AUDIT: &str = "C0AUDIT";
const D_APPROVALS: u64 = 1_200_000_000_000_000_001;
const D_AUDIT: u64 = 1_200_000_000_000_000_002;
const SEND_MESSAGES: u64 = 1 << 11;

/// One set-up: stand-ins, a database, a migrated store, a health endpoint, a config.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    slack: SlackStandin,
    discord: DiscordStandin,
    db: TestDb,
    health_url: String,
}

/// What one run printed and its exit code.
struct Run {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

impl Run {
    /// The line about `what` (its text after the verdict starts with `what`).
    fn line(&self, what: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(what)))
            .unwrap_or_else(|| panic!("no line for `{what}` in:\n{}", self.stdout))
    }
}

async fn health_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/healthz")
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}/data/dualkey.db", dir.path().display());
        drop(
            dualkey::store::open(&store)
                .await
                .expect("create the store"),
        );
        let s = Setup {
            config: dir.path().join("dualkey.toml"),
            dir,
            slack: SlackStandin::start().await,
            discord: DiscordStandin::start().await,
            db: TestDb::create("doctor").await,
            health_url: health_server().await,
        };
        s.write_config(|t| t);
        // The manifest beside the config, as the README says to make it.
        let manifest = s.run(&["slack", "manifest"], &[]).await;
        assert_eq!(manifest.code, Some(0), "{}", manifest.stderr);
        std::fs::write(s.dir.path().join("manifest.yml"), &manifest.stdout).unwrap();
        s
    }

    fn write_config(&self, edit: impl Fn(String) -> String) {
        let d = self.dir.path().display();
        let text = format!(
            r#"default_environment = "production"
[store]
url = "sqlite://{d}/data/dualkey.db"
[[operators]]
id = "alice"
slack = "U0ALICE"
discord = "300000000000000001"
roles = ["operator", "approver"]
[[operators]]
id = "bob"
slack = "U0BOB"
discord = "300000000000000002"
roles = ["approver"]
[slack]
enabled = true
mode = "socket"
api_base_url = "{slack}"
bot_token_env = "DK_DOCTOR_SLACK_BOT"
app_token_env = "DK_DOCTOR_SLACK_APP"
approvals_channel = "{APPROVALS}"
audit_channel = "{AUDIT}"
report_channel = "{APPROVALS}"
[discord]
enabled = true
api_base_url = "{discord}"
bot_token_env = "DK_DOCTOR_DISCORD_BOT"
application_id = "{APP_ID}"
guild_id = "{GUILD_ID}"
approvals_channel = "{D_APPROVALS}"
audit_channel = "{D_AUDIT}"
[environments.production]
database_url_env = "DK_DOCTOR_DB"
migrations_dir = "{FIXTURE_MIGRATIONS}"
backup_dir = "{d}/backups"
app_stop = ["true"]
app_start = ["true"]
app_status = ["echo", "up"]
health_url = "{health}"
[environments.staging]
database_url_env = "DK_DOCTOR_STAGING_DB"
migrations_dir = "{FIXTURE_MIGRATIONS}"
backup_dir = "{d}/backups"
"#,
            slack = self.slack.api_url(),
            discord = self.discord.base_url(),
            health = self.health_url,
        );
        std::fs::write(&self.config, edit(text)).unwrap();
    }

    /// Runs `dualkey --config C ARGS` with the set-up's secrets in the environment (`env`
    /// added or, with an empty value, removed).
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env("DK_DOCTOR_SLACK_BOT", SLACK_BOT)
            .env("DK_DOCTOR_SLACK_APP", SLACK_APP)
            .env("DK_DOCTOR_DISCORD_BOT", BOT_TOKEN)
            .env("DK_DOCTOR_DB", &self.db.url)
            .env_remove("DK_DOCTOR_STAGING_DB")
            .env_remove("DUALKEY_STORE_URL")
            .kill_on_drop(true);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("dualkey finishes")
            .unwrap();
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
            code: out.status.code(),
        }
    }

    async fn doctor(&self, args: &[&str]) -> Run {
        let mut all = vec!["doctor"];
        all.extend_from_slice(args);
        let r = self.run(&all, &[]).await;
        for secret in [SLACK_BOT, SLACK_APP, BOT_TOKEN] {
            assert!(
                !r.stdout.contains(secret) && !r.stderr.contains(secret),
                "a token was printed:\n{}{}",
                r.stdout,
                r.stderr
            );
        }
        r
    }

    /// Registers the command as `dualkey discord register` does.
    async fn register(&self) {
        let r = self.run(&["discord", "register"], &[]).await;
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    }
}

const HEALTHY: [&str; 15] = [
    "state store",
    "slack bot token",
    "slack app token (Socket Mode)",
    "slack channel C0APPROVALS (slack.approvals_channel, slack.report_channel)",
    "slack channel C0AUDIT (slack.audit_channel)",
    "slack command",
    "discord bot token",
    "discord channel 1200000000000000001 (discord.approvals_channel)",
    "discord channel 1200000000000000002 (discord.audit_channel)",
    "discord command /db",
    "production database",
    "production client tools",
    "production migrations",
    "production backup_dir",
    "production app commands",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_check_and_env_picks_one_environment() {
    let s = Setup::new().await;
    s.register().await;
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    for what in HEALTHY.iter().chain(&["production health_url"]) {
        assert!(r.line(what).starts_with("ok   "), "{}", r.stdout);
    }
    assert_eq!(r.stdout.lines().count(), HEALTHY.len() + 1, "{}", r.stdout);
    assert!(!r.stdout.contains("staging"), "{}", r.stdout);
    assert!(
        r.line("production database").contains("sslmode=prefer"),
        "{}",
        r.stdout
    );
    assert!(
        r.line("slack command").contains("/db matches"),
        "{}",
        r.stdout
    );
    // Every call went to the stand-ins, with the right token.
    let info = s.slack.calls_to("conversations.info");
    assert_eq!(info.len(), 2, "one call per channel");
    assert!(info.iter().all(|c| c.auth.as_deref() == Some(SLACK_BOT)));
    let open = s.slack.calls_to("apps.connections.open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].auth.as_deref(), Some(SLACK_APP));
    assert_eq!(s.discord.calls_to(&format!("/channels/{D_AUDIT}")).len(), 1);
    // The backup folder's probe file is gone again.
    let left: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().contains("doctor")),
        "{left:?}"
    );

    // Without --env the staging environment is checked too: its URL variable is not set.
    let all = s.doctor(&[]).await;
    assert_eq!(all.code, Some(1), "{}", all.stdout);
    assert!(all.line("staging database").starts_with(
        "FAIL staging database: DK_DOCTOR_STAGING_DB is not set — fix: export DK_DOCTOR_STAGING_DB"
    ));
    // The help says what it checks and what the exit code means.
    let help = s.run(&["doctor", "--help"], &[]).await;
    assert_eq!(help.code, Some(0));
    for part in [
        "one line per",
        "exit 1 when any fails",
        "--env <ENV>",
        "apps.connections.open",
    ] {
        assert!(help.stdout.contains(part), "{part}: {}", help.stdout);
    }
    // An unknown environment is a usage error.
    let bad = s.doctor(&["--env", "nope"]).await;
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("unknown environment `nope`"),
        "{}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_fail_with_the_platforms_refusal() {
    let s = Setup::new().await;
    s.register().await;
    s.slack.reject_token(SLACK_BOT);
    s.discord.revoke_token(BOT_TOKEN);
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.line("slack bot token").starts_with(
        "FAIL slack bot token: Slack refused it (auth.test: invalid_auth) — fix: put a current Bot User OAuth Token"
    ), "{}", r.stdout);
    assert!(r.line("discord bot token").starts_with(
        "FAIL discord bot token: Discord refused it: 401: Unauthorized (401, code 0) — fix: put a current bot token in DK_DOCTOR_DISCORD_BOT"
    ), "{}", r.stdout);
    // The checks that need the token are not run; the app token still is.
    assert!(r.line("slack app token (Socket Mode)").starts_with("ok   "));
    assert!(!r.stdout.contains("slack channel") && !r.stdout.contains("discord channel"));
    assert!(r.line("production database").starts_with("ok   "));

    // A revoked app token: Socket Mode cannot open a connection.
    s.slack.reject_token(SLACK_APP);
    let r = s.doctor(&["--env", "production"]).await;
    assert!(r.line("slack app token (Socket Mode)").starts_with(
        "FAIL slack app token (Socket Mode): Socket Mode cannot open a connection (apps.connections.open: invalid_auth)"
    ), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_the_bot_is_not_in_or_cannot_post_to_fail() {
    let s = Setup::new().await;
    s.register().await;
    s.slack.remove_bot_from(AUDIT);
    s.discord.hide_channel(D_AUDIT);
    s.discord.set_overwrites(
        D_APPROVALS,
        vec![overwrite(BOT_USER_ID, 1, 0, SEND_MESSAGES)],
    );
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.line("slack channel C0APPROVALS").starts_with("ok   "),
        "{}",
        r.stdout
    );
    assert!(r.line("slack channel C0AUDIT").starts_with(
        "FAIL slack channel C0AUDIT (slack.audit_channel): the bot is not a member of #chan-c0audit (is_member: false)"
    ), "{}", r.stdout);
    assert!(r
        .line("slack channel C0AUDIT")
        .contains("fix: in Slack, open the channel and type /invite @dualkey"));
    assert!(r.line(&format!("discord channel {D_AUDIT}")).starts_with(&format!(
        "FAIL discord channel {D_AUDIT} (discord.audit_channel): the bot cannot see it: Missing Access (403, code 50001)"
    )), "{}", r.stdout);
    assert!(r.line(&format!("discord channel {D_APPROVALS}")).starts_with(&format!(
        "FAIL discord channel {D_APPROVALS} (discord.approvals_channel): #channel-{D_APPROVALS}: the bot lacks SEND_MESSAGES there"
    )), "{}", r.stdout);
    // Every other check still passes.
    let fails = r.stdout.lines().filter(|l| l.starts_with("FAIL")).count();
    assert_eq!(fails, 3, "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_stale_discord_registration_is_named() {
    let s = Setup::new().await;
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert_eq!(
        r.line("discord command /db"),
        format!("FAIL discord command /db: not registered in guild {GUILD_ID} — fix: run `dualkey discord register --guild {GUILD_ID}`")
    );

    // Registered by an older dualkey: a subcommand missing, another with other options.
    s.register().await;
    let mut cmd = s.discord.commands(Some(GUILD_ID)).remove(0);
    let subs = cmd["options"].as_array_mut().unwrap();
    let gone = subs.remove(0)["name"].as_str().unwrap().to_string();
    let changed = subs
        .iter_mut()
        .find(|o| o["options"].as_array().is_some_and(|a| !a.is_empty()))
        .unwrap();
    changed["options"].as_array_mut().unwrap().pop();
    let changed = changed["name"].as_str().unwrap().to_string();
    let put = reqwest::Client::new()
        .put(format!(
            "{}/api/v10/applications/{APP_ID}/guilds/{GUILD_ID}/commands",
            s.discord.base_url()
        ))
        .header("Authorization", format!("Bot {BOT_TOKEN}"))
        .json(&serde_json::json!([cmd]))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert_eq!(
        r.line("discord command /db"),
        format!("FAIL discord command /db: registered in guild {GUILD_ID} but out of date: missing: {gone}; changed: {changed} — fix: run `dualkey discord register --guild {GUILD_ID}`")
    );

    // Registering again mends it.
    s.register().await;
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stdout);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_dir_without_room_for_the_next_backup_fails() {
    let s = Setup::new().await;
    s.register().await;
    let backups = s.dir.path().join("backups");
    let _mount = match Tmpfs::mount(&backups, "256k") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "no tmpfs ({why}): a sparse newest backup larger than half the free space instead"
            );
            return a_sparse_backup_larger_than_half_the_free_space_fails(&s, &backups).await;
        }
    };
    // The newest backup takes 160 KiB of the 256: what is left cannot hold another.
    let env_dir = backups.join("production");
    std::fs::create_dir_all(&env_dir).unwrap();
    std::fs::write(
        env_dir.join("backup_pre_migration_20250101.sql"),
        vec![b'-'; 160 * 1024],
    )
    .unwrap();
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    let line = r.line("production backup_dir");
    assert!(
        line.starts_with(&format!(
            "FAIL production backup_dir: {} has ",
            env_dir.display()
        )),
        "{line}"
    );
    assert!(line.contains("the newest backup (backup_pre_migration_20250101.sql) is 160.0 KB, and a new one needs room for twice that"), "{line}");
    assert_eq!(
        r.stdout.lines().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "{}",
        r.stdout
    );

    // A smaller newest backup leaves room for two: ok.
    std::fs::write(
        env_dir.join("backup_pre_migration_20250101.sql"),
        vec![b'-'; 40 * 1024],
    )
    .unwrap();
    let r = s.doctor(&["--env", "production"]).await;
    assert!(
        r.line("production backup_dir").starts_with("ok   "),
        "{}",
        r.stdout
    );
}

/// Where no tmpfs can be mounted: a sparse file (no disk used) whose size is more than half of
/// what the file system has free makes the same failure.
async fn a_sparse_backup_larger_than_half_the_free_space_fails(s: &Setup, backups: &Path) {
    let env_dir = backups.join("production");
    std::fs::create_dir_all(&env_dir).unwrap();
    let free = {
        let c = std::ffi::CString::new(env_dir.to_str().unwrap()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    let f = std::fs::File::create(env_dir.join("backup_pre_migration_20250101.sql")).unwrap();
    f.set_len(free / 2 + (64 << 20)).unwrap();
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    let line = r.line("production backup_dir");
    assert!(line.starts_with("FAIL "), "{line}");
    assert!(line.contains("needs room for twice that"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_missing_programs_and_a_silent_health_url_fail() {
    let s = Setup::new().await;
    s.register().await;
    // A port that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/healthz", silent.local_addr().unwrap());
    let empty_bin = s.dir.path().join("nobin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let health = s.health_url.clone();
    s.write_config(|t| {
        t.replace(&health, &silent_url).replace(
            "app_status = [\"echo\", \"up\"]",
            &format!(
                "app_status = [\"dk-no-such-program\"]\npg_bin_dir = \"{}\"",
                empty_bin.display()
            ),
        )
    });
    let r = s
        .run(
            &["doctor", "--env", "production"],
            &[("DK_DOCTOR_DB", "postgres://postgres@127.0.0.1:1/nowhere")],
        )
        .await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.line("production database")
            .starts_with("FAIL production database: unreachable: "),
        "{}",
        r.stdout
    );
    assert!(
        r.line("production database")
            .contains("fix: check the URL in DK_DOCTOR_DB"),
        "{}",
        r.stdout
    );
    assert!(r.line("production client tools").starts_with(&format!(
        "FAIL production client tools: pg_dump: pg_dump not found (in the configured directory {})", empty_bin.display()
    )), "{}", r.stdout);
    assert!(
        r.line("production client tools")
            .contains("fix: set environments.production.pg_bin_dir"),
        "{}",
        r.stdout
    );
    assert!(
        r.line("production migrations")
            .starts_with("warn production migrations: "),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.line("production app commands"),
        "FAIL production app commands: not found or not executable: app_status `dk-no-such-program` — fix: install it, put it on PATH for the user dualkey runs as, or give its full path in environments.production"
    );
    assert!(
        r.line("production health_url").starts_with(&format!(
            "FAIL production health_url: {silent_url}: error after "
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.line("production health_url")
            .contains("no answer within 5 s"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("postgres://"), "{}", r.stdout);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_the_folder_lacks_and_a_store_behind_are_reported() {
    let s = Setup::new().await;
    s.register().await;
    // The database has a migration applied that the folder does not have.
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&s.db.url)
        .await
        .unwrap();
    sqlx::raw_sql(dualkey::dbops::prisma::CREATE_MIGRATIONS_TABLE_SQL)
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) VALUES ('x', 'abc', now(), '20990101000000_elsewhere', 1)")
        .execute(&mut c)
        .await
        .unwrap();
    // A store whose newest schema migration is not applied.
    let store = s.dir.path().join("data/dualkey.db");
    let mut st = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        store.display()
    ))
    .await
    .unwrap();
    let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut st)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ?")
        .bind(newest)
        .execute(&mut st)
        .await
        .unwrap();
    drop(st);
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.line("production migrations").starts_with(&format!(
        "FAIL production migrations: applied in the database but missing from {FIXTURE_MIGRATIONS}: 20990101000000_elsewhere"
    )), "{}", r.stdout);
    let store_line = r.line("state store");
    assert!(store_line.starts_with("warn state store: "), "{store_line}");
    assert!(
        store_line.contains(&format!(
            "1 of {newest} schema migrations not applied yet ({newest} "
        )),
        "{store_line}"
    );
    // Read only: doctor applied nothing.
    let mut st = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        store.display()
    ))
    .await
    .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = ?")
        .bind(newest)
        .fetch_one(&mut st)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_scopes_manifest_and_http_mode_are_checked() {
    let s = Setup::new().await;
    s.register().await;
    // The generated manifest asks for no channels:read: membership cannot be checked, a warning.
    s.slack.withhold_scope("channels:read");
    // A manifest made for another command.
    let manifest = s.dir.path().join("manifest.yml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"/db\"", "\"/dbops\"")).unwrap();
    let r = s.doctor(&["--env", "production"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.line("slack channel C0AUDIT").starts_with(
        "warn slack channel C0AUDIT (slack.audit_channel): membership not checked: the bot token lacks channels:read (conversations.info: missing_scope) — fix: add the bot scopes channels:read and groups:read"
    ), "{}", r.stdout);
    assert!(
        r.line("slack command").starts_with(&format!(
            "FAIL slack command: slack.command is /db but {} has /dbops",
            manifest.display()
        )),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stdout.lines().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "{}",
        r.stdout
    );

    // HTTP mode: no app token call; the signing secret must be set, and the manifest (made for
    // Socket Mode) no longer fits.
    std::fs::write(&manifest, &text).unwrap();
    s.write_config(|t| {
        t.replace(
            "mode = \"socket\"",
            "mode = \"http\"\nsigning_secret_env = \"DK_DOCTOR_SIGNING\"",
        )
    });
    let r = s
        .run(
            &["doctor", "--env", "production"],
            &[("DK_DOCTOR_SIGNING", "")],
        )
        .await;
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.line("slack signing secret (HTTP mode)")
            .starts_with("FAIL slack signing secret (HTTP mode): DK_DOCTOR_SIGNING is not set"),
        "{}",
        r.stdout
    );
    assert!(
        r.line("slack command").starts_with(&format!(
            "FAIL slack command: slack.mode is http but {} has socket_mode_enabled: true",
            manifest.display()
        )),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("Socket Mode)"), "{}", r.stdout);
    let r = s
        .run(
            &["doctor", "--env", "production"],
            &[("DK_DOCTOR_SIGNING", "s3cret-signing")],
        )
        .await;
    assert!(
        r.line("slack signing secret (HTTP mode)")
            .starts_with("ok   "),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cret-signing"));
}
