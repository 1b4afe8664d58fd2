//! `visit:channel`: the acquisition channel of a visit ("Organic Search",
//! "Paid Social", "Email", "Referral", "Direct"…), computed when a query
//! reads it, from what the hourly aggregates keep of a visit's origin: its
//! source (the referrer's display name, or its host) and, for sites that
//! collect campaigns, its `utm_source`, `utm_medium` and `utm_campaign`.
//!
//! The rules are Plausible's, in its order (its `acquisition_channel`
//! column; they follow Google Analytics 4's default channel group): the
//! first that holds names the channel. The source read is the
//! `utm_source` when there is one, else the referrer's, as Plausible's
//! `referrer_source` is; its category (search, social, email, video,
//! shopping) comes from `data/lists/source-categories.tsv`. Computing it
//! when read, not at ingestion, keeps the sort key of `traffic_hourly`
//! unchanged and lets past data get channels, and corrections of the
//! list apply to it.
//!
//! This module owns the category list and the SQL expression; it must
//! not take a client value into that SQL (the list's sources travel as
//! bound values) and uses only functions ClickHouse 18.16 has (no
//! `multiSearchAny`).

use std::sync::OnceLock;

const CATEGORIES: &str = include_str!("../../data/lists/source-categories.tsv");
const ALIASES: &str = include_str!("../../data/lists/utm-source-aliases.tsv");

/// A source category, by the number the SQL compares (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Search = 1,
    Social = 2,
    Email = 3,
    Video = 4,
    Shopping = 5,
}

impl Category {
    fn parse(s: &str) -> Option<Category> {
        match s {
            "search" => Some(Category::Search),
            "social" => Some(Category::Social),
            "email" => Some(Category::Email),
            "video" => Some(Category::Video),
            "shopping" => Some(Category::Shopping),
            _ => None,
        }
    }
}

/// The compiled-in list: lowercase source, category.
fn categories() -> &'static [(&'static str, Category)] {
    static LIST: OnceLock<Vec<(&'static str, Category)>> = OnceLock::new();
    LIST.get_or_init(|| {
        CATEGORIES
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (source, category) = l.split_once('\t')?;
                Some((source, Category::parse(category)?))
            })
            .collect()
    })
}

/// The compiled-in aliases: lowercase `utm_source` tag, source name.
fn aliases() -> &'static [(&'static str, &'static str)] {
    static LIST: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    LIST.get_or_init(|| {
        ALIASES
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split_once('\t'))
            .collect()
    })
}

/// Tags that mark a visit as paid whatever its medium: those of the
/// aliases that end in `ad` or `ads`, and `adwords` (the rule Plausible
/// applies to its own list of tags).
fn paid_tags() -> Vec<&'static str> {
    aliases()
        .iter()
        .map(|(tag, _)| *tag)
        .filter(|t| *t == "adwords" || t.ends_with("ad") || t.ends_with("ads"))
        .collect()
}

/// SQL text with its bound values, in `?` order.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<String>,
}

impl Sql {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// `?, ?, …` binding `values`.
    fn bind_list<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) {
        for (i, v) in values.into_iter().enumerate() {
            self.push(if i > 0 { ", ?" } else { "?" });
            self.params.push(v.to_string());
        }
    }

    /// The source a channel is read from, lowercase: the `utm_source`
    /// (the source it names when it is a known tag, `fb` → `facebook`),
    /// else the referrer's source ("" for a direct visit), as Plausible's
    /// `referrer_source` is.
    fn source(&mut self) {
        let list = aliases();
        self.push("if(utm_source != '', transform(lower(utm_source), [");
        self.bind_list(list.iter().map(|(tag, _)| *tag));
        self.push("], [");
        self.bind_list(list.iter().map(|(_, source)| *source));
        self.push("], lower(utm_source)), lower(if(source = 'Direct / None', '', source)))");
    }
}

/// Plausible's paid mediums (GA4's "^(.*cp.*|ppc|retargeting|paid.*)$").
const PAID: &str = "match(m, '^(.*cp.*|ppc|retargeting|paid.*)$')";
/// Campaigns named after shopping.
const SHOP_CAMPAIGN: &str = "match(p, '^(.*(([^a-df-z]|^)shop|shopping).*)$')";
// `{0,1}`, not `?`: the clickhouse crate reads every `?` as a bound value.
const EMAIL: &str = "e[-_ ]{0,1}mail|newsletter";

/// One rule: its condition, where `PAID_TAG` stands for "the `utm_source`
/// is a paid tag" (bound when written), and its channel.
type Rule = (String, &'static str);

/// Written for [`paid_tags`] in a rule's condition.
const PAID_TAG: &str = "{paid_tag}";

/// The channel rules in Plausible's order (its `Plausible.Ingestion.
/// Acquisition.get_channel`), as SQL over a lambda's parameters: the
/// category `c` of the source (so ClickHouse looks it up once per row),
/// the source `s`, the medium `m`, the campaign `p`, the `utm_source` tag
/// as sent `u` and the click id's name `k`, all lowercase. Columns go in
/// as parameters, not captured: ClickHouse 18.16 does not read a column
/// that only a lambda's body names ("Unknown identifier").
fn rules() -> Vec<Rule> {
    let c = |k: Category| format!("c = {}", k as u8);
    let paid = format!("({PAID} OR {PAID_TAG})");
    vec![
        ("position(p, 'cross-network') > 0".into(), "Cross-network"),
        (format!("{PAID} AND ({} OR {SHOP_CAMPAIGN})", c(Category::Shopping)), "Paid Shopping"),
        // Google and Bing tag their ads' links with a click id, which
        // says "paid" without any campaign tag.
        (
            format!(
                "({} AND {paid}) OR (s = 'google' AND k = 'gclid') OR (s = 'bing' AND k = 'msclkid')",
                c(Category::Search)
            ),
            "Paid Search",
        ),
        (format!("{} AND {paid}", c(Category::Social)), "Paid Social"),
        (format!("{} AND {paid}", c(Category::Video)), "Paid Video"),
        ("m IN ('display', 'banner', 'expandable', 'interstitial', 'cpm')".into(), "Display"),
        (PAID.into(), "Paid Other"),
        (format!("{} OR {SHOP_CAMPAIGN}", c(Category::Shopping)), "Organic Shopping"),
        (
            format!("{} OR m IN ('social', 'social-network', 'social-media', 'sm', 'social network', 'social media')", c(Category::Social)),
            "Organic Social",
        ),
        (format!("{} OR position(m, 'video') > 0", c(Category::Video)), "Organic Video"),
        (c(Category::Search), "Organic Search"),
        (
            format!("{} OR match(u, '{EMAIL}') OR match(m, '{EMAIL}')", c(Category::Email)),
            "Email",
        ),
        ("m = 'affiliate'".into(), "Affiliates"),
        ("m = 'audio'".into(), "Audio"),
        ("u = 'sms' OR m = 'sms'".into(), "SMS"),
        (
            "endsWith(m, 'push') OR position(m, 'mobile') > 0 OR position(m, 'notification') > 0 OR s = 'firebase'".into(),
            "Mobile Push Notifications",
        ),
        ("m IN ('referral', 'app', 'link') OR s != ''".into(), "Referral"),
    ]
}

/// The channel expression over a `traffic_hourly` row, and its bound
/// values (the lists' sources and tags, in `?` order).
pub fn sql() -> (String, Vec<String>) {
    let list = categories();
    let paid = paid_tags();
    let mut sql = Sql::default();
    sql.push("arrayMap((c, s, m, p, u, k) -> multiIf(");
    for (condition, channel) in rules() {
        for (i, part) in condition.split(PAID_TAG).enumerate() {
            if i > 0 {
                sql.push("u IN (");
                sql.bind_list(paid.iter().copied());
                sql.push(")");
            }
            sql.push(part);
        }
        sql.push(", '");
        sql.push(channel);
        sql.push("', ");
    }
    sql.push("'Direct'), [transform(");
    sql.source();
    sql.push(", [");
    sql.bind_list(list.iter().map(|(s, _)| *s));
    sql.push("], [");
    let codes: Vec<String> = list.iter().map(|(_, c)| (*c as u8).to_string()).collect();
    sql.push(&codes.join(", "));
    sql.push("], 0)], [");
    sql.source();
    sql.push("], [lower(utm_medium)], [lower(utm_campaign)], [lower(utm_source)], [click_id])[1]");
    (sql.text, sql.params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_reads_whole_and_is_bound() {
        let list = categories();
        let lines = CATEGORIES
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        assert_eq!(list.len(), lines, "every line names a known category");
        for (source, category) in [
            ("google", Category::Search),
            ("facebook", Category::Social),
            ("gmail", Category::Email),
            ("youtube", Category::Video),
            ("amazon", Category::Shopping),
        ] {
            assert!(list.contains(&(source, category)), "{source}");
        }
        let (sql, params) = sql();
        assert_eq!(sql.matches('?').count(), params.len());
        // Google and Bing are named by the click-id rule only.
        assert!(
            !sql.contains("duckduckgo"),
            "sources are bound, not written"
        );
        assert!(!sql.contains("fb-ads"), "tags are bound, not written");
    }

    /// Every alias names a source of the category list, and the paid tags
    /// are those ending in `ad`/`ads` (with `adwords`), as Plausible's
    /// `Plausible.Ingestion.Source.paid_source?/1` derives its own.
    #[test]
    fn aliases_name_known_sources_and_paid_tags_end_in_ads() {
        let known: Vec<&str> = categories().iter().map(|(s, _)| *s).collect();
        for (tag, source) in aliases() {
            assert_eq!(tag.to_lowercase(), *tag, "{tag}: lowercase");
            assert!(
                known.contains(source),
                "{tag} names {source}, not in the categories"
            );
        }
        let paid = paid_tags();
        for (tag, expected) in [
            ("adwords", true),
            ("fb-ads", true),
            ("fbad", true),
            ("google_ads", true),
            ("yt-ads", true),
            ("fb", false),
            ("ig", false),
            ("yt", false),
        ] {
            assert_eq!(paid.contains(&tag), expected, "{tag}");
        }
    }
}
