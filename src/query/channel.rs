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

/// The source a channel is read from, lowercase: `utm_source`, else the
/// referrer's source ("" for a direct visit).
const SOURCE: &str =
    "lower(if(utm_source != '', utm_source, if(source = 'Direct / None', '', source)))";

/// Plausible's paid mediums (GA4's "^(.*cp.*|ppc|retargeting|paid.*)$").
const PAID: &str = "match(m, '^(.*cp.*|ppc|retargeting|paid.*)$')";
/// Campaigns named after shopping.
const SHOP_CAMPAIGN: &str = "match(p, '^(.*(([^a-df-z]|^)shop|shopping).*)$')";
// `{0,1}`, not `?`: the clickhouse crate reads every `?` as a bound value.
const EMAIL: &str = "e[-_ ]{0,1}mail|newsletter";

/// The channel rules in order, as SQL over a lambda's parameters: the
/// category `c` (so ClickHouse looks the source up once per row), the
/// source `s`, the medium `m` and the campaign `p`, all lowercase. Columns
/// go in as parameters, not captured: ClickHouse 18.16 does not read a
/// column that only a lambda's body names ("Unknown identifier").
fn rules() -> Vec<(String, &'static str)> {
    let c = |k: Category| format!("c = {}", k as u8);
    vec![
        ("position(p, 'cross-network') > 0".into(), "Cross-network"),
        ("m IN ('display', 'banner', 'expandable', 'interstitial', 'cpm')".into(), "Display"),
        (format!("{PAID} AND ({} OR {SHOP_CAMPAIGN})", c(Category::Shopping)), "Paid Shopping"),
        (format!("{} AND {PAID}", c(Category::Search)), "Paid Search"),
        (format!("{} AND {PAID}", c(Category::Social)), "Paid Social"),
        (format!("{} AND {PAID}", c(Category::Video)), "Paid Video"),
        (PAID.into(), "Paid Other"),
        (format!("{} OR {SHOP_CAMPAIGN}", c(Category::Shopping)), "Organic Shopping"),
        (
            format!("{} OR m IN ('social', 'social-network', 'social-media', 'sm', 'social network', 'social media')", c(Category::Social)),
            "Organic Social",
        ),
        (format!("{} OR position(m, 'video') > 0", c(Category::Video)), "Organic Video"),
        (c(Category::Search), "Organic Search"),
        (
            format!("{} OR match(s, '{EMAIL}') OR match(m, '{EMAIL}')", c(Category::Email)),
            "Email",
        ),
        ("m = 'affiliate'".into(), "Affiliates"),
        ("m = 'audio'".into(), "Audio"),
        ("s = 'sms' OR m = 'sms'".into(), "SMS"),
        (
            "endsWith(m, 'push') OR position(m, 'mobile') > 0 OR position(m, 'notification') > 0 OR s = 'firebase'".into(),
            "Mobile Push Notifications",
        ),
        ("m IN ('referral', 'app', 'link') OR s != ''".into(), "Referral"),
    ]
}

/// The channel expression over a `traffic_hourly` row, and its bound
/// values (the list's sources, in `?` order).
pub fn sql() -> (String, Vec<String>) {
    let list = categories();
    let mut sql = String::from("arrayMap((c, s, m, p) -> multiIf(");
    for (condition, channel) in rules() {
        sql.push_str(&condition);
        sql.push_str(", '");
        sql.push_str(channel);
        sql.push_str("', ");
    }
    sql.push_str("'Direct'), [transform(");
    sql.push_str(SOURCE);
    sql.push_str(", [");
    sql.push_str(&vec!["?"; list.len()].join(", "));
    sql.push_str("], [");
    let codes: Vec<String> = list.iter().map(|(_, c)| (*c as u8).to_string()).collect();
    sql.push_str(&codes.join(", "));
    sql.push_str("], 0)], [");
    sql.push_str(SOURCE);
    sql.push_str("], [lower(utm_medium)], [lower(utm_campaign)])[1]");
    let params = list.iter().map(|(s, _)| s.to_string()).collect();
    (sql, params)
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
        assert!(!sql.contains("google"), "sources are bound, not written");
    }
}
