//! Running a command: the refusal of non-operators, parsing (text or named options), the role
//! check, the `command` audit event and the command's own `run`, counted by name and outcome.

use serde_json::json;

use crate::config::Role;
use crate::core::audit::NewAudit;
use crate::core::command;
use crate::core::context::{Core, UserError};
use crate::core::event::{Actor, InboundEvent};
use crate::core::identity::Operator;
use crate::core::invocation::Invocation;
use crate::core::meter;
use crate::core::operation::OperationKind;
use crate::core::ports::Responder;
use crate::core::reply::Reply;

/// A command as it arrived: a text line (Slack, the shell) or a subcommand with named options
/// (Discord).
#[derive(Clone, Copy)]
pub(super) enum CommandInput<'a> {
    /// Everything after the slash command.
    Text(&'a str),
    /// Subcommand name and named option values.
    Options {
        command: &'a str,
        options: &'a [(String, String)],
    },
}

impl CommandInput<'_> {
    /// The command's name in the command table (its first word), `unknown` when it names none:
    /// a bounded label for `dualkey_commands_total`.
    fn command_name(&self) -> &'static str {
        let first = match self {
            CommandInput::Text(text) => text.split_ascii_whitespace().next(),
            CommandInput::Options { command, .. } => command.split_ascii_whitespace().next(),
        };
        first.and_then(command::spec).map_or("unknown", |s| s.name)
    }

    /// `details` with [`CommandInput::audit_json`] added: what an audit event of the command
    /// records.
    fn with_input(&self, mut details: serde_json::Value) -> serde_json::Value {
        if let (Some(d), serde_json::Value::Object(input)) =
            (details.as_object_mut(), self.audit_json())
        {
            d.extend(input);
        }
        details
    }

    /// What the audit trail records of the command: `{"text": ...}`, or
    /// `{"command": ..., "options": {...}}` (each value cut at 200 characters).
    fn audit_json(&self) -> serde_json::Value {
        let cut = |s: &str| s.chars().take(200).collect::<String>();
        match self {
            CommandInput::Text(text) => json!({ "text": cut(text) }),
            CommandInput::Options { command, options } => {
                let mut named = serde_json::Map::new();
                for (k, v) in options.iter().take(25) {
                    named.entry(cut(k)).or_insert_with(|| json!(cut(v)));
                }
                json!({ "command": cut(command), "options": named })
            }
        }
    }
}

impl Core {
    pub(super) fn actor_audit(
        &self,
        actor: &Actor,
        who: &Operator,
        env: Option<&str>,
        action: &str,
        details: serde_json::Value,
    ) -> NewAudit {
        NewAudit {
            operator: who.id.clone(),
            account: Some(actor.qualified()),
            env: env.map(str::to_string),
            action: action.into(),
            details,
        }
    }

    /// Handles a command and counts it in `dualkey_commands_total` by name and outcome.
    pub(super) async fn on_command(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        input: CommandInput<'_>,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        let mut tally = (input.command_name(), meter::outcome::ERROR);
        let r = self.run_command(ev, who, input, out, &mut tally).await;
        let outcome = match &r {
            Ok(()) => tally.1,
            Err(e) if e.downcast_ref::<UserError>().is_some() => meter::outcome::DECLINED,
            Err(_) => meter::outcome::ERROR,
        };
        meter::command(tally.0, outcome);
        r
    }

    /// [`Core::on_command`] without the count: `tally` gets the command's name once known and
    /// the outcome of a command that returns `Ok`.
    async fn run_command(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        input: CommandInput<'_>,
        out: &dyn Responder,
        tally: &mut (&'static str, &'static str),
    ) -> anyhow::Result<()> {
        if who.roles.is_empty() {
            self.decline(
                ev,
                who,
                "command.refused",
                input.with_input(json!({"reason": "not an operator"})),
                format!(
                    "You are not allowed to use dualkey. Ask an admin to add your account ({}) to [[operators]] in the config.",
                    ev.actor.qualified()
                ),
                out,
            )
            .await?;
            tally.1 = meter::outcome::REFUSED;
            return Ok(());
        }
        let (spec, cmd) = match self.parse_input(input) {
            Ok(p) => p,
            Err(e) => {
                *tally = (
                    e.command.map_or(tally.0, |c| c.name),
                    meter::outcome::REJECTED,
                );
                let details = input.with_input(json!({"error": e.message}));
                let answer = e.render(self.slash());
                return self
                    .decline(ev, who, "command.rejected", details, answer, out)
                    .await;
            }
        };
        // Asking for any operation needs the operator role, whatever the command's own role.
        let needs = if cmd.operation().is_some() {
            Role::Operator
        } else {
            spec.role
        };
        tally.0 = spec.name;
        if !who.can(needs) {
            tally.1 = meter::outcome::REFUSED;
            let details = input.with_input(json!({"reason": format!("needs the {needs:?} role")}));
            let answer = format!(
                "`{}` needs the {} role, which you do not have.",
                spec.name,
                format!("{needs:?}").to_lowercase()
            );
            return self
                .decline(ev, who, "command.refused", details, answer, out)
                .await;
        }
        self.audit(self.actor_audit(&ev.actor, who, None, "command", input.with_input(json!({}))))
            .await?;
        tally.1 = meter::outcome::OK;
        cmd.run(&Invocation {
            core: self,
            ev,
            who,
            out,
        })
        .await
    }

    /// Parses a command in either form with the command's own parser.
    fn parse_input(
        &self,
        input: CommandInput<'_>,
    ) -> Result<(&'static command::CommandSpec, command::Command), command::ParseError> {
        match input {
            CommandInput::Text(text) => command::parse(text, &self.parse_ctx()),
            CommandInput::Options { command, options } => {
                command::parse_options(command, options, &self.parse_ctx())
            }
        }
    }

    /// A command that is not run: audits `action` with `details`, then tells the sender
    /// `answer`.
    async fn decline(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        action: &str,
        details: serde_json::Value,
        answer: String,
        out: &dyn Responder,
    ) -> anyhow::Result<()> {
        self.audit(self.actor_audit(&ev.actor, who, None, action, details))
            .await?;
        out.respond(Reply::ephemeral(answer)).await?;
        Ok(())
    }

    /// The audit event of a refused request.
    pub(super) fn refusal(
        &self,
        ev: &InboundEvent,
        who: &Operator,
        env: &str,
        kind: &OperationKind,
        reason: &str,
    ) -> NewAudit {
        self.actor_audit(
            &ev.actor,
            who,
            Some(env),
            "request.refused",
            json!({"kind": kind.name(), "reason": reason}),
        )
    }
}
