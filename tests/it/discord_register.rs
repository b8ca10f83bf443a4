//! `dualkey discord register`, the real binary against the stand-in Discord REST server: the
//! bulk-overwrite PUT (global and per guild), its body built from the command table, and the
//! errors for a missing token and for Discord's refusal.

use serde_json::Value;

use crate::discord_standin::{DiscordStandin, Failure, APP_ID, BOT_TOKEN, GUILD_ID};
use crate::support::{bin_setup, BinSetup, BIN};

const TOKEN_VAR: &str = "DUALKEY_TEST_DISCORD_TOKEN";

/// The test config with a `[discord]` section pointing at `standin`.
fn setup(standin: &DiscordStandin, guild_id: &str) -> BinSetup {
    let base = standin.base_url();
    bin_setup(move |t| {
        format!(
            "{t}\n[discord]\napi_base_url = \"{base}\"\napplication_id = \"{APP_ID}\"\nbot_token_env = \"{TOKEN_VAR}\"\nguild_id = \"{guild_id}\"\n"
        )
    })
}

/// Runs `dualkey --config C discord register ARGS` with `token` (if any) in the token variable:
/// exit code, stdout, stderr.
async fn register(s: &BinSetup, args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(&s.config)
        .args(["discord", "register"])
        .args(args)
        .current_dir(s.dir.path())
        .env_remove(TOKEN_VAR)
        .kill_on_drop(true);
    if let Some(t) = token {
        cmd.env(TOKEN_VAR, t);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
        .await
        .expect("register finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The PUTs the stand-in received.
fn puts(standin: &DiscordStandin) -> Vec<crate::discord_standin::Call> {
    standin
        .calls_to("/applications/")
        .into_iter()
        .filter(|c| c.method == "PUT")
        .collect()
}

fn sub<'a>(cmd: &'a Value, name: &str) -> &'a Value {
    cmd["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no subcommand {name} in {cmd}"))
}

/// The registered body is the one `/db` command with every command of the table.
fn check_body(body: &Value) {
    let list = body.as_array().expect("a bulk overwrite sends an array");
    assert_eq!(list.len(), 1, "{body}");
    let db = &list[0];
    assert_eq!(db["name"], "db");
    assert_eq!(db["type"], 1);
    let names: Vec<&str> = db["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let table: Vec<&str> = dualkey::core::command::REGISTRY
        .iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, table);
    let rollback = sub(db, "rollback");
    let opts = rollback["options"].as_array().unwrap();
    assert_eq!(opts[0]["name"], "migration");
    assert_eq!(opts[0]["required"], true);
    assert_eq!(opts[0]["autocomplete"], true);
    let env = opts.iter().find(|o| o["name"] == "env").unwrap();
    let envs: Vec<&str> = env["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["production", "staging"]);
    let resolve = sub(db, "resolve");
    let state = resolve["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "as")
        .unwrap();
    assert_eq!(state["choices"][0]["value"], "applied");
    assert_eq!(state["choices"][1]["value"], "rolled-back");
}

#[tokio::test]
async fn register_overwrites_the_guild_commands_with_the_command_table() {
    let standin = DiscordStandin::start().await;
    let s = setup(&standin, "");
    let guild = GUILD_ID.to_string();
    let (code, out, err) = register(&s, &["--guild", &guild], Some(BOT_TOKEN)).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(&format!("registered /db in guild {GUILD_ID}")),
        "{out}"
    );
    assert!(
        out.contains("/db rollback") && out.contains("/db audit"),
        "{out}"
    );
    let puts = puts(&standin);
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(
        puts[0].path,
        format!("/applications/{APP_ID}/guilds/{GUILD_ID}/commands")
    );
    assert_eq!(puts[0].auth.as_deref(), Some(&*format!("Bot {BOT_TOKEN}")));
    check_body(&puts[0].body);
    assert_eq!(standin.commands(Some(GUILD_ID)).len(), 1);
    assert!(standin.commands(None).is_empty());
}

#[tokio::test]
async fn register_is_global_without_a_guild_and_the_config_guild_is_the_default() {
    let standin = DiscordStandin::start().await;
    // No guild configured: global.
    let s = setup(&standin, "");
    let (code, out, err) = register(&s, &[], Some(BOT_TOKEN)).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("registered /db globally"), "{out}");
    let p = puts(&standin);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].path, format!("/applications/{APP_ID}/commands"));
    check_body(&p[0].body);
    assert_eq!(standin.commands(None).len(), 1);

    // discord.guild_id configured: that guild, unless --global.
    let s = setup(&standin, &GUILD_ID.to_string());
    let (code, out, err) = register(&s, &[], Some(BOT_TOKEN)).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let p = puts(&standin);
    assert_eq!(
        p.last().unwrap().path,
        format!("/applications/{APP_ID}/guilds/{GUILD_ID}/commands")
    );
    let (code, _, err) = register(&s, &["--global"], Some(BOT_TOKEN)).await;
    assert_eq!(code, 0, "{err}");
    let p = puts(&standin);
    assert_eq!(p.len(), 3);
    assert_eq!(p[2].path, format!("/applications/{APP_ID}/commands"));
}

#[tokio::test]
async fn register_says_what_is_missing_and_prints_discords_refusal() {
    let standin = DiscordStandin::start().await;
    let s = setup(&standin, "");
    // No token: a usage error naming the variable, and no call.
    let (code, _, err) = register(&s, &[], None).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(TOKEN_VAR), "{err}");
    // A guild id that is not a number.
    let (code, _, err) = register(&s, &["--guild", "my-server"], Some(BOT_TOKEN)).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a guild id"), "{err}");
    assert!(puts(&standin).is_empty());

    // A token Discord does not take: its 401 message.
    standin.fail_next("PUT /applications/", 1, Failure::Unauthorized);
    let (code, _, err) = register(&s, &[], Some("not-the-token")).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401") && err.contains("Unauthorized"), "{err}");

    // Discord refuses the body: its message and code are printed, nothing is registered.
    standin.fail_next(
        "PUT /applications/",
        1,
        Failure::Status {
            status: 400,
            code: 50035,
            message: "Invalid Form Body".into(),
        },
    );
    let (code, _, err) = register(&s, &[], Some(BOT_TOKEN)).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Discord refused the registration")
            && err.contains("Invalid Form Body")
            && err.contains("50035"),
        "{err}"
    );
    assert!(standin.commands(None).is_empty());

    // No application id.
    let s = bin_setup(|t| {
        format!(
            "{t}\n[discord]\napi_base_url = \"{}\"\nbot_token_env = \"{TOKEN_VAR}\"\n",
            standin.base_url()
        )
    });
    let (code, _, err) = register(&s, &[], Some(BOT_TOKEN)).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("discord.application_id"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Autocomplete (`register::autocomplete`, `Core::complete`) over a real migrations folder and
// store, and structured (Discord) commands through the dispatcher.

use dualkey::adapters::discord::register::autocomplete;
use dualkey::core::event::EventKind;
use dualkey::store::BackupRow;
use serde_json::json;

use crate::support::{spawn_app_with, Backend, TestApp};

/// An app whose production migrations folder (`{dir}/migrations`) holds 30 migrations; staging
/// keeps the example project's 4.
async fn app_with_migrations(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, 1, 0, |t| {
        t.replacen(
            &format!(
                "migrations_dir = \"{}\"",
                crate::support::FIXTURE_MIGRATIONS
            ),
            "migrations_dir = \"{dir}/migrations\"",
            1,
        )
    })
    .await;
    for i in 0..30 {
        let d = app
            .dir
            .path()
            .join(format!("migrations/202401{:02}000000_step_{i:02}", i + 1));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("migration.sql"), "SELECT 1;").unwrap();
    }
    app
}

fn backup_row(id: &str, env: &str, started_at: i64, state: &str, deleted: bool) -> BackupRow {
    BackupRow {
        id: id.into(),
        env: env.into(),
        kind: "manual".into(),
        state: state.into(),
        path: format!("/backups/{id}.dump"),
        database_name: "app".into(),
        size_bytes: Some(3 * 1024 * 1024),
        sha256: Some("00".repeat(32)),
        started_at,
        duration_ms: Some(1000),
        requested_by: Some("alice".into()),
        note: Some("before cleanup".into()),
        migrations_json: "[]".into(),
        verified_at: Some(started_at + 1000),
        verify_error: None,
        toc_entries: Some(10),
        operation_id: None,
        error: None,
        deleted_at: deleted.then_some(started_at + 5000),
        file_mtime_ms: None,
        write_stats_json: None,
    }
}

fn interaction(sub: &str, focused: (&str, &str), others: &[(&str, &str)]) -> serde_json::Value {
    let mut opts = vec![json!({"name": focused.0, "value": focused.1, "focused": true, "type": 3})];
    for (k, v) in others {
        opts.push(json!({"name": k, "value": v, "type": 3}));
    }
    json!({"id": "1", "name": "db", "type": 1,
           "options": [{"type": 1, "name": sub, "options": opts}]})
}

fn choices(answer: &serde_json::Value) -> Vec<(String, String)> {
    assert_eq!(answer["type"], 8, "{answer}");
    answer["data"]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn autocomplete_answers_from_the_folder_and_the_store(backend: Backend) {
    let app = app_with_migrations(backend).await;
    let core = &app.core;

    // Migration names: newest first, at most 25, filtered by what is typed, per environment.
    let t = std::time::Instant::now();
    let all = choices(&autocomplete(core, &interaction("rollback", ("migration", ""), &[])).await);
    assert!(t.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(all.len(), 25);
    assert_eq!(all[0].1, "20240130000000_step_29");
    assert_eq!(all[24].1, "20240106000000_step_05");
    let some =
        choices(&autocomplete(core, &interaction("resolve", ("migration", "STEP_1"), &[])).await);
    let values: Vec<&str> = some.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(values.len(), 10, "{values:?}");
    assert_eq!(values[0], "20240120000000_step_19");
    assert!(values.iter().all(|v| v.contains("step_1")));
    let staging = choices(
        &autocomplete(
            core,
            &interaction("rollback", ("migration", "2025"), &[("env", "staging")]),
        )
        .await,
    );
    let values: Vec<&str> = staging.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(
        values,
        [
            "20250301000000_drop_legacy_flag",
            "20250201000000_add_comments",
            "20250115000000_add_task_priority",
            "20250101000000_init"
        ]
    );

    // Backup ids: live, verified catalog entries of the environment, newest first; the label
    // shows age and size, the value is the id.
    let now = core.clock.now_ms();
    let mut tx = core.store.begin().await.unwrap();
    for b in [
        backup_row("b000000001", "production", now - 3 * 3_600_000, "ok", false),
        backup_row("b000000002", "production", now - 2 * 3_600_000, "ok", false),
        backup_row("b000000003", "production", now - 3_600_000, "failed", false),
        backup_row("b000000004", "production", now - 1_800_000, "ok", true),
        backup_row("b0000000aa", "staging", now - 60_000, "ok", false),
    ] {
        tx.put_backup(&b).await.unwrap();
    }
    tx.commit().await.unwrap();
    let got = choices(&autocomplete(core, &interaction("restore", ("backup", "b0"), &[])).await);
    let values: Vec<&str> = got.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(values, ["b000000002", "b000000001"]);
    assert!(
        got[0].0.contains("2h ago") && got[0].0.contains("3.0 MB"),
        "{:?}",
        got[0]
    );
    let got = choices(
        &autocomplete(
            core,
            &interaction("restore", ("backup", ""), &[("env", "staging")]),
        )
        .await,
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, "b0000000aa");

    // Open request ids for `cancel`.
    let card = app.cmd("alice", "app stop").await;
    let id = app.last_request().await;
    assert!(card.contains(&id), "{card}");
    let got =
        choices(&autocomplete(core, &interaction("cancel", ("request", &id[..4]), &[])).await);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, id);
    assert!(
        got[0].0.contains("app-stop") && got[0].0.contains("alice"),
        "{got:?}"
    );

    // Options without autocomplete, and unknown commands, get no suggestions.
    for data in [
        interaction("status", ("env", "st"), &[]),
        interaction("nosuch", ("migration", ""), &[]),
        json!({"name": "db"}),
    ] {
        assert!(
            choices(&autocomplete(core, &data).await).is_empty(),
            "{data}"
        );
    }
}
crate::both_backends!(autocomplete_answers_from_the_folder_and_the_store);

async fn last_audit(app: &TestApp) -> (String, serde_json::Value) {
    let r = app.core.store.audit_tail(1).await.unwrap().remove(0);
    (r.action, serde_json::from_str(&r.details).unwrap())
}

fn invoke(command: &str, options: &[(&str, &str)]) -> EventKind {
    EventKind::Invoke {
        command: command.into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn structured_commands_reach_the_command_by_name_and_are_audited_as_such() {
    let app = app_with_migrations(Backend::Sqlite).await;
    // A read-only command with an option.
    let out = app.send("alice", invoke("audit", &[("n", "3")])).await;
    assert!(!out.contains("usage:"), "{out}");
    let (action, details) = last_audit(&app).await;
    assert_eq!(action, "command");
    assert_eq!(details, json!({"command": "audit", "options": {"n": "3"}}));

    // A request with options in any order: planned for the named environment.
    let out = app
        .send(
            "alice",
            invoke("app", &[("env", "staging"), ("action", "stop")]),
        )
        .await;
    let id = app.last_request().await;
    assert!(out.contains(&id), "{out}");
    let req = app.core.store.get_request(&id).await.unwrap().unwrap();
    assert_eq!(req.env, "staging");
    assert_eq!(
        dualkey::core::dispatch::kind_name(&req.kind_json),
        "app-stop"
    );

    // Mistakes: the usage error, ephemeral, audited as rejected with the structured options;
    // nothing is requested.
    let before = app.core.store.list_requests(None, 100).await.unwrap().len();
    for (cmd, opts, want) in [
        (
            "rollback",
            vec![("env", "staging")],
            "missing option `migration`",
        ),
        (
            "rollback",
            vec![("migration", "nosuch")],
            "there is no migration `nosuch`",
        ),
        (
            "app",
            vec![("action", "explode")],
            "is not stop, start or status",
        ),
        (
            "status",
            vec![("env", "nowhere")],
            "unknown environment `nowhere`",
        ),
        ("status", vec![("envv", "staging")], "unknown option `envv`"),
        ("cancel", vec![("request", "r12")], "is not a request id"),
        (
            "app",
            vec![("action", "stop"), ("env", "staging;rm")],
            "unexpected character",
        ),
    ] {
        let out = app.send("alice", invoke(cmd, &opts)).await;
        assert!(out.contains(want), "{cmd} {opts:?}: {out}");
        assert!(out.contains(&format!("usage: /db {cmd}")), "{out}");
        let (action, details) = last_audit(&app).await;
        assert_eq!(action, "command.rejected", "{cmd} {opts:?}");
        assert_eq!(details["command"], cmd);
        assert_eq!(details["options"][opts[0].0], opts[0].1);
        assert!(details["error"].as_str().unwrap().contains(want));
    }
    let out = app.send("alice", invoke("drop", &[])).await;
    assert!(out.contains("unknown command `drop`"), "{out}");
    assert_eq!(
        app.core.store.list_requests(None, 100).await.unwrap().len(),
        before
    );

    // Roles are checked as for text: a viewer cannot ask for an operation.
    let out = app
        .send("carol", invoke("app", &[("action", "stop")]))
        .await;
    assert!(out.contains("needs the operator role"), "{out}");
    let (action, details) = last_audit(&app).await;
    assert_eq!(action, "command.refused");
    assert_eq!(details["options"]["action"], "stop");
}
