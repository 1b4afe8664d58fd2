//! CSV exports of a query: a header row, the same rows as JSON (small
//! counts already merged or withheld), cells safe to open in a spreadsheet.

use super::request::Query;
use super::suppress::Answer;
use super::Report;

pub fn render(query: &Query, report: &Report) -> String {
    let mut out = String::new();
    let header = query
        .dimensions
        .iter()
        .map(|d| query.dimension_name(*d))
        .chain(query.metrics.iter().map(|m| m.name().to_string()));
    line(&mut out, header);
    for row in &report.rows {
        line(&mut out, cells(row, query.metrics.len()));
    }
    out
}

/// A row's cells as the CSV writes them: its dimension values, then its
/// metrics (empty where withheld). `tamis export` writes these too.
pub fn cells(row: &Answer, metrics: usize) -> impl Iterator<Item = String> + '_ {
    let metrics: Vec<String> = match &row.metrics {
        Some(m) => m.iter().map(|x| super::number(*x).to_string()).collect(),
        None => vec![String::new(); metrics],
    };
    row.dimensions.iter().cloned().chain(metrics)
}

/// One CSV line (CRLF, RFC 4180), every cell through [`cell`].
pub fn line(out: &mut String, cells: impl Iterator<Item = String>) {
    let cells: Vec<String> = cells.map(|c| cell(&c)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// Quotes a cell, and defuses what a spreadsheet would run as a formula
/// by prefixing `'`: a cell whose first character is a tab or carriage
/// return, or whose first character other than spaces is `=`, `+`, `-` or
/// `@` (spreadsheets skip leading spaces before a formula). Plain numbers
/// such as `-12` stay numbers.
pub fn cell(value: &str) -> String {
    let leading = value.trim_start_matches(' ');
    let formula = matches!(value.chars().next(), Some('\t' | '\r'))
        || matches!(
            leading.chars().next(),
            Some('=' | '+' | '-' | '@' | '\t' | '\r')
        );
    let defused = if formula && !is_plain_number(leading) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if defused.contains([',', '"', '\n', '\r']) || defused != defused.trim() {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

/// `-12`, `+3.5`: a sign, digits and at most one decimal point, nothing
/// else (not `-1+1`, not `-inf`).
fn is_plain_number(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: &str) {
        assert_eq!(cell(value), expected, "{value}");
    }

    #[test]
    fn cells_are_quoted_and_defused() {
        check("/page", "/page");
        check("a,b", "\"a,b\"");
        check("say \"hi\"", "\"say \"\"hi\"\"\"");
        check(
            "=HYPERLINK(\"http://x\")",
            "\"'=HYPERLINK(\"\"http://x\"\")\"",
        );
        check("+1+1", "'+1+1");
        check("@SUM(A1)", "'@SUM(A1)");
        check("-12", "-12");
        check("\tcmd", "'\tcmd");
        check("(other)", "(other)");
    }

    /// Issue 12, point 13: a formula after leading spaces, and number-like
    /// formulas, reached spreadsheets unneutralised.
    #[test]
    fn csv_formula_after_spaces_is_neutralised() {
        check("  =1+1", "'  =1+1");
        check(" @SUM(A1)", "' @SUM(A1)");
        check("\r=cmd", "\"'\r=cmd\"");
        check(" \t=cmd", "' \t=cmd");
        check("-1+1", "'-1+1");
        check("-inf", "'-inf");
        check("+3.5", "+3.5");
        check("12", "12");
        check(" plain", "\" plain\"");
    }
}
