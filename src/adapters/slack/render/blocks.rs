//! Block Kit building blocks: sections, context, header, field sections, buttons with their
//! confirm dialogs in actions blocks, and the cap at the blocks limit.

use slack_morphism::prelude::*;

use super::text::{escape, split_md, truncate, truncate_md};
use super::{
    ACTION_ID, BUTTONS_PER_ACTIONS, BUTTON_TEXT, BUTTON_VALUE, CONFIRM_BUTTON, CONFIRM_TEXT,
    CONFIRM_TITLE, FIELDS_PER_SECTION, FIELD_TEXT, HEADER_TEXT, MAX_BLOCKS, SECTION_TEXT,
};
use crate::core::reply::{Button, ButtonStyle};

pub(super) fn section(text: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(md!(truncate_md(&text, SECTION_TEXT)))
        .into()
}

/// Sections holding escaped mrkdwn, split at the section limit.
pub(super) fn sections(md: &str) -> Vec<SlackBlock> {
    split_md(md, SECTION_TEXT)
        .into_iter()
        .map(section)
        .collect()
}

pub(super) fn context(md: String) -> SlackBlock {
    let text: SlackBlockMarkDownText = SlackBlockMarkDownText::new(truncate_md(&md, SECTION_TEXT));
    SlackContextBlock::new(vec![text.into()]).into()
}

pub(super) fn header(text: &str) -> SlackBlock {
    let text = if text.trim().is_empty() {
        "dualkey"
    } else {
        text
    };
    let pt = SlackBlockPlainText::new(truncate(text, HEADER_TEXT)).with_emoji(true);
    SlackHeaderBlock::new(pt.into()).into()
}

/// A field: `*Label*\nvalue`, escaped, within the field limit.
pub(super) fn field(label: &str, value_md: &str) -> String {
    let label = escape(label);
    let s = if label.is_empty() {
        value_md.to_string()
    } else {
        format!("*{label}*\n{value_md}")
    };
    truncate_md(&s, FIELD_TEXT)
}

/// Sections of at most ten fields each.
pub(super) fn field_sections(fields: Vec<String>) -> Vec<SlackBlock> {
    fields
        .chunks(FIELDS_PER_SECTION)
        .map(|chunk| {
            let f: Vec<SlackBlockText> = chunk
                .iter()
                .map(|s| {
                    let s = if s.trim().is_empty() { "–" } else { s };
                    SlackBlockMarkDownText::new(truncate_md(s, FIELD_TEXT)).into()
                })
                .collect();
            SlackSectionBlock::new().with_fields(f).into()
        })
        .collect()
}

fn button(b: &Button) -> SlackActionBlockElement {
    let value = b.id.split_once(':').map(|(_, v)| v).unwrap_or(&b.id);
    let label = if b.label.trim().is_empty() {
        &b.id
    } else {
        &b.label
    };
    let mut e = SlackBlockButtonElement::new(truncate(label, BUTTON_TEXT).into())
        .with_action_id(truncate(&b.id, ACTION_ID).into())
        .with_value(truncate(value, BUTTON_VALUE));
    match b.style {
        ButtonStyle::Default => {}
        ButtonStyle::Primary => e = e.with_style(SlackBlockButtonStyle::Primary),
        ButtonStyle::Danger => e = e.with_style(SlackBlockButtonStyle::Danger),
    }
    if let Some(c) = &b.confirm {
        let text: SlackBlockPlainText = SlackBlockPlainText::new(truncate(&c.text, CONFIRM_TEXT));
        let mut item = SlackBlockConfirmItem::new(
            truncate(nonempty(&c.title, "Are you sure?"), CONFIRM_TITLE).into(),
            text.into(),
            truncate(nonempty(&c.confirm, "Yes"), CONFIRM_BUTTON).into(),
            truncate(nonempty(&c.deny, "Back"), CONFIRM_BUTTON).into(),
        );
        if b.style == ButtonStyle::Danger {
            item = item.with_style("danger".into());
        } else if b.style == ButtonStyle::Primary {
            item = item.with_style("primary".into());
        }
        e = e.with_confirm(item);
    }
    e.into()
}

fn nonempty<'a>(s: &'a str, or: &'a str) -> &'a str {
    if s.trim().is_empty() {
        or
    } else {
        s
    }
}

/// Actions blocks of at most 25 buttons each.
pub(super) fn actions(buttons: &[Button]) -> Vec<SlackBlock> {
    buttons
        .chunks(BUTTONS_PER_ACTIONS)
        .map(|chunk| SlackActionsBlock::new(chunk.iter().map(button).collect()).into())
        .collect()
}

/// Caps `content` so that it and `actions` fit in [`MAX_BLOCKS`], ending the content with a
/// context that says how much was left out; the buttons are always kept.
pub(super) fn cap(mut content: Vec<SlackBlock>, mut actions: Vec<SlackBlock>) -> Vec<SlackBlock> {
    actions.truncate(MAX_BLOCKS - 2);
    let room = MAX_BLOCKS - actions.len();
    if content.len() > room {
        let keep = room - 1;
        let more = content.len() - keep;
        content.truncate(keep);
        content.push(context(format!(
            "… {more} more block(s) not shown (Slack shows at most {MAX_BLOCKS}); \
             run the same command in `dualkey shell` or the CLI for all of it"
        )));
    }
    content.extend(actions);
    content
}

pub(super) fn text_blocks(t: &str) -> Vec<SlackBlock> {
    cap(sections(&escape(t)), vec![])
}
