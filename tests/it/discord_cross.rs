//! Slack and Discord in one `serve`: a request made on Slack is voted on in Discord. The same
//! person on both platforms is one operator (the requester cannot approve her own request from
//! her other account); a different operator approves on Discord, the operation runs once, and
//! both platforms' copies of the card show the outcome.

use std::time::Duration;

use crate::discord_adapter::{
    answer_to, approvals_card, button_ids, click, eventually, nth_request, start, text_of, Setup,
    ALICE, APPROVALS, BOB, WAIT,
};
use crate::discord_standin::DiscordStandin;
use crate::slack_harness::{db_command, text_of as slack_text};
use crate::slack_standin::{form_encode, post_signed, SlackStandin};

const SLACK_SECRET: &str = "cross-signing-secret-0123";

/// A `[slack]` section in HTTP mode against `standin`.
fn slack_section(standin: &SlackStandin) -> String {
    std::env::set_var("DK_CROSS_SLACK_BOT", "xoxb-standin-bot");
    std::env::set_var("DK_CROSS_SLACK_SIGN", SLACK_SECRET);
    format!(
        r#"
[slack]
enabled = true
mode = "http"
api_base_url = "{}"
bot_token_env = "DK_CROSS_SLACK_BOT"
signing_secret_env = "DK_CROSS_SLACK_SIGN"
approvals_channel = "C0APPROVALS"
audit_channel = "C0AUDIT"
"#,
        standin.api_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_request_is_refused_to_its_requester_on_discord_and_approved_by_another_operator_there(
) {
    let slack = SlackStandin::start().await;
    let discord = DiscordStandin::start().await;
    let run = start(Setup {
        standin: &discord,
        mode: "gateway",
        tag: "CROSS",
        with_db: false,
        extra: slack_section(&slack),
    })
    .await;
    assert!(discord.wait_connections(1, WAIT).await, "Discord connected");

    // Alice asks on Slack.
    let body = form_encode(&db_command(&slack, "U0ALICE", "app stop", "31.41.59"));
    let r = post_signed(
        &format!("{}/slack/commands", run.base),
        SLACK_SECRET,
        &body,
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(r.status(), 200);
    let req = nth_request(&run, 1).await;
    assert_eq!(req.requester, "alice");
    let id = req.id.clone();

    // The card is on both platforms.
    eventually("the Slack card", WAIT, || {
        !slack.messages_in("C0APPROVALS").is_empty()
    })
    .await;
    let (card_id, card) = approvals_card(&discord).await;
    assert_eq!(
        button_ids(&card),
        [format!("approve:{id}"), format!("deny:{id}")]
    );

    // Alice, from her Discord account, approves her own request: refused, ephemerally.
    let approve = format!("approve:{id}");
    let alice = click(1_600_000_000_000_000_001, ALICE, &approve, &card);
    discord.send_interaction(alice).await;
    let (method, answer) = answer_to(&discord, 1_600_000_000_000_000_001).await;
    assert_eq!(method, "POST");
    assert_eq!(answer["flags"].as_u64().unwrap_or(0) & 64, 64, "{answer}");
    assert!(text_of(&answer).contains("Vote not counted"), "{answer}");
    assert!(run.core.store.votes(&id).await.unwrap().is_empty());
    let refused = run
        .audit()
        .await
        .into_iter()
        .find(|r| r.action == "vote.refused")
        .expect("the refusal is audited");
    assert_eq!(refused.operator.as_deref(), Some("alice"));
    assert_eq!(
        refused.account.as_deref(),
        Some("discord:300000000000000001")
    );

    // Bob approves on Discord: it runs once.
    let bob = click(1_600_000_000_000_000_002, BOB, &approve, &card);
    discord.send_interaction(bob).await;
    let (_, answer) = answer_to(&discord, 1_600_000_000_000_000_002).await;
    assert!(text_of(&answer).contains("Approved"), "{answer}");
    eventually("the app stop ran", WAIT, || run.marker().contains("stop")).await;

    // Both copies of the card show the outcome.
    eventually("the Slack card shows succeeded", WAIT, || {
        slack
            .messages_in("C0APPROVALS")
            .first()
            .is_some_and(|(_, b)| slack_text(b).contains("succeeded"))
    })
    .await;
    eventually("the Discord card shows succeeded", WAIT, || {
        discord
            .message(APPROVALS, card_id)
            .is_some_and(|m| text_of(&m).contains("[succeeded]"))
    })
    .await;
    assert_eq!(slack.messages_in("C0APPROVALS").len(), 1, "edited in place");

    // A second click by Bob (a redelivery, or a new click) runs nothing more.
    let again = click(1_600_000_000_000_000_003, BOB, &approve, &card);
    discord.send_interaction(again).await;
    answer_to(&discord, 1_600_000_000_000_000_003).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run.marker().matches("stop").count(), 1, "ran once");
    assert_eq!(run.core.store.votes(&id).await.unwrap().len(), 1);
    let votes = run.core.store.votes(&id).await.unwrap();
    assert_eq!(votes[0].account, "discord:300000000000000002");
    run.stop().await;
}
