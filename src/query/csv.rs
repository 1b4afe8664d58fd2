//! CSV exports of a query: a header row, the same rows as JSON (small
//! counts already merged or withheld), cells safe to open in a spreadsheet.

use super::request::Query;
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
        let metrics: Vec<String> = match &row.metrics {
            Some(m) => m.iter().map(|x| super::number(*x).to_string()).collect(),
            None => vec![String::new(); query.metrics.len()],
        };
        line(&mut out, row.dimensions.iter().cloned().chain(metrics));
    }
    out
}

fn line(out: &mut String, cells: impl Iterator<Item = String>) {
    let cells: Vec<String> = cells.map(|c| cell(&c)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// Quotes a cell, and defuses what a spreadsheet would run as a formula
/// (a leading `=`, `+`, `-`, `@`, tab or carriage return) by prefixing `'`.
pub fn cell(value: &str) -> String {
    let defused = match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') if value.parse::<f64>().is_err() => {
            format!("'{value}")
        }
        _ => value.to_string(),
    };
    if defused.contains([',', '"', '\n', '\r']) || defused != defused.trim() {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
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
}
