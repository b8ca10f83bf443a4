//! Discord rendering of neutral replies: a card is one embed (title with the state, a colour by
//! state, inline fields, the step list, warnings by severity, votes, the expiry as a Discord
//! timestamp), a report is one embed per section (tables as monospace code blocks), text is the
//! message `content`; buttons are action rows of type-2 buttons whose `custom_id` is the button
//! id. Every Discord limit is respected by truncating with `…` on a character boundary, and the
//! message says when something was left out.
//!
//! Text that came from users or the database is escaped for Discord markdown ([`escape`]), so a
//! migration called `*_x_*` shows as written and `@everyone` pings nobody; `allowed_mentions`
//! never lets `@everyone`, `@here` or roles ping, and lets only the card's own mentions of
//! Discord accounts through.
//!
//! Discord has no confirmation dialog for buttons: a button's [`crate::core::reply::Confirm`]
//! text is shown in the embed as a field, `Before you click <label>`, next to the button it
//! belongs to; the click itself counts at once.
//!
//! Here: the Discord limits, the colours, and the message body; `text` escapes and cuts,
//! `embed` builds and fits embeds, `card` and `report` render the two kinds of reply,
//! `buttons` the action rows.

use serde_json::{json, Map, Value};

use crate::core::reply::{Body, Reply, Visibility};

mod buttons;
mod card;
mod embed;
mod report;
mod text;

use buttons::components;
use card::{card_embed, discord_mentions};
use embed::{add_footer_note, fit_total};
use report::report_embeds;
use text::text_content;

pub use card::colour;
pub use embed::embed_len;
pub use text::{escape, truncate};

/// Message `content`.
pub const CONTENT: usize = 2000;
/// Embeds in one message.
pub const EMBEDS: usize = 10;
/// Embed title.
pub const EMBED_TITLE: usize = 256;
/// Embed description.
pub const EMBED_DESCRIPTION: usize = 4096;
/// Fields in one embed.
pub const EMBED_FIELDS: usize = 25;
/// Field name.
pub const FIELD_NAME: usize = 256;
/// Field value.
pub const FIELD_VALUE: usize = 1024;
/// Embed footer text.
pub const FOOTER: usize = 2048;
/// Title, description, field names and values and footer text of all embeds together.
pub const EMBEDS_TOTAL: usize = 6000;
/// Button label.
pub const BUTTON_LABEL: usize = 80;
/// Button `custom_id`.
pub const CUSTOM_ID: usize = 100;
/// Buttons in one action row.
pub const BUTTONS_PER_ROW: usize = 5;
/// Action rows in one message.
pub const ROWS: usize = 5;
pub use super::interactions::EPHEMERAL;

/// Amber: waiting for votes.
pub const AMBER: u32 = 0xF0B232;
/// Blue: approved, queued, running.
pub const BLUE: u32 = 0x3498DB;
/// Green: succeeded.
pub const GREEN: u32 = 0x2ECC71;
/// Red: failed, interrupted, denied, expired.
pub const RED: u32 = 0xE74C3C;
/// Grey: cancelled.
pub const GREY: u32 = 0x95A5A6;
/// Orange: a warning.
pub const ORANGE: u32 = 0xE67E22;
/// Blurple: information (reports, notices).
pub const BLURPLE: u32 = 0x5865F2;

/// A reply as a Discord message body: `content`, `embeds`, `components`, `allowed_mentions`,
/// and `flags: 64` when only the asker should see it. The same body edits a message (Discord
/// ignores the ephemeral bit on edits; [`edit`] leaves it out).
pub fn message(reply: &Reply) -> Value {
    let mut users: Vec<String> = Vec::new();
    let (content, embeds, buttons) = match &reply.body {
        Body::Text(t) => (text_content(t), vec![], vec![]),
        Body::Card(c) => {
            users = discord_mentions(&c.mentions);
            (String::new(), vec![card_embed(c)], c.buttons.clone())
        }
        Body::Report(r) => (String::new(), report_embeds(r), r.buttons.clone()),
    };
    let (components, left_out) = components(&buttons);
    let mut embeds = embeds;
    if left_out > 0 {
        if let Some(last) = embeds.last_mut() {
            add_footer_note(
                last,
                &format!("… {left_out} more button(s) not shown (Discord shows at most 25)"),
            );
        }
    }
    let embeds = fit_total(embeds);
    let mut m = Map::new();
    m.insert("content".into(), json!(content));
    m.insert("embeds".into(), Value::Array(embeds));
    m.insert("components".into(), Value::Array(components));
    m.insert(
        "allowed_mentions".into(),
        json!({"parse": [], "users": users}),
    );
    if reply.visibility == Visibility::Ephemeral {
        m.insert("flags".into(), json!(EPHEMERAL));
    }
    Value::Object(m)
}

/// [`message`] without `flags`, for editing a message in place.
pub fn edit(reply: &Reply) -> Value {
    let mut v = message(reply);
    if let Value::Object(m) = &mut v {
        m.remove("flags");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::card::{steps_md, STEPS_BUDGET};
    use super::*;
    use crate::core::event::Platform;
    use crate::core::reply::{
        Button, ButtonStyle, Card, CardState, Mention, Reply, Report, Section, Step, StepState,
        Style, Table, Visibility, Warning,
    };
    use crate::core::reply::{Confirm, Votes};
    use proptest::prelude::*;

    fn request_card() -> Card {
        let mut c = Card::new("Request r123abc456: deploy 2 migrations", Style::Pending);
        c.state = Some(CardState::Pending);
        c.fields = vec![
            ("Requested by".into(), "alice".into()),
            ("Environment".into(), "production".into()),
            ("Votes".into(), "bob approved".into()),
        ];
        c.votes = Some(Votes {
            approvals: 1,
            required: 2,
            cast: vec![("bob".into(), "approved".into())],
        });
        c.expires_at_ms = Some(1_764_612_000_000);
        c.mentions = vec![Mention {
            role: "requester".into(),
            operator: "alice".into(),
            accounts: vec![
                (Platform::Slack, "U0ALICE".into()),
                (Platform::Discord, "300000000000000001".into()),
            ],
        }];
        c.warnings = vec![
            Warning::info("takes a minute"),
            Warning::danger("drops column `email`"),
        ];
        c.steps = vec![
            Step {
                name: "backup".into(),
                detail: "pg_dump -Fc".into(),
                state: StepState::Succeeded,
                recorded: Some(("succeeded".into(), "12 MB".into())),
            },
            Step {
                name: "migrate".into(),
                detail: "apply 2 migrations".into(),
                state: StepState::Running,
                recorded: None,
            },
        ];
        c.buttons = vec![
            Button::new("approve:r123abc456", "Approve", ButtonStyle::Primary).with_confirm(
                Confirm {
                    title: "Approve and run?".into(),
                    text: "deploy: 2 step(s) run as soon as the vote counts.".into(),
                    confirm: "Approve".into(),
                    deny: "Back".into(),
                },
            ),
            Button::new("deny:r123abc456", "Deny", ButtonStyle::Danger),
        ];
        c
    }

    fn n(v: &Value) -> usize {
        v.as_str().map(|s| s.chars().count()).unwrap_or(0)
    }

    /// Every Discord limit on a message body.
    fn check_limits(v: &Value) {
        assert!(n(&v["content"]) <= CONTENT, "content {}", n(&v["content"]));
        let embeds = v["embeds"].as_array().unwrap();
        assert!(embeds.len() <= EMBEDS);
        let total: usize = embeds.iter().map(embed_len).sum();
        assert!(total <= EMBEDS_TOTAL, "embeds total {total}");
        for e in embeds {
            assert!(n(&e["title"]) <= EMBED_TITLE);
            assert!(n(&e["description"]) <= EMBED_DESCRIPTION);
            assert!(n(&e["footer"]["text"]) <= FOOTER);
            assert!(
                !e["title"].is_null() || !e["description"].is_null() || !e["fields"].is_null(),
                "an empty embed: {e}"
            );
            if let Some(d) = e["description"].as_str() {
                assert_eq!(d.matches("```").count() % 2, 0, "an open code block: {d}");
            }
            if let Some(f) = e["fields"].as_array() {
                assert!(f.len() <= EMBED_FIELDS);
                for f in f {
                    let (name, value) = (n(&f["name"]), n(&f["value"]));
                    assert!(name <= FIELD_NAME && name > 0);
                    assert!(value <= FIELD_VALUE && value > 0);
                    let text = f["value"].as_str().unwrap();
                    assert_eq!(text.matches("```").count() % 2, 0, "open code: {text}");
                }
            }
        }
        let rows = v["components"].as_array().unwrap();
        assert!(rows.len() <= ROWS);
        let mut ids = Vec::new();
        for r in rows {
            assert_eq!(r["type"], 1);
            let b = r["components"].as_array().unwrap();
            assert!(!b.is_empty() && b.len() <= BUTTONS_PER_ROW);
            for b in b {
                assert_eq!(b["type"], 2);
                assert!(n(&b["label"]) <= BUTTON_LABEL && n(&b["label"]) > 0);
                let id = b["custom_id"].as_str().unwrap();
                assert!(!id.is_empty() && id.chars().count() <= CUSTOM_ID);
                assert!(!ids.contains(&id.to_string()), "duplicate custom_id {id}");
                ids.push(id.to_string());
            }
        }
        // serenity reads the embeds and rows back.
        let _: Vec<serenity::model::channel::Embed> =
            serde_json::from_value(v["embeds"].clone()).expect("serenity Embed");
    }

    #[test]
    fn colours_follow_the_state_then_the_tone() {
        let cases = [
            (CardState::Pending, AMBER),
            (CardState::Approved, BLUE),
            (CardState::Queued, BLUE),
            (CardState::Running, BLUE),
            (CardState::Succeeded, GREEN),
            (CardState::Failed, RED),
            (CardState::Interrupted, RED),
            (CardState::Denied, RED),
            (CardState::Expired, RED),
            (CardState::Cancelled, GREY),
        ];
        for (state, want) in cases {
            let mut c = Card::new("t", state.style());
            c.state = Some(state);
            let v = message(&Reply::card(c));
            assert_eq!(v["embeds"][0]["color"], want, "{state:?}");
            let title = v["embeds"][0]["title"].as_str().unwrap();
            assert!(title.contains(&format!("[{}] t", state.label())), "{title}");
        }
        for (style, want) in [
            (Style::Info, BLURPLE),
            (Style::Pending, AMBER),
            (Style::Success, GREEN),
            (Style::Warning, ORANGE),
            (Style::Danger, RED),
        ] {
            let v = message(&Reply::card(Card::new("t", style)));
            assert_eq!(v["embeds"][0]["color"], want, "{style:?}");
        }
    }

    #[test]
    fn a_request_card_is_one_embed_with_fields_votes_expiry_warnings_steps_and_buttons() {
        let v = message(&Reply::card(request_card()));
        check_limits(&v);
        assert_eq!(v["content"], "");
        assert!(v.get("flags").is_none(), "a card is public");
        let e = &v["embeds"][0];
        assert_eq!(v["embeds"].as_array().unwrap().len(), 1);
        assert_eq!(
            e["title"],
            "⏳ [pending] Request r123abc456: deploy 2 migrations"
        );
        let fields = e["fields"].as_array().unwrap();
        let get = |name: &str| {
            fields
                .iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("field {name} in {fields:?}"))
        };
        assert_eq!(get("Requested by")["value"], "<@300000000000000001>");
        assert_eq!(get("Requested by")["inline"], true);
        assert_eq!(get("Environment")["value"], "production");
        assert_eq!(get("Votes")["value"], "☑️ 1/2 approvals: bob approved");
        assert_eq!(
            fields.iter().filter(|f| f["name"] == "Votes").count(),
            1,
            "the Votes field is not repeated"
        );
        let exp = get("Expires")["value"].as_str().unwrap();
        assert!(exp.contains("<t:1764612000:R>"), "{exp}");
        assert!(exp.contains("2025-12-01 18:00 UTC"), "{exp}");
        let confirm = get("Before you click Approve")["value"].as_str().unwrap();
        assert!(confirm.contains("2 step(s) run as soon as"), "{confirm}");
        assert_eq!(v["allowed_mentions"]["parse"], json!([]));
        assert_eq!(
            v["allowed_mentions"]["users"],
            json!(["300000000000000001"])
        );

        let d = e["description"].as_str().unwrap();
        let danger = d.find("drops column").unwrap();
        let info = d.find("takes a minute").unwrap();
        assert!(danger < info, "danger first: {d}");
        assert!(d.contains("🚨 **Danger:** drops column \\`email\\`"), "{d}");
        assert!(
            d.contains("✅ 1. **backup**: pg\\_dump -Fc — succeeded `12 MB`"),
            "{d}"
        );
        assert!(d.contains("🔄 2. **migrate**: apply 2 migrations"), "{d}");

        let rows = v["components"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        let b = rows[0]["components"].as_array().unwrap();
        assert_eq!(
            b[0],
            json!({"type": 2, "style": 1, "label": "Approve", "custom_id": "approve:r123abc456"})
        );
        assert_eq!(
            b[1],
            json!({"type": 2, "style": 4, "label": "Deny", "custom_id": "deny:r123abc456"})
        );
    }

    #[test]
    fn a_requester_without_a_discord_account_is_named_and_not_mentioned() {
        let mut c = request_card();
        c.mentions[0].accounts = vec![(Platform::Slack, "U0ALICE".into())];
        let v = message(&Reply::card(c));
        let all = v.to_string();
        assert!(!all.contains("<@"), "{all}");
        assert_eq!(v["allowed_mentions"]["users"], json!([]));
        let f = &v["embeds"][0]["fields"][0];
        assert_eq!(
            (f["name"].as_str(), f["value"].as_str()),
            (Some("Requested by"), Some("alice"))
        );
        // A malformed id is not turned into a mention either.
        let mut c = request_card();
        c.mentions[0].accounts = vec![(Platform::Discord, "<@&1> x".into())];
        assert!(!message(&Reply::card(c)).to_string().contains("<@"));
    }

    #[test]
    fn error_progress_and_recorded_output_render_as_code_and_text() {
        let mut c = Card::new("Operation o1: rollback", Style::Danger);
        c.state = Some(CardState::Failed);
        c.error = Some("pg_restore: error: ```boom``` @everyone".into());
        c.progress = Some("12 MB written, 3 s".into());
        c.steps = vec![Step {
            name: "restore".into(),
            detail: "pg_restore".into(),
            state: StepState::Failed,
            recorded: Some(("failed".into(), "line one\nline two".into())),
        }];
        let v = message(&Reply::card(c));
        check_limits(&v);
        let e = &v["embeds"][0];
        assert_eq!(e["color"], RED);
        let err = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "❌ Error")
            .unwrap()["value"]
            .as_str()
            .unwrap();
        assert_eq!(err, "```\npg_restore: error: ˋˋˋboomˋˋˋ @everyone\n```");
        assert!(v.to_string().contains("⏳ 12 MB written, 3 s"));
        let d = e["description"].as_str().unwrap();
        assert!(
            d.contains("❌ 1. **restore**: pg\\_restore — failed \n```\nline one\nline two\n```"),
            "{d}"
        );
        // Pings are off whatever the text says.
        assert_eq!(v["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn text_is_content_escaped_and_ephemeral_sets_the_flag() {
        let v = message(&Reply::ephemeral("not allowed: *you* are @everyone <@1>"));
        assert_eq!(v["flags"], EPHEMERAL);
        assert_eq!(v["embeds"], json!([]));
        assert_eq!(v["components"], json!([]));
        assert_eq!(
            v["content"],
            "not allowed: \\*you\\* are @\u{200b}everyone \\<@1\\>"
        );
        assert!(edit(&Reply::ephemeral("x")).get("flags").is_none());
        let v = message(&Reply::public("hello"));
        assert!(v.get("flags").is_none());
        assert_eq!(v["content"], "hello");
        assert_eq!(message(&Reply::public("  "))["content"], "dualkey");
        // Reports are ephemeral by default.
        let r = message(&Reply::report(Report {
            title: "Status".into(),
            sections: vec![],
            buttons: vec![],
        }));
        assert_eq!(r["flags"], EPHEMERAL);
        assert_eq!(r["embeds"][0]["title"], "Status");
    }

    #[test]
    fn escape_neutralises_markdown_mentions_and_pings() {
        assert_eq!(escape("a*b_c~d`e|f>g"), "a\\*b\\_c\\~d\\`e\\|f\\>g");
        assert_eq!(escape("# head\n- item\nx-y"), "\\# head\n\\- item\nx-y");
        assert_eq!(escape("[x](http://e)"), "\\[x\\](http://e)");
        assert_eq!(escape("@here @everyone"), "@\u{200b}here @\u{200b}everyone");
        assert_eq!(escape("<#123> <@&4>"), "\\<\\#123\\> \\<@&4\\>");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("20240101_add_users"), "20240101\\_add\\_users");
    }

    #[test]
    fn truncation_keeps_characters_and_escapes_whole() {
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hé", 3), "hé");
        // Cutting right after an escaping backslash drops it.
        assert_eq!(truncate("ab\\*cd", 4), "ab…");
        assert_eq!(truncate("a\\\\bc", 4), "a\\\\…");
        let long = escape(&"*".repeat(3000));
        let t = text_content(&"*".repeat(3000));
        assert!(t.chars().count() <= CONTENT);
        assert!(t.contains("cut here"), "{t}");
        assert!(long.starts_with("\\*"));
    }

    #[test]
    fn many_buttons_fill_five_rows_of_five_and_say_what_is_left_out() {
        let mut r = Report {
            title: "Approvals".into(),
            sections: vec![Section {
                heading: Some("Open".into()),
                lines: vec!["30 requests".into()],
                ..Default::default()
            }],
            buttons: (0..30)
                .map(|i| Button::new(format!("approve:r{i}"), "Approve", ButtonStyle::Primary))
                .collect(),
        };
        r.buttons.push(Button::new(
            "approve:r0",
            "Approve again",
            ButtonStyle::Primary,
        ));
        r.buttons
            .insert(0, Button::new("x".repeat(150), "", ButtonStyle::Default));
        let v = message(&Reply::report(r));
        check_limits(&v);
        let rows = v["components"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert!(rows
            .iter()
            .all(|r| r["components"].as_array().unwrap().len() == 5));
        let first = &rows[0]["components"][0];
        assert_eq!(first["custom_id"].as_str().unwrap().len(), CUSTOM_ID);
        assert_eq!(first["style"], 2);
        assert_eq!(rows[4]["components"][4]["custom_id"], "approve:r23");
        assert!(v.to_string().contains("6 more button(s) not shown"), "{v}");
    }

    #[test]
    fn a_report_is_an_embed_per_section_with_tables_as_code_blocks() {
        let r = Report {
            title: "Backups (production)".into(),
            sections: vec![
                Section {
                    heading: Some("Catalog".into()),
                    fields: vec![("Kept".into(), "3".into())],
                    lines: vec!["newest first".into()],
                    table: Some(Table {
                        columns: vec!["File".into(), "Taken".into(), "Size".into()],
                        rows: vec![
                            vec!["b1.dump".into(), "2026-12-01".into(), "12 MB".into()],
                            vec!["b`2.dump".into(), "2026-11-30".into(), "11 MB".into()],
                        ],
                    }),
                    warnings: vec![Warning::caution("newest backup is old")],
                },
                Section {
                    heading: Some("Other".into()),
                    fields: vec![("Env".into(), "production".into())],
                    ..Default::default()
                },
            ],
            buttons: vec![],
        };
        let v = message(&Reply::report(r));
        check_limits(&v);
        let e = v["embeds"].as_array().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["title"], "Backups (production) — Catalog");
        assert_eq!(e[0]["color"], ORANGE, "a caution colours its section");
        assert_eq!(e[1]["title"], "Other");
        assert_eq!(e[1]["color"], BLURPLE);
        assert_eq!(
            e[0]["fields"][0],
            json!({"name": "Kept", "value": "3", "inline": true})
        );
        let d = e[0]["description"].as_str().unwrap();
        assert!(
            d.contains("```\nFile      Taken       Size\nb1.dump   2026-12-01  12 MB\nbˋ2.dump  2026-11-30  11 MB\n```"),
            "{d}"
        );
        assert!(d.contains("newest backup is old"));
    }

    #[test]
    fn a_huge_card_stays_within_every_limit_and_keeps_the_running_step_and_buttons() {
        let mut c = request_card();
        let long = "é*".repeat(3000);
        c.title = long.clone();
        c.steps = (0..200)
            .map(|i| Step {
                name: format!("step-{i}"),
                detail: long.clone(),
                state: if i < 150 {
                    StepState::Succeeded
                } else if i == 150 {
                    StepState::Running
                } else {
                    StepState::Planned
                },
                recorded: (i < 150).then(|| ("succeeded".into(), long.clone())),
            })
            .collect();
        c.lines = (0..100).map(|_| long.clone()).collect();
        c.fields = (0..40).map(|i| (format!("f{i}"), long.clone())).collect();
        c.warnings = (0..30).map(|_| Warning::danger(long.clone())).collect();
        c.error = Some(long.clone());
        c.progress = Some(long.clone());
        c.buttons[0].label = long.clone();
        c.buttons[0].confirm.as_mut().unwrap().text = long.clone();
        let v = message(&Reply::card(c));
        check_limits(&v);
        assert_eq!(
            v["components"][0]["components"].as_array().unwrap().len(),
            2
        );
        let steps = steps_md(
            &(0..400)
                .map(|i| Step {
                    name: format!("step-{i}"),
                    detail: "x".repeat(300),
                    state: if i < 150 {
                        StepState::Succeeded
                    } else if i == 150 {
                        StepState::Running
                    } else {
                        StepState::Planned
                    },
                    recorded: None,
                })
                .collect::<Vec<_>>(),
            STEPS_BUDGET,
        );
        assert!(steps.contains("151. **step-150**"), "{steps}");
        assert!(steps.contains("earlier step(s)"));
        assert!(steps.contains("more step(s)"));
        assert!(steps.chars().count() <= STEPS_BUDGET);
    }

    #[test]
    fn a_long_report_keeps_ten_embeds_and_six_thousand_characters() {
        let r = Report {
            title: "Status".into(),
            sections: (0..30)
                .map(|i| Section {
                    heading: Some(format!("Section {i}")),
                    lines: vec!["y".repeat(900)],
                    fields: vec![("k".into(), "v".into())],
                    ..Default::default()
                })
                .collect(),
            buttons: vec![],
        };
        let v = message(&Reply::report(r));
        check_limits(&v);
        let last = v["embeds"].as_array().unwrap().last().unwrap().clone();
        assert!(
            last["description"]
                .as_str()
                .unwrap()
                .contains("more section(s) not shown"),
            "{last}"
        );
    }

    #[test]
    fn the_body_reads_back_as_a_serenity_message() {
        // The shape the stand-in echoes: our body plus the fields Discord adds.
        let mut body = message(&Reply::card(request_card()));
        let extra = json!({
            "id": "1300000000000000001", "channel_id": "222",
            "author": {"id": "1", "username": "dualkey", "discriminator": "0", "avatar": null,
                       "global_name": null, "bot": true},
            "timestamp": "2026-12-01T20:00:00.000000+00:00", "edited_timestamp": null,
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": [], "pinned": false, "type": 0,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let m: serenity::model::channel::Message =
            serde_json::from_value(body).expect("serenity reads the message");
        assert_eq!(m.embeds.len(), 1);
        assert_eq!(m.components.len(), 1);
        assert_eq!(m.components[0].components.len(), 2);
        assert_eq!(m.embeds[0].colour.map(|c| c.0), Some(AMBER));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            "[*_~`|>#\\-@é\\\\\n a-z]{0,3000}",
            Just("`".repeat(5000)),
            Just("é".repeat(7000)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn limits_hold_for_any_card(
            title in arb_text(),
            text in arb_text(),
            n_fields in 0usize..40,
            n_steps in 0usize..60,
            n_buttons in 0usize..40,
            ephemeral in any::<bool>(),
        ) {
            let mut c = Card::new(title.clone(), Style::Warning);
            c.fields = (0..n_fields).map(|i| (format!("{i}{title}"), text.clone())).collect();
            c.steps = (0..n_steps)
                .map(|i| Step {
                    name: text.clone(),
                    detail: title.clone(),
                    state: if i % 3 == 0 { StepState::Succeeded } else { StepState::Planned },
                    recorded: (i % 2 == 0).then(|| ("succeeded".into(), text.clone())),
                })
                .collect();
            c.lines = vec![text.clone(); 3];
            c.warnings = vec![Warning::caution(text.clone())];
            c.error = Some(text.clone());
            c.progress = Some(title.clone());
            c.buttons = (0..n_buttons)
                .map(|i| Button::new(format!("b{i}:{title}"), text.clone(), ButtonStyle::Default))
                .collect();
            let mut reply = Reply::card(c);
            if ephemeral {
                reply.visibility = Visibility::Ephemeral;
            }
            let v = message(&reply);
            check_limits(&v);
            prop_assert_eq!(v.get("flags").is_some(), ephemeral);

            let r = Report {
                title: title.clone(),
                sections: (0..n_steps / 3)
                    .map(|_| Section {
                        heading: Some(title.clone()),
                        fields: vec![(title.clone(), text.clone()); n_fields % 30],
                        lines: vec![text.clone()],
                        table: Some(Table {
                            columns: vec![title.clone(), "b".into()],
                            rows: vec![vec![text.clone(), text.clone()]; 3],
                        }),
                        warnings: vec![Warning::danger(title.clone())],
                    })
                    .collect(),
                buttons: vec![],
            };
            check_limits(&message(&Reply::report(r)));
            check_limits(&message(&Reply::public(text.clone())));
        }
    }
}
