//! Block Kit rendering of neutral replies: a header, field sections, the step list as one
//! section (so `chat.update` changes it in place), warnings by severity, votes, the expiry as a
//! Slack date token, buttons in actions blocks with native confirm dialogs, and always a `text`
//! fallback for notifications and clients that cannot show blocks.
//!
//! Text that came from users or the database (migration names, errors, notes) is escaped for
//! mrkdwn (`&`, `<`, `>`), so a name like `<!channel>` cannot ping anyone; mentions and date
//! tokens built here are not. Every Block Kit limit is respected by truncating with `…` on a
//! character boundary.
//!
//! Here: the Block Kit limits and the message; `text` escapes and cuts, `blocks` builds blocks,
//! `card` and `report` render the two kinds of reply.

use slack_morphism::prelude::*;

use crate::core::reply::{Body, Reply};

mod blocks;
mod card;
mod report;
mod text;

use blocks::text_blocks;
use card::card_blocks;
use report::report_blocks;
use text::truncate_md;

pub use text::escape;

/// Most blocks Slack accepts in one message.
pub const MAX_BLOCKS: usize = 50;
/// Section (and context) text.
const SECTION_TEXT: usize = 3000;
/// The longest escaped text a digest of audit lines may fill: a few sections.
pub const DIGEST_TEXT: usize = 4 * SECTION_TEXT - 200;
/// One section field.
const FIELD_TEXT: usize = 2000;
/// Fields per section.
const FIELDS_PER_SECTION: usize = 10;
/// Header text.
const HEADER_TEXT: usize = 150;
/// Button label.
const BUTTON_TEXT: usize = 75;
/// Button `action_id`.
const ACTION_ID: usize = 255;
/// Button `value`.
const BUTTON_VALUE: usize = 2000;
/// Confirm dialog title.
const CONFIRM_TITLE: usize = 100;
/// Confirm dialog text.
const CONFIRM_TEXT: usize = 300;
/// Confirm dialog's confirm and deny labels.
const CONFIRM_BUTTON: usize = 30;
/// Elements in one actions block.
const BUTTONS_PER_ACTIONS: usize = 25;
/// The `text` fallback (Slack truncates far later; notifications show much less).
const FALLBACK_TEXT: usize = 3000;
/// One warning line.
const WARNING_LINE: usize = 1000;
/// One step line before the list is compacted.
const STEP_LINE: usize = 300;

/// A reply as a Slack message: Block Kit blocks plus the `text` fallback, which is never empty.
pub fn message(reply: &Reply) -> SlackMessageContent {
    let (blocks, fallback) = match &reply.body {
        Body::Text(t) => (text_blocks(t), t.clone()),
        Body::Card(c) => (card_blocks(c), reply.summary()),
        Body::Report(r) => (report_blocks(r), reply.summary()),
    };
    let fallback = if fallback.trim().is_empty() {
        "dualkey".to_string()
    } else {
        truncate_md(&escape(&fallback), FALLBACK_TEXT)
    };
    let content = SlackMessageContent::new().with_text(fallback);
    if blocks.is_empty() {
        content
    } else {
        content.with_blocks(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::text::{split_md, truncate};
    use super::*;
    use crate::core::event::Platform;
    use crate::core::reply::{
        Button, ButtonStyle, Card, CardState, Report, Section, Step, StepState, Style, Table,
    };
    use crate::core::reply::{Confirm, Mention, Votes, Warning};
    use serde_json::Value;

    fn json(reply: &Reply) -> Value {
        serde_json::to_value(message(reply)).unwrap()
    }

    fn blocks(v: &Value) -> &Vec<Value> {
        v["blocks"].as_array().expect("blocks")
    }

    /// Every text in the message, with the limit that applies to it.
    fn check_limits(v: &Value) {
        let bl = blocks(v);
        assert!(bl.len() <= MAX_BLOCKS, "{} blocks", bl.len());
        let n = |s: &Value| s.as_str().unwrap().chars().count();
        for b in bl {
            match b["type"].as_str().unwrap() {
                "header" => assert!(n(&b["text"]["text"]) <= HEADER_TEXT),
                "section" => {
                    if !b["text"].is_null() {
                        let len = n(&b["text"]["text"]);
                        assert!(len <= SECTION_TEXT && len > 0, "section {len}");
                    }
                    if let Some(f) = b["fields"].as_array() {
                        assert!(f.len() <= FIELDS_PER_SECTION);
                        for f in f {
                            assert!(n(&f["text"]) <= FIELD_TEXT);
                        }
                    }
                }
                "context" => {
                    for e in b["elements"].as_array().unwrap() {
                        assert!(n(&e["text"]) <= SECTION_TEXT);
                    }
                }
                "actions" => {
                    let e = b["elements"].as_array().unwrap();
                    assert!(e.len() <= BUTTONS_PER_ACTIONS);
                    for e in e {
                        assert!(n(&e["text"]["text"]) <= BUTTON_TEXT);
                        assert!(n(&e["action_id"]) <= ACTION_ID);
                        assert!(n(&e["value"]) <= BUTTON_VALUE);
                    }
                }
                "divider" => {}
                other => panic!("unexpected block {other}"),
            }
        }
        assert!(!v["text"].as_str().unwrap().trim().is_empty());
    }

    fn request_card() -> Card {
        let mut c = Card::new("Request r123abc456: deploy 2 migrations", Style::Pending);
        c.state = Some(CardState::Pending);
        c.fields = vec![
            ("Requested by".into(), "alice (U0ALICE)".into()),
            ("Environment".into(), "production".into()),
            ("Votes".into(), "bob approved".into()),
        ];
        c.votes = Some(Votes {
            approvals: 1,
            required: 1,
            cast: vec![("bob".into(), "approved".into())],
        });
        c.expires_at_ms = Some(1_764_612_000_000);
        c.mentions = vec![Mention {
            role: "requester".into(),
            operator: "alice".into(),
            accounts: vec![(Platform::Slack, "U0ALICE".into())],
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

    #[test]
    fn approve_and_deny_buttons_carry_id_value_style_and_confirm() {
        let v = json(&Reply::card(request_card()));
        check_limits(&v);
        let actions = blocks(&v)
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("actions block");
        let e = actions["elements"].as_array().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["type"], "button");
        assert_eq!(e[0]["action_id"], "approve:r123abc456");
        assert_eq!(e[0]["value"], "r123abc456");
        assert_eq!(e[0]["style"], "primary");
        assert_eq!(e[0]["text"]["text"], "Approve");
        assert_eq!(e[0]["confirm"]["title"]["text"], "Approve and run?");
        assert_eq!(e[0]["confirm"]["confirm"]["text"], "Approve");
        assert_eq!(e[0]["confirm"]["deny"]["text"], "Back");
        assert!(e[0]["confirm"]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("2 step(s)"));
        assert_eq!(e[1]["action_id"], "deny:r123abc456");
        assert_eq!(e[1]["value"], "r123abc456");
        assert_eq!(e[1]["style"], "danger");
        assert!(e[1]["confirm"].is_null());
        // The buttons are the last block.
        assert_eq!(blocks(&v).last().unwrap()["type"], "actions");
    }

    #[test]
    fn a_request_card_shows_state_mention_votes_expiry_warnings_and_steps() {
        let v = json(&Reply::card(request_card()));
        let all = v.to_string();
        let head = &blocks(&v)[0];
        assert_eq!(head["type"], "header");
        let h = head["text"]["text"].as_str().unwrap();
        assert!(
            h.starts_with(":hourglass_flowing_sand: [pending] Request r123abc456"),
            "{h}"
        );
        assert!(all.contains("*Requested by*\\n<@U0ALICE>"), "{all}");
        assert!(all.contains("1/1 approvals: bob approved"), "{all}");
        assert!(
            all.contains("<!date^1764612000^{date_short_pretty} {time}|2025-12-01 18:00 UTC>"),
            "{all}"
        );
        // Danger first.
        let danger = all.find("drops column").unwrap();
        let info = all.find("takes a minute").unwrap();
        assert!(danger < info);
        assert!(all.contains(":rotating_light:"));
        let steps = blocks(&v)
            .iter()
            .find(|b| b["block_id"] == "steps")
            .expect("one steps section");
        let s = steps["text"]["text"].as_str().unwrap();
        assert!(
            s.contains(":white_check_mark: 1. *backup*: pg_dump -Fc — succeeded (12 MB)"),
            "{s}"
        );
        assert!(s.contains(":arrows_counterclockwise: 2. *migrate*"), "{s}");
        assert_eq!(
            v["text"].as_str().unwrap(),
            "[pending] Request r123abc456: deploy 2 migrations"
        );
        // The "Votes" field is not repeated next to the vote line.
        assert!(!all.contains("*Votes*"), "{all}");
    }

    #[test]
    fn a_requester_without_a_slack_account_is_named() {
        let mut c = request_card();
        c.mentions[0].accounts = vec![(Platform::Discord, "300".into())];
        let all = json(&Reply::card(c)).to_string();
        assert!(all.contains("*Requested by*\\nalice"), "{all}");
        assert!(!all.contains("<@"), "{all}");
    }

    #[test]
    fn fallback_text_is_never_empty() {
        for r in [
            Reply::ephemeral(""),
            Reply::public("   \n"),
            Reply::card(Card::new("", Style::Info)),
            Reply::report(Report {
                title: String::new(),
                sections: vec![],
                buttons: vec![],
            }),
        ] {
            let v = json(&r);
            assert!(!v["text"].as_str().unwrap().trim().is_empty(), "{v}");
            if let Some(b) = v["blocks"].as_array() {
                check_limits(&v);
                assert!(!b.is_empty());
            }
        }
        let v = json(&Reply::ephemeral("line one\nline two"));
        assert_eq!(v["text"], "line one\nline two");
        assert_eq!(blocks(&v)[0]["text"]["type"], "mrkdwn");
    }

    #[test]
    fn a_huge_card_stays_within_every_limit() {
        let mut c = request_card();
        let long = "é".repeat(5000);
        c.title = long.clone();
        c.steps = steps_150_done(200, &long);
        c.lines = (0..100).map(|_| long.clone()).collect();
        c.fields = (0..40).map(|i| (format!("f{i}"), long.clone())).collect();
        c.warnings = (0..30).map(|_| Warning::danger(long.clone())).collect();
        c.error = Some(long.clone());
        c.progress = Some(long.clone());
        c.buttons[0].label = long.clone();
        c.buttons[0].confirm.as_mut().unwrap().title = long.clone();
        c.buttons[0].confirm.as_mut().unwrap().text = long.clone();
        let v = json(&Reply::card(c));
        check_limits(&v);
        let confirm = &blocks(&v).last().unwrap()["elements"][0]["confirm"];
        assert!(confirm["title"]["text"].as_str().unwrap().chars().count() <= CONFIRM_TITLE);
        assert!(confirm["text"]["text"].as_str().unwrap().chars().count() <= CONFIRM_TEXT);
        // Buttons survive the cap, and the cut is said.
        assert_eq!(blocks(&v).last().unwrap()["type"], "actions");
        assert!(v.to_string().contains("more block(s) not shown"));
        // The step list shows the running step even though it is step 151.
        let steps = render_steps_only(200);
        assert!(steps.contains("151. *step-150*"), "{steps}");
        assert!(steps.chars().count() <= SECTION_TEXT);
        assert!(steps.contains("earlier step(s)"));
    }

    /// `n` steps with `detail`: the first 150 succeeded (with `detail` as output), the 151st
    /// running, the rest planned.
    fn steps_150_done(n: usize, detail: &str) -> Vec<Step> {
        (0..n)
            .map(|i| Step {
                name: format!("step-{i}"),
                detail: detail.to_string(),
                state: if i < 150 {
                    StepState::Succeeded
                } else if i == 150 {
                    StepState::Running
                } else {
                    StepState::Planned
                },
                recorded: (i < 150).then(|| ("succeeded".into(), detail.to_string())),
            })
            .collect()
    }

    fn render_steps_only(n: usize) -> String {
        let steps = steps_150_done(n, &"x".repeat(5000));
        let mut c = Card::new("t", Style::Pending);
        c.steps = steps;
        let v = json(&Reply::card(c));
        blocks(&v)
            .iter()
            .find(|b| b["block_id"] == "steps")
            .unwrap()["text"]["text"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn user_text_cannot_ping_the_channel() {
        let mut c = Card::new("Request r1: deploy <!channel>", Style::Pending);
        c.fields = vec![("Migration".into(), "20240101_<!channel>_&_<@U0BOB>".into())];
        c.lines = vec!["<!here> hi".into()];
        c.steps = vec![Step {
            name: "<!everyone>".into(),
            detail: String::new(),
            state: StepState::Planned,
            recorded: None,
        }];
        let v = json(&Reply::card(c));
        let all = v.to_string();
        for bad in ["<!channel>", "<!here>", "<!everyone>", "<@U0BOB>"] {
            // The header is plain_text, which Slack never parses; every mrkdwn text is escaped.
            for b in blocks(&v).iter().filter(|b| b["type"] != "header") {
                assert!(!b.to_string().contains(bad), "{bad} in {b}");
            }
        }
        assert!(
            all.contains("20240101_&lt;!channel&gt;_&amp;_&lt;@U0BOB&gt;"),
            "{all}"
        );
        assert!(!v["text"].as_str().unwrap().contains("<!channel>"));
        let t = json(&Reply::public("hi <!channel>"));
        assert!(!t.to_string().contains("<!channel>"), "{t}");
    }

    #[test]
    fn truncation_never_splits_a_character_or_an_entity() {
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hé", 3), "hé");
        let s = escape("aaaa<b");
        assert_eq!(s, "aaaa&lt;b");
        // Cutting inside `&lt;` backs off to before it.
        assert_eq!(truncate_md(&s, 6), "aaaa…");
        for piece in split_md(&escape(&"<".repeat(3001)), SECTION_TEXT) {
            assert!(piece.chars().count() <= SECTION_TEXT);
            assert!(
                piece.starts_with("&lt;") && piece.ends_with("&lt;"),
                "{piece}"
            );
        }
    }

    #[test]
    fn a_report_table_renders_as_fields_not_a_code_block() {
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
                            vec!["b2.dump".into(), "2026-11-30".into(), "11 MB".into()],
                        ],
                    }),
                    warnings: vec![Warning::caution("newest backup is old")],
                },
                Section {
                    heading: Some("Two columns".into()),
                    table: Some(Table {
                        columns: vec!["Name".into(), "State".into()],
                        rows: (0..9)
                            .map(|i| vec![format!("m{i}"), "applied".into()])
                            .collect(),
                    }),
                    ..Default::default()
                },
            ],
            buttons: vec![],
        };
        let v = json(&Reply::report(r));
        check_limits(&v);
        let all = v.to_string();
        assert!(!all.contains("```"), "{all}");
        assert_eq!(blocks(&v)[0]["type"], "header");
        assert_eq!(blocks(&v)[0]["text"]["text"], "Backups (production)");
        assert!(all.contains("*Catalog*"));
        assert!(all.contains("*Kept*\\n3"));
        let row = blocks(&v)
            .iter()
            .find(|b| b["text"]["text"] == "*b1.dump*")
            .expect("a section per row");
        let f = row["fields"].as_array().unwrap();
        assert_eq!(f[0]["text"], "*Taken*\n2026-12-01");
        assert_eq!(f[1]["text"], "*Size*\n12 MB");
        // Two columns: a grid, headings first in each section; 9 rows at 4 a section need 3.
        let grids: Vec<&Value> = blocks(&v)
            .iter()
            .filter(|b| b["fields"][0]["text"] == "*Name*")
            .collect();
        assert_eq!(grids.len(), 3, "{all}");
        assert_eq!(grids[0]["fields"][2]["text"], "m0");
        assert_eq!(grids[0]["fields"][3]["text"], "applied");
        assert!(all.contains("newest backup is old"));
        assert_eq!(v["text"], "Backups (production)");
    }

    #[test]
    fn a_long_report_is_capped_with_a_note_and_keeps_its_buttons() {
        let r = Report {
            title: "Approvals".into(),
            sections: (0..80)
                .map(|i| Section {
                    heading: Some(format!("Request r{i}")),
                    fields: vec![("Env".into(), "production".into())],
                    ..Default::default()
                })
                .collect(),
            buttons: (0..30)
                .map(|i| Button::new(format!("approve:r{i}"), "Approve", ButtonStyle::Primary))
                .collect(),
        };
        let v = json(&Reply::report(r));
        check_limits(&v);
        let bl = blocks(&v);
        assert_eq!(bl.len(), MAX_BLOCKS);
        assert_eq!(bl[bl.len() - 1]["type"], "actions");
        assert_eq!(bl[bl.len() - 2]["type"], "actions");
        assert_eq!(bl[bl.len() - 3]["type"], "context");
        assert!(bl[bl.len() - 3]
            .to_string()
            .contains("more block(s) not shown"));
        assert_eq!(bl[bl.len() - 1]["elements"][4]["action_id"], "approve:r29");
    }
}
