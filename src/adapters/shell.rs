//! The shell adapter: `dualkey shell --as OPERATOR` reads lines from stdin and prints replies
//! and cards as text, each button as `[BUTTON-ID]`, flushing every line. Input lines:
//!
//! - `/db COMMAND ...`: a slash command (the configured command name);
//! - `as NAME`: act as operator NAME from now on; `as slack:U0ALICE` or `as discord:3000...`
//!   acts as that platform account, to try the cross-platform two-person rule;
//! - `click BUTTON-ID`: click a button (`click approve:r3f9a1c2b7`);
//! - empty lines and `# comments` are ignored; a line that is not valid UTF-8 is refused with
//!   a message naming it, and the lines after it still run.
//!
//! On a terminal it first greets: who you act as and how to start. At end of input it waits
//! until the operations the input started have finished and their updates are printed, then
//! exits; [`run`] returns the ones that failed, so the exit status can say so. The shell does
//! not import the outbox or the worker: [`Settle`] is handed in by whoever starts it.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::core::operation::OperationState;

use crate::adapters::{Adapter, DeliveryError, Inbound, Outbound};
use crate::core::context::Core;
use crate::core::event::{Actor, ChannelRef, EventKind, InboundEvent, Platform};
use crate::core::reply::Reply;

/// The shell's channel id.
pub const SHELL_CHANNEL: &str = "shell";

/// Prints to stdout (or any writer), numbering messages so edits can name them.
#[derive(Clone)]
pub struct ShellOut {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    next_id: Arc<AtomicU64>,
}

impl ShellOut {
    /// Prints to the process's stdout.
    pub fn stdout() -> ShellOut {
        ShellOut::new(Box::new(std::io::stdout()))
    }

    /// Prints to `w`.
    pub fn new(w: Box<dyn Write + Send>) -> ShellOut {
        ShellOut {
            out: Arc::new(Mutex::new(w)),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Prints text and flushes.
    pub fn print(&self, text: &str) {
        let mut w = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(w, "{text}");
        let _ = w.flush();
    }

    fn next(&self) -> String {
        self.next_id.fetch_add(1, Ordering::SeqCst).to_string()
    }
}

#[async_trait]
impl Outbound for ShellOut {
    fn platform(&self) -> Platform {
        Platform::Shell
    }

    async fn post(&self, _channel: &str, reply: &Reply) -> Result<String, DeliveryError> {
        let id = self.next();
        self.print(&reply.to_text());
        Ok(id)
    }

    async fn edit(
        &self,
        _channel: &str,
        message_id: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.print(&format!(
            "(update of message {message_id})\n{}",
            reply.to_text()
        ));
        Ok(())
    }

    async fn ephemeral(
        &self,
        _channel: &str,
        _user: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        self.print(&reply.to_text());
        Ok(())
    }

    async fn respond(&self, _ev: &InboundEvent, reply: &Reply) -> Result<(), DeliveryError> {
        self.print(&reply.to_text());
        Ok(())
    }
}

/// The shell has no routes and no connection: its input loop is [`run`].
impl Adapter for ShellOut {}

/// Parses an `as` argument into an actor.
fn actor_for(core: &Core, who: &str) -> Result<Actor, String> {
    let (platform, account) = match who.split_once(':') {
        Some(("slack", a)) => (Platform::Slack, a),
        Some(("discord", a)) => (Platform::Discord, a),
        Some((p, _)) => {
            return Err(format!(
                "unknown platform `{p}`; use slack:ID, discord:ID or an operator name"
            ))
        }
        None => {
            if !core.directory.knows(who) {
                return Err(format!("`{who}` is not an operator in the config"));
            }
            (Platform::Shell, who)
        }
    };
    Ok(Actor {
        platform,
        account: account.to_string(),
        display: who.to_string(),
    })
}

/// The greeting printed when stdin is a terminal.
fn greeting(slash: &str, actor: &Actor) -> String {
    format!(
        "dualkey shell: you act as {}. Type `{slash} help` for the commands, `as NAME` to act as another operator, `click BUTTON-ID` to press a button shown as [BUTTON-ID]; ctrl-d quits.",
        actor.display
    )
}

/// An operation the input started that did not succeed: (operation id, what went wrong).
pub type FailedOperation = (String, String);

/// What the shell needs from the rest of the bot and does not import: delivering the posts a
/// line queued, and knowing when the work the input started is done. The caller that starts
/// the shell (`console::run`) wires the outbox and the worker in.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Delivers the shell's posts that are due through `out`, before the next line is read.
    async fn deliver_due(&self, core: &Core, out: &ShellOut) -> anyhow::Result<()>;

    /// Whether no operation is running or queued.
    async fn idle(&self, core: &Core) -> anyhow::Result<bool>;
}

/// What one input line asks for.
enum Line {
    /// Nothing to do: an empty line, a comment, or a line already answered.
    Skip,
    /// Act as another operator from now on.
    ActAs(Actor),
    /// Hand an event to the dispatcher.
    Event(EventKind),
}

/// Reads one input line and says what it asks for, printing the errors for lines that cannot
/// run. `as NAME` is resolved here; the caller switches the actor.
fn read_line(core: &Core, out: &ShellOut, slash: &str, line_no: u64, buf: &[u8]) -> Line {
    let Ok(line) = std::str::from_utf8(buf) else {
        out.print(&format!(
            "error: line {line_no} is not valid UTF-8 and was ignored; type commands as plain text"
        ));
        return Line::Skip;
    };
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Line::Skip;
    }
    if let Some(rest) = line.strip_prefix("as ") {
        match actor_for(core, rest.trim()) {
            Ok(a) => {
                out.print(&format!("(now acting as {})", a.display));
                return Line::ActAs(a);
            }
            Err(e) => out.print(&format!("error: {e}")),
        }
        Line::Skip
    } else if let Some(rest) = line.strip_prefix("click ") {
        Line::Event(EventKind::Action {
            action_id: rest.trim().to_string(),
        })
    } else if line == slash || line.starts_with(&format!("{slash} ")) {
        Line::Event(EventKind::Command {
            text: line[slash.len()..].trim().to_string(),
        })
    } else {
        let shown: String = line.chars().take(60).collect();
        out.print(&format!("error: `{shown}` is not understood; type `{slash} help`, `as NAME` or `click BUTTON-ID`"));
        Line::Skip
    }
}

/// Runs the shell loop over `input` until end of input, then waits for started work. With
/// `greet` (stdin is a terminal) it first says who you act as and how to start. Returns the
/// operations started during this session (requested or approved from this shell) that failed
/// or were interrupted. `settle` delivers what each line queued and says when work is idle.
pub async fn run<R: AsyncBufRead + Unpin>(
    core: Arc<Core>,
    out: ShellOut,
    start_as: &str,
    greet: bool,
    mut input: R,
    settle: &dyn Settle,
) -> anyhow::Result<Vec<FailedOperation>> {
    let mut actor = actor_for(&core, start_as).map_err(anyhow::Error::msg)?;
    let inbound = Inbound::new(
        core.clone(),
        vec![Arc::new(out.clone()) as Arc<dyn Outbound>],
    );
    let slash = core.slash().to_string();
    let channel = ChannelRef {
        platform: Platform::Shell,
        id: SHELL_CHANNEL.into(),
    };
    let session_start = core.clock.now_ms();
    if greet {
        out.print(&greeting(&slash, &actor));
    }
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        // Bytes, not `lines()`: one line that is not UTF-8 must not end the session.
        buf.clear();
        if input.read_until(b'\n', &mut buf).await? == 0 {
            break;
        }
        line_no += 1;
        let began = std::time::Instant::now();
        let kind = match read_line(&core, &out, &slash, line_no, &buf) {
            Line::Skip => continue,
            Line::ActAs(a) => {
                actor = a;
                continue;
            }
            Line::Event(kind) => kind,
        };
        let ev = InboundEvent::new(
            uuid::Uuid::new_v4().to_string(),
            actor.clone(),
            channel.clone(),
            kind,
        );
        // The same contract as every adapter; the shell has no deadline, so it waits for the
        // answer and prints the cards it queued before reading the next line.
        let submitted = inbound.submit(ev);
        // The shell's "ack": the line is read and handed over.
        crate::core::meter::ack("shell", "shell", began);
        submitted.0.await?;
        settle.deliver_due(&core, &out).await?;
    }
    wait_settled(&core, settle).await?;
    failed_since(&core, session_start).await
}

/// End of input: waits for the work the input started, and for its updates to print.
async fn wait_settled(core: &Core, settle: &dyn Settle) -> anyhow::Result<()> {
    loop {
        let idle = settle.idle(core).await?;
        let pending = core
            .store
            .outbox_due(Platform::Shell.as_str(), core.clock.now_ms(), 1)
            .await?;
        if idle && pending.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Operations created from the shell since `since` (ms) that failed or were interrupted.
/// Operations are created by the session's own commands and clicks; on a SQLite store no other
/// process can create any meanwhile (the store lock), on PostgreSQL another shell could.
async fn failed_since(core: &Core, since: i64) -> anyhow::Result<Vec<FailedOperation>> {
    let mut failed = Vec::new();
    for op in core.store.recent_operations(1000).await? {
        if op.created_at < since {
            continue;
        }
        let from_shell = serde_json::from_str::<ChannelRef>(&op.channel_json)
            .is_ok_and(|c| c.platform == Platform::Shell);
        let bad = [OperationState::Failed, OperationState::Interrupted]
            .iter()
            .any(|st| st.as_str() == op.state);
        if from_shell && bad {
            let why = op.error.clone().unwrap_or_else(|| op.state.to_string());
            failed.push((op.id, why));
        }
    }
    failed.reverse();
    Ok(failed)
}
