//! Regular expressions of `matches` filters, checked without compiling
//! them. The pattern runs in ClickHouse (re2), so tamis only parses it
//! (`regex-syntax`'s parser: linear in the pattern, no automaton built)
//! and accepts the syntax both engines read the same way. Refused, with a
//! 400 that says why: counted repetitions over 1,000 (re2's limit),
//! `(?<name>…)` groups (write `(?P<name>…)`), flags other than `i`, `m`,
//! `s` and `U` (`(?x)`, `(?u)`, `(?R)`), class set operations and nested
//! classes (`[a-z&&[^x]]`: Rust reads an intersection, re2 literal
//! characters), the word-boundary forms `\b{start}`, `\<`, `\>`, and
//! `\p{name=value}` classes. Patterns per query are bounded in bytes, so a
//! request cannot make tamis (or ClickHouse) parse more than a few KiB.

use regex_syntax::ast::{self, Ast, ClassSetItem, Visitor};

/// Longest single pattern.
pub const MAX_PATTERN: usize = 256;
/// All patterns of one query together.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// re2 refuses counted repetitions above this.
const MAX_REPEAT: u32 = 1000;

/// Why a pattern is refused, in words for the client.
pub fn check(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!(
            "matches takes regular expressions of at most {MAX_PATTERN} bytes"
        ));
    }
    let parsed = ast::parse::ParserBuilder::new()
        .nest_limit(32)
        .build()
        .parse(pattern)
        .map_err(|e| format!("not a regular expression: {}", e.kind()))?;
    ast::visit(&parsed, Portable { repeats: vec![1] })
}

/// Refuses what re2 and Rust's `regex` read differently, or what re2
/// refuses. `repeats`: the product of the counted repetitions around the
/// node being visited (nested counts multiply in re2's program).
struct Portable {
    repeats: Vec<u64>,
}

fn bound(range: &ast::RepetitionRange) -> u32 {
    let (ast::RepetitionRange::Exactly(n)
    | ast::RepetitionRange::AtLeast(n)
    | ast::RepetitionRange::Bounded(_, n)) = range;
    *n
}

impl Visitor for Portable {
    type Output = ();
    type Err = String;

    fn finish(self) -> Result<(), String> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), String> {
        match ast {
            Ast::Flags(set) => flags(&set.flags),
            Ast::Group(group) => match &group.kind {
                ast::GroupKind::CaptureName {
                    starts_with_p: false,
                    ..
                } => Err("write named groups as (?P<name>…)".into()),
                ast::GroupKind::NonCapturing(set) => flags(set),
                _ => Ok(()),
            },
            Ast::Repetition(rep) => {
                let n = match &rep.op.kind {
                    ast::RepetitionKind::Range(range) => u64::from(bound(range)).max(1),
                    _ => 1,
                };
                let around = self.repeats.last().copied().unwrap_or(1);
                let total = around.saturating_mul(n);
                if total > u64::from(MAX_REPEAT) {
                    return Err(format!(
                        "counted repetitions go up to {MAX_REPEAT}, nested ones multiplied"
                    ));
                }
                self.repeats.push(total);
                Ok(())
            }
            Ast::Assertion(a) => match a.kind {
                ast::AssertionKind::StartLine
                | ast::AssertionKind::EndLine
                | ast::AssertionKind::StartText
                | ast::AssertionKind::EndText
                | ast::AssertionKind::WordBoundary
                | ast::AssertionKind::NotWordBoundary => Ok(()),
                _ => Err("word boundaries are \\b and \\B only".into()),
            },
            Ast::ClassUnicode(class) => unicode(class),
            _ => Ok(()),
        }
    }

    fn visit_post(&mut self, ast: &Ast) -> Result<(), String> {
        if let Ast::Repetition(_) = ast {
            self.repeats.pop();
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), String> {
        match item {
            ClassSetItem::Bracketed(_) => Err("classes cannot be nested".into()),
            ClassSetItem::Unicode(class) => unicode(class),
            _ => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(&mut self, _: &ast::ClassSetBinaryOp) -> Result<(), String> {
        Err("class operations (&&, --, ~~) are not supported".into())
    }
}

fn flags(set: &ast::Flags) -> Result<(), String> {
    for item in &set.items {
        if let ast::FlagsItemKind::Flag(flag) = &item.kind {
            if !matches!(
                flag,
                ast::Flag::CaseInsensitive
                    | ast::Flag::MultiLine
                    | ast::Flag::DotMatchesNewLine
                    | ast::Flag::SwapGreed
            ) {
                return Err("flags are i, m, s and U only".into());
            }
        }
    }
    Ok(())
}

fn unicode(class: &ast::ClassUnicode) -> Result<(), String> {
    match class.kind {
        ast::ClassUnicodeKind::NamedValue { .. } => {
            Err("Unicode classes are \\pL or \\p{Name}, without =".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(pattern: &str) {
        assert_eq!(check(pattern), Ok(()), "{pattern}");
    }

    fn refused(pattern: &str, why: &str) {
        let err = check(pattern).expect_err(pattern);
        assert!(err.contains(why), "{pattern}: {err}");
    }

    #[test]
    fn patterns_both_engines_read_alike_pass() {
        for p in [
            "^/blog/[0-9]+$",
            "(?i)^/FR/",
            "a{2,1000}",
            "(?P<y>20[0-9]{2})",
            r"\bnews\b",
            r"\pL+",
            r"\p{Greek}",
            "[^/]+\\.pdf$",
            "(?:a|b)*?c",
        ] {
            ok(p);
        }
    }

    /// Regression: each of these either made ClickHouse answer an error
    /// (503) or meant something else in re2 than tamis checked; and
    /// compiling thousands of large patterns on an async worker stalled
    /// ingestion (regex cost).
    #[test]
    fn regex_cost() {
        refused("a{1001}", "1000");
        refused("(a{2}){1001,}", "1000");
        refused("(?<n>a)", "(?P<name>");
        refused("(?x) a b", "flags");
        refused("(?u:a)", "flags");
        refused("[a-z&&[^x]]", "class operations");
        refused("[a[bc]]", "nested");
        refused(r"\b{start}x", "word boundaries");
        refused(r"\<x", "word boundaries");
        refused(r"\p{Script=Greek}", "without =");
        refused("(unclosed", "not a regular expression");
        refused(&"a".repeat(MAX_PATTERN + 1), "at most");
        // Nested counts multiply in re2's program: the most expensive
        // kind of pattern to compile is refused by its parse alone.
        refused("(((a{100}){100}){100})", "multiplied");
        ok("(a{10}){100}");
    }
}
