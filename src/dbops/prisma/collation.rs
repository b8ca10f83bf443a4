//! The order Prisma sorts migration folders in: JavaScript `a.localeCompare(b)`, which is ICU's
//! root collation (the same under `LANG=C`, `C.UTF-8`, `en_US`, `de_DE`).
//!
//! This is an exact copy of that collation for ASCII names, which is what migration folders are
//! named in practice (`\d{14}_[a-z0-9_]+`), without pulling ICU data into the binary:
//!
//! * control characters (U+0000–U+0008, U+000E–U+001F, U+007F) are ignored;
//! * primary order: whitespace, then punctuation and symbols in ICU's order
//!   `_ - , ; : ! ? . ' " ( ) [ ] { } @ * / \ & # % ` ^ + < = > | ~ $`, then digits, then letters
//!   case-insensitively (so `1_a` < `10_a` and `a-b` < `a_b` is false: `_` sorts before `-`);
//! * then, for names equal at that level, lowercase before uppercase, position by position
//!   (`add` < `Add`, `aB` < `Ab`).
//!
//! The table was generated from Node 20's `localeCompare` and is checked against it by the test
//! `prisma_collation` when `node` is installed.
//!
//! **Documented divergence:** non-ASCII characters are placed after every ASCII character, by code
//! point, and accents/case of non-ASCII letters are not folded. ICU would interleave them (`é`
//! next to `e`). Names that collate equal are ordered bytewise here, where JavaScript's stable sort
//! would keep the (filesystem-dependent) `readdir` order.

use std::cmp::Ordering;

/// ASCII non-letter characters in ICU root primary order (whitespace, punctuation, symbols, digits).
const ICU_ASCII_ORDER: &[u8] = b"\t\n\x0b\x0c\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789";

/// (primary, tertiary) weight of one character; `None` for completely ignorable characters.
fn weight(c: char) -> Option<(u32, u8)> {
    let cp = c as u32;
    if cp < 0x80 {
        let b = cp as u8;
        if b.is_ascii_lowercase() {
            return Some((100 + u32::from(b - b'a'), 0));
        }
        if b.is_ascii_uppercase() {
            return Some((100 + u32::from(b - b'A'), 1));
        }
        return ICU_ASCII_ORDER
            .iter()
            .position(|&x| x == b)
            .map(|i| (1 + i as u32, 0));
    }
    Some((0x1000 + cp, 0))
}

/// Compares two migration names the way Prisma's `listMigrations` sorts them
/// (`a.localeCompare(b)`); see the module docs for the one documented divergence.
pub fn compare_migration_names(a: &str, b: &str) -> Ordering {
    let wa: Vec<(u32, u8)> = a.chars().filter_map(weight).collect();
    let wb: Vec<(u32, u8)> = b.chars().filter_map(weight).collect();
    let primary = wa.iter().map(|w| w.0).cmp(wb.iter().map(|w| w.0));
    if primary != Ordering::Equal {
        return primary;
    }
    let tertiary = wa.iter().map(|w| w.1).cmp(wb.iter().map(|w| w.1));
    if tertiary != Ordering::Equal {
        return tertiary;
    }
    a.as_bytes().cmp(b.as_bytes())
}
