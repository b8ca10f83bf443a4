//! Buttons as Discord action rows of type-2 buttons whose `custom_id` is the button id.

use serde_json::{json, Value};

use super::text::{truncate, truncate_plain};
use super::{BUTTONS_PER_ROW, BUTTON_LABEL, CUSTOM_ID, ROWS};
use crate::core::reply::{Button, ButtonStyle};

fn button_style(s: ButtonStyle) -> u64 {
    match s {
        ButtonStyle::Primary => 1,
        ButtonStyle::Default => 2,
        ButtonStyle::Danger => 4,
    }
}

/// Action rows of at most 5 buttons, at most 5 rows; duplicate ids are dropped (Discord
/// refuses a message with two equal `custom_id`s). Returns the rows and how many buttons did
/// not fit.
pub(super) fn components(buttons: &[Button]) -> (Vec<Value>, usize) {
    let mut seen: Vec<String> = Vec::new();
    let mut list = Vec::new();
    for b in buttons {
        let id = truncate_plain(&b.id, CUSTOM_ID);
        if id.is_empty() || seen.contains(&id) {
            continue;
        }
        seen.push(id.clone());
        let label = if b.label.trim().is_empty() {
            &b.id
        } else {
            &b.label
        };
        list.push(json!({
            "type": 2,
            "style": button_style(b.style),
            "label": truncate(label, BUTTON_LABEL),
            "custom_id": id,
        }));
    }
    let max = BUTTONS_PER_ROW * ROWS;
    let left_out = list.len().saturating_sub(max);
    list.truncate(max);
    let rows = list
        .chunks(BUTTONS_PER_ROW)
        .map(|row| json!({"type": 1, "components": row}))
        .collect();
    (rows, left_out)
}
