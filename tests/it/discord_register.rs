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
