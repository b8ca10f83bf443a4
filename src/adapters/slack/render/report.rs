//! A report as Block Kit: a header, then per section its fields, lines, table and warnings,
//! sections parted by dividers.

use slack_morphism::prelude::*;

use super::blocks::{actions, cap, field, field_sections, header, section, sections};
use super::card::warnings_md;
use super::text::{escape, truncate_md};
use super::{FIELDS_PER_SECTION, FIELD_TEXT, SECTION_TEXT};
use crate::core::reply::{Report, Section, Table};

/// A table as fields: two columns as a two-column grid (headings first, bold), wider tables as
/// one section per row (the first cell as its text, the others as `*Column*\nvalue` fields).
fn table_blocks(t: &Table) -> Vec<SlackBlock> {
    let n = t.columns.len();
    if n == 0 {
        return vec![];
    }
    if n <= 2 {
        let mut fields = Vec::new();
        let heads: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("*{}*", escape(c)))
            .collect();
        let mut rows = t.rows.iter().peekable();
        let width = n;
        // Ten fields per section: the headings start each section so every chunk reads alone.
        let per = FIELDS_PER_SECTION / width - 1;
        let mut out = Vec::new();
        while rows.peek().is_some() {
            fields.clear();
            fields.extend(heads.iter().cloned());
            for row in rows.by_ref().take(per) {
                for i in 0..width {
                    fields.push(escape(row.get(i).map(String::as_str).unwrap_or("")));
                }
            }
            out.extend(field_sections(fields.clone()));
        }
        return out;
    }
    t.rows
        .iter()
        .map(|row| {
            let first = row.first().map(String::as_str).unwrap_or("");
            let mut f: Vec<String> = t
                .columns
                .iter()
                .zip(row.iter())
                .skip(1)
                .map(|(c, v)| field(c, &escape(v)))
                .collect();
            if f.len() > FIELDS_PER_SECTION {
                let rest = f.split_off(FIELDS_PER_SECTION - 1).join("\n");
                f.push(truncate_md(&rest, FIELD_TEXT));
            }
            let text = format!("*{}*", escape(first));
            let fields: Vec<SlackBlockText> = f
                .into_iter()
                .map(|s| SlackBlockMarkDownText::new(s).into())
                .collect();
            let mut s = SlackSectionBlock::new().with_text(md!(truncate_md(&text, SECTION_TEXT)));
            if !fields.is_empty() {
                s = s.with_fields(fields);
            }
            s.into()
        })
        .collect()
}

fn report_section(s: &Section) -> Vec<SlackBlock> {
    let mut b = Vec::new();
    if let Some(h) = &s.heading {
        b.push(section(format!("*{}*", escape(h))));
    }
    b.extend(field_sections(
        s.fields.iter().map(|(k, v)| field(k, &escape(v))).collect(),
    ));
    if !s.lines.is_empty() {
        b.extend(sections(&escape(&s.lines.join("\n"))));
    }
    if let Some(t) = &s.table {
        b.extend(table_blocks(t));
    }
    if !s.warnings.is_empty() {
        b.extend(sections(&warnings_md(&s.warnings)));
    }
    b
}

pub(super) fn report_blocks(r: &Report) -> Vec<SlackBlock> {
    let mut b = vec![header(&r.title)];
    for (i, s) in r.sections.iter().enumerate() {
        if i > 0 {
            b.push(SlackDividerBlock::new().into());
        }
        b.extend(report_section(s));
    }
    cap(b, actions(&r.buttons))
}
