//! The parser shared by every command: the checks of words and named options that text and
//! structured commands both pass ([`check_options`]), [`parse`] and [`parse_options`], and the
//! small helpers command files use to name their words.

use super::{spec, Choices, Command, CommandSpec, OptionKind, ParseCtx, MAX_COMMAND_BYTES};

/// A rejected command: what was wrong and, when the command is known, its usage.
#[derive(Debug, Clone)]
pub struct ParseError {
    /// The command, when it was recognised.
    pub command: Option<&'static CommandSpec>,
    /// What was wrong.
    pub message: String,
}

impl ParseError {
    /// The text shown to the user; `slash` is the configured command (`/db`).
    pub fn render(&self, slash: &str) -> String {
        match self.command {
            Some(c) => format!("{}\nusage: {slash} {}", self.message, c.usage),
            None => format!(
                "{}\nTry `{slash} help` for the list of commands.",
                self.message
            ),
        }
    }
}

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '=')
}

/// Checks one word of a command: the safe character set and no `..`.
fn check_word(t: &str) -> Result<(), String> {
    if let Some(bad) = t.chars().find(|c| !allowed_char(*c)) {
        let shown: String = t.chars().take(40).collect();
        return Err(format!(
            "unexpected character `{}` in `{}`",
            bad.escape_default(),
            shown.escape_default()
        ));
    }
    if t.contains("..") {
        return Err(format!("`{t}` is not a valid name"));
    }
    Ok(())
}

/// Named option values that passed [`check_options`]: known names, no repeats, safe words,
/// fixed choices and integer ranges respected, every required option present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    values: Vec<(&'static str, String)>,
}

impl Options {
    /// The value of option `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required option (present after [`check_options`]).
    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("missing option `{name}`"))
    }
}

/// The one check of named option values, for text and structured commands alike.
pub fn check_options(spec: &CommandSpec, given: &[(String, String)]) -> Result<Options, String> {
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let total: usize = given.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > MAX_COMMAND_BYTES {
        return Err(format!(
            "command too long ({total} bytes; the limit is {MAX_COMMAND_BYTES})"
        ));
    }
    for (name, value) in given {
        let Some(o) = spec.options.iter().find(|o| o.name == name) else {
            let shown: String = name.chars().take(40).collect();
            let known: Vec<&str> = spec.options.iter().map(|o| o.name).collect();
            return Err(if known.is_empty() {
                format!("`{}` takes no options", spec.name)
            } else {
                format!(
                    "unknown option `{}` (options: {})",
                    shown.escape_default(),
                    known.join(", ")
                )
            });
        };
        if values.iter().any(|(n, _)| n == name) {
            return Err(format!("option `{name}` given twice"));
        }
        let words: Vec<&str> = value.split_ascii_whitespace().collect();
        for w in &words {
            check_word(w)?;
        }
        let value = match (o.kind, words.as_slice()) {
            (_, []) => return Err(format!("option `{name}` is empty")),
            (OptionKind::Words, w) => w.join(" "),
            (_, [one]) => one.to_string(),
            (_, [_, extra, ..]) => return Err(format!("unexpected argument `{extra}`")),
        };
        if let Choices::Fixed(choices) = o.choices {
            if !choices.contains(&value.as_str()) {
                return Err(format!("`{value}` is not {}", or_list(choices)));
            }
        }
        if o.kind == OptionKind::Integer {
            let (lo, hi) = o.range.unwrap_or((i64::MIN, i64::MAX));
            match value.parse::<i64>() {
                Ok(n) if (lo..=hi).contains(&n) => {}
                _ if o.range.is_some() => {
                    return Err(format!("`{value}` is not a number from {lo} to {hi}"))
                }
                _ => return Err(format!("`{value}` is not a number")),
            }
        }
        values.push((o.name, value));
    }
    if let Some(o) = spec
        .options
        .iter()
        .find(|o| o.required && !values.iter().any(|(n, _)| *n == o.name))
    {
        return Err(format!("missing option `{}`: {}", o.name, o.description));
    }
    Ok(Options { values })
}

/// `a, b or c`.
fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Checks named options and builds the command: the common tail of both parsers.
fn build(
    spec: &'static CommandSpec,
    given: &[(String, String)],
    ctx: &ParseCtx,
) -> Result<Command, String> {
    let opts = check_options(spec, given)?;
    (spec.from_options)(&opts, ctx)
}

/// Splits and checks the text after the slash command; never panics.
pub fn parse(text: &str, ctx: &ParseCtx) -> Result<(&'static CommandSpec, Command), ParseError> {
    let err = |command, message: String| ParseError { command, message };
    if text.len() > MAX_COMMAND_BYTES {
        return Err(err(
            None,
            format!(
                "command too long ({} bytes; the limit is {MAX_COMMAND_BYTES})",
                text.len()
            ),
        ));
    }
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let Some((&name, args)) = tokens.split_first() else {
        return Err(err(None, "no command given".into()));
    };
    let spec = lookup(name).map_err(|m| err(None, m))?;
    for t in args {
        check_word(t).map_err(|m| err(Some(spec), m))?;
    }
    (spec.words)(args, ctx)
        .and_then(|given| build(spec, &given, ctx))
        .map(|c| (spec, c))
        .map_err(|m| err(Some(spec), m))
}

/// Checks a structured command (Discord's subcommand and typed options) and builds it, by name:
/// the values are never joined into a text line. Same checks and errors as [`parse`].
pub fn parse_options(
    name: &str,
    options: &[(String, String)],
    ctx: &ParseCtx,
) -> Result<(&'static CommandSpec, Command), ParseError> {
    let spec = lookup(name).map_err(|message| ParseError {
        command: None,
        message,
    })?;
    build(spec, options, ctx)
        .map(|c| (spec, c))
        .map_err(|message| ParseError {
            command: Some(spec),
            message,
        })
}

fn lookup(name: &str) -> Result<&'static CommandSpec, String> {
    spec(name).ok_or_else(|| {
        let shown: String = name.chars().take(40).collect();
        format!("unknown command `{}`", shown.escape_default())
    })
}

/// Names `[ENV]` and nothing else (the text form of commands whose only option is `env`).
pub(crate) fn env_words(args: &[&str], _ctx: &ParseCtx) -> Result<Vec<(String, String)>, String> {
    no_more(args.get(1..).unwrap_or_default())?;
    Ok(named(&[("env", args.first().copied())]))
}

/// The named values that are present.
pub(crate) fn named(pairs: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter_map(|(n, v)| v.map(|v| (n.to_string(), v.to_string())))
        .collect()
}

/// Edit distance between two short strings (for "did you mean").
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Fails when arguments are left over.
pub(crate) fn no_more(rest: &[&str]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(t) => Err(format!("unexpected argument `{t}`")),
    }
}
