//! A report as Discord embeds: one embed per section, tables as monospace code blocks, the
//! colour by the most serious warning, and the confirmation texts of its buttons.

use serde_json::Value;

use super::card::{confirm_fields, warnings_md};
use super::embed::{cap_fields, description, embed, field};
use super::text::{code_block, escape};
use super::{BLURPLE, ORANGE, RED};
use crate::core::reply::{table_text, Report, Section, Severity, Table, Warning};

fn table_md(t: &Table, max: usize) -> String {
    if t.columns.is_empty() {
        return String::new();
    }
    code_block(&table_text(t).join("\n"), max)
}

fn severity_colour(warnings: &[Warning]) -> Option<u32> {
    match warnings.iter().map(|w| w.severity).max()? {
        Severity::Danger => Some(RED),
        Severity::Caution => Some(ORANGE),
        Severity::Info => None,
    }
}

fn section_embed(title: &str, s: &Section) -> Value {
    let fields: Vec<Value> = s
        .fields
        .iter()
        .map(|(k, v)| field(&escape(k), &escape(v)))
        .collect();
    let mut parts = Vec::new();
    if !s.lines.is_empty() {
        parts.push(escape(&s.lines.join("\n")));
    }
    if let Some(t) = &s.table {
        parts.push(table_md(t, 3000));
    }
    if !s.warnings.is_empty() {
        parts.push(warnings_md(&s.warnings));
    }
    embed(
        title,
        description(parts),
        cap_fields(fields),
        severity_colour(&s.warnings).unwrap_or(BLURPLE),
    )
}

pub(super) fn report_embeds(r: &Report) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, s) in r.sections.iter().enumerate() {
        let heading = s.heading.as_deref().map(escape).unwrap_or_default();
        let title = if i == 0 {
            match (r.title.trim().is_empty(), heading.is_empty()) {
                (false, true) => r.title.clone(),
                (false, false) => format!("{} — {heading}", r.title),
                (true, _) => heading,
            }
        } else {
            heading
        };
        out.push(section_embed(&title, s));
    }
    if out.is_empty() {
        out.push(embed(
            if r.title.trim().is_empty() {
                "dualkey"
            } else {
                &r.title
            },
            String::new(),
            vec![],
            BLURPLE,
        ));
    }
    let confirms = confirm_fields(&r.buttons);
    if !confirms.is_empty() {
        out.push(embed("", String::new(), cap_fields(confirms), ORANGE));
    }
    out
}
