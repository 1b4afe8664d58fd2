//! Goals and funnels as a site's configuration defines them: what counts as
//! a conversion, and the ordered steps of a funnel.
//!
//! A goal is a custom event by its name, or a pageview whose path matches
//! a pattern where `*` stands for any run of characters, as Plausible
//! defines them (`Plausible.Stats.Filters.Utils.page_regex`: the path
//! escaped, `**` and `*` both turned into `.*`, anchored at both ends).
//! This module owns the one translation of a goal into a test on an event
//! (for the aggregator's funnels) and into SQL (for the stats API), so the
//! two cannot disagree. It does no I/O and keeps no state.

use regex::Regex;

/// The event name of a pageview in the aggregates.
pub const PAGEVIEW: &str = "pageview";

/// Longest display name of a goal or funnel, in characters.
pub const MAX_NAME: usize = 120;

/// Longest page pattern of a goal, in bytes.
pub const MAX_PATTERN: usize = 2000;

/// Most goals per site, and steps per funnel (Plausible: 2 to 8).
pub const MAX_GOALS: usize = 100;
pub const FUNNEL_STEPS: std::ops::RangeInclusive<usize> = 2..=8;

#[derive(Debug, Clone)]
pub enum GoalKind {
    /// A custom event by its exact name.
    Event(String),
    /// A pageview whose path matches `pattern` (with `*` wildcards);
    /// `regex` is its translation, anchored.
    Page { pattern: String, regex: Regex },
}

#[derive(Debug, Clone)]
pub struct Goal {
    /// How reports name the goal (`event:goal` values).
    pub name: String,
    pub kind: GoalKind,
}

impl PartialEq for Goal {
    fn eq(&self, other: &Goal) -> bool {
        self.name == other.name
            && match (&self.kind, &other.kind) {
                (GoalKind::Event(a), GoalKind::Event(b)) => a == b,
                (GoalKind::Page { pattern: a, .. }, GoalKind::Page { pattern: b, .. }) => a == b,
                _ => false,
            }
    }
}

impl Goal {
    /// An event goal; its name defaults to the event's, as in Plausible.
    pub fn event(event: &str, name: Option<&str>) -> Result<Goal, String> {
        if event.is_empty() || event == PAGEVIEW {
            return Err(format!(
                "`{event}` cannot be an event goal: name a custom event (pageviews are page goals)"
            ));
        }
        Ok(Goal {
            name: display_name(name.unwrap_or(event))?,
            kind: GoalKind::Event(event.to_string()),
        })
    }

    /// A page goal; its name defaults to `Visit <pattern>`, as in Plausible.
    pub fn page(pattern: &str, name: Option<&str>) -> Result<Goal, String> {
        if !pattern.starts_with('/') || pattern.len() > MAX_PATTERN {
            return Err(format!(
                "`{pattern}` must be a path starting with / (at most {MAX_PATTERN} bytes)"
            ));
        }
        if pattern.chars().any(char::is_control) {
            return Err("a page pattern may not hold control characters".into());
        }
        let default = format!("Visit {pattern}");
        let translated = page_regex(pattern);
        let regex = Regex::new(&translated).map_err(|e| format!("`{pattern}`: {e}"))?;
        Ok(Goal {
            name: display_name(name.unwrap_or(&default))?,
            kind: GoalKind::Page {
                pattern: pattern.to_string(),
                regex,
            },
        })
    }

    /// Whether an event named `event` on `page` reaches the goal.
    pub fn is_reached(&self, event: &str, page: &str) -> bool {
        match &self.kind {
            GoalKind::Event(name) => event == name,
            GoalKind::Page { regex, .. } => event == PAGEVIEW && regex.is_match(page),
        }
    }

    /// The goal as a condition on `traffic_hourly`'s `event` and `page`
    /// columns: SQL with `?` placeholders and the values to bind, in order.
    pub fn sql(&self) -> (&'static str, Vec<String>) {
        match &self.kind {
            GoalKind::Event(name) => ("(event = ?)", vec![name.clone()]),
            GoalKind::Page { pattern, .. } => (
                "(event = ? AND match(page, ?))",
                vec![PAGEVIEW.to_string(), page_regex(pattern)],
            ),
        }
    }

    /// What the goal counts, independent of its display name: the daily
    /// rollups store a goal's numbers under it, so renaming a goal keeps
    /// its rolled days and changing what it counts does not.
    pub fn key(&self) -> String {
        match &self.kind {
            GoalKind::Event(name) => format!("event:{name}"),
            GoalKind::Page { pattern, .. } => format!("page:{pattern}"),
        }
    }

    /// What the goal counts, for the sites list and the dashboard.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.kind {
            GoalKind::Event(e) => serde_json::json!({ "name": self.name, "event": e }),
            GoalKind::Page { pattern, .. } => {
                serde_json::json!({ "name": self.name, "page": pattern })
            }
        }
    }
}

/// An ordered list of goals a visit reaches one after the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    pub name: String,
    /// Indices into the site's goals, in order.
    pub steps: Vec<usize>,
}

/// The page pattern as an anchored regular expression that Rust's `regex`
/// and ClickHouse's RE2 read alike: every character literal but `*`.
pub fn page_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push('^');
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // `**` is Plausible's older "anything, slashes too": the
                // same as `*` today.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push_str(".*");
            }
            '\\' | '.' | '+' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('$');
    out
}

fn display_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(format!("a name must be 1 to {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("a name may not hold control characters".into());
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_patterns_match_as_plausible_reads_them() {
        // Cases from Plausible's goal tests (`page_path: "/blog**"`,
        // `"/register*"`) and its page_regex: `*` crosses slashes.
        let cases = [
            ("/register", "/register", true),
            ("/register", "/register/", false),
            ("/register*", "/register/step-2", true),
            ("/blog**", "/blog/john-post", true),
            ("/blog/*/comments", "/blog/a/b/comments", true),
            ("/a.b", "/aXb", false),
            ("/a.b", "/a.b", true),
            ("/(x)|y", "/(x)|y", true),
            ("/fr/*", "/en/x", false),
        ];
        for (pattern, page, expected) in cases {
            let goal = Goal::page(pattern, None).unwrap();
            assert_eq!(
                goal.is_reached(PAGEVIEW, page),
                expected,
                "{pattern} {page}"
            );
            assert!(
                !goal.is_reached("Signup", page),
                "only pageviews reach a page goal"
            );
            crate::query::pattern::check(&page_regex(pattern)).unwrap();
        }
    }

    #[test]
    fn names_default_as_plausible_names_them() {
        assert_eq!(Goal::page("/merci", None).unwrap().name, "Visit /merci");
        assert_eq!(Goal::event("Signup", None).unwrap().name, "Signup");
        assert_eq!(
            Goal::event("Signup", Some(" Inscription ")).unwrap().name,
            "Inscription"
        );
        assert!(Goal::event("pageview", None).is_err());
        assert!(Goal::page("merci", None).is_err());
        assert!(Goal::event("x", Some("a\u{7}b")).is_err());
        assert!(Goal::event("x", Some(&"é".repeat(MAX_NAME + 1))).is_err());
    }
}
