//! Display names for the geographic codes reports carry: `visit:country`
//! values are ISO 3166-1 codes (`CA`), `visit:region` values ISO 3166-2
//! codes (`CA-QC`), or, where geolocation found no code, the name the
//! database gave. `visit:country_name` and `visit:region_name` answer them
//! in English, as Plausible's stats API does; `meta.region_names` names
//! regions in the site's language (French names for Canada's provinces
//! and territories, as Québec public bodies write them; elsewhere the
//! English name).
//!
//! This module owns the compiled-in name tables (`data/lists/countries.tsv`
//! and `data/lists/subdivisions.tsv`, both written by scripts beside them)
//! and the translation of a condition on a name into the codes it
//! selects. It does no I/O and builds no SQL.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::request::FilterOp;

const COUNTRIES: &str = include_str!("../../data/lists/countries.tsv");
const SUBDIVISIONS: &str = include_str!("../../data/lists/subdivisions.tsv");

/// Canada's provinces and territories: code, French name.
const CANADA_FR: [(&str, &str); 13] = [
    ("CA-AB", "Alberta"),
    ("CA-BC", "Colombie-Britannique"),
    ("CA-MB", "Manitoba"),
    ("CA-NB", "Nouveau-Brunswick"),
    ("CA-NL", "Terre-Neuve-et-Labrador"),
    ("CA-NS", "Nouvelle-Écosse"),
    ("CA-NT", "Territoires du Nord-Ouest"),
    ("CA-NU", "Nunavut"),
    ("CA-ON", "Ontario"),
    ("CA-PE", "Île-du-Prince-Édouard"),
    ("CA-QC", "Québec"),
    ("CA-SK", "Saskatchewan"),
    ("CA-YT", "Yukon"),
];

/// Which table a name dimension reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Country,
    Region,
}

impl Names {
    fn table(self) -> &'static HashMap<&'static str, String> {
        static COUNTRY: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
        static REGION: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
        match self {
            Names::Country => COUNTRY.get_or_init(|| {
                rows(COUNTRIES)
                    .filter_map(|f| Some((*f.first()?, f.get(1)?.to_string())))
                    .collect()
            }),
            Names::Region => REGION.get_or_init(|| {
                rows(SUBDIVISIONS)
                    .filter_map(|f| {
                        Some((
                            *f.first()?,
                            english_region(f.first()?, &f[3.min(f.len())..])?,
                        ))
                    })
                    .collect()
            }),
        }
    }

    /// The English name of a stored value: the code's name, "" for "", and
    /// a region stored as a name (no code matched) as it is.
    pub fn name(self, value: &str) -> String {
        match self.table().get(value) {
            Some(name) => name.clone(),
            None => value.to_string(),
        }
    }

    /// Whether a stored value is a code of the table (else it is shown as
    /// it is, and conditions on names apply to it directly).
    pub fn is_code(self, value: &str) -> bool {
        value.is_empty() || self.table().contains_key(value)
    }

    /// The stored codes whose names satisfy a condition on names (`op`
    /// taken positively: the caller negates), sorted. `""` stands for
    /// unknown, whose name is `""`.
    pub fn codes_where(self, op: FilterOp, values: &[String]) -> Vec<&'static str> {
        let regexes: Vec<regex::Regex> = match op {
            // Checked as portable when the request was parsed.
            FilterOp::Matches | FilterOp::MatchesNot => values
                .iter()
                .filter_map(|v| regex::Regex::new(v).ok())
                .collect(),
            _ => Vec::new(),
        };
        let lowered: Vec<String> = values.iter().map(|v| v.to_lowercase()).collect();
        let selects = |name: &str| match op {
            FilterOp::Is | FilterOp::IsNot => values.iter().any(|v| v == name),
            FilterOp::Contains | FilterOp::ContainsNot => {
                let name = name.to_lowercase();
                lowered.iter().any(|v| name.contains(v.as_str()))
            }
            FilterOp::Matches | FilterOp::MatchesNot => regexes.iter().any(|r| r.is_match(name)),
        };
        let mut codes: Vec<&'static str> = self
            .table()
            .iter()
            .filter(|(_, name)| selects(name))
            .map(|(code, _)| *code)
            .collect();
        if selects("") {
            codes.push("");
        }
        codes.sort_unstable();
        codes
    }
}

/// The non-comment lines of a compiled-in table, split at tabs.
fn rows(table: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').collect())
}

/// A subdivision's English name from its names in `subdivisions.tsv` (ISO
/// name first, then the English names that differ, CLDR's first, each
/// name possibly followed by its form without diacritics): the first
/// English name, cleaned of CLDR's footnote marks, else the ISO name.
/// As Plausible's location data does (its `update_english_translations`
/// task), Estonia's and Japan's keep their ISO names, which are English
/// already ("Harjumaa", "Tokyo").
fn english_region(code: &str, names: &[&str]) -> Option<String> {
    let (&iso, rest) = names.split_first()?;
    if code.starts_with("EE-") || code.starts_with("JP-") {
        return Some(iso.to_string());
    }
    let mut previous = iso;
    for &name in rest {
        if !is_plain_form(previous, name) {
            return Some(name.replace(['²', '³'], "").replace('’', "'"));
        }
        previous = name;
    }
    Some(iso.to_string())
}

/// Whether `plain` is `name` with its marks removed: the subdivision list
/// writes that form after names with letters beyond Latin Extended-A.
fn is_plain_form(name: &str, plain: &str) -> bool {
    name.chars().count() == plain.chars().count()
        && name.chars().any(|c| c > '\u{17F}')
        && name
            .chars()
            .zip(plain.chars())
            .all(|(a, b)| a == b || (a > '\u{17F}' && b.is_ascii_alphabetic()))
}

/// The ISO 3166-1 code of an English country name (lowercase), as
/// `countries.tsv` names it; for imports that carry names only.
pub fn country_code(lowercase_name: &str) -> Option<String> {
    Names::Country
        .table()
        .iter()
        .find(|(_, name)| name.to_lowercase() == lowercase_name)
        .map(|(code, _)| code.to_string())
}

/// The name of a region code in `language` (`fr` or `en`), if it is a
/// code. Values that are not codes (names kept where no code matched) are
/// already names.
pub fn region_name(code: &str, language: &str) -> Option<String> {
    if language == "fr" {
        if let Some((_, fr)) = CANADA_FR.iter().find(|(c, _)| *c == code) {
            return Some(fr.to_string());
        }
    }
    Names::Region.table().get(code).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: &str, language: &str, expected: Option<&str>) {
        assert_eq!(
            region_name(code, language).as_deref(),
            expected,
            "{code} {language}"
        );
    }

    #[test]
    fn names_in_the_site_language() {
        check("CA-QC", "fr", Some("Québec"));
        check("CA-QC", "en", Some("Quebec"));
        check("CA-BC", "fr", Some("Colombie-Britannique"));
        check("US-CA", "fr", Some("California"));
        check("Brussels Capital", "fr", None);
        check("", "fr", None);
    }

    fn check_name(names: Names, value: &str, expected: &str) {
        assert_eq!(names.name(value), expected, "{value}");
    }

    /// Plausible answers `visit:country_name` with ISO 3166-1's common
    /// name, else its name (plausible/location `lib/location/country.ex`),
    /// and `visit:region_name` with CLDR's English name where there is one
    /// (`mix_tasks/update_english_translations.ex`; Estonia keeps
    /// "Harjumaa": plausible/analytics
    /// `test/plausible_web/controllers/api/external_stats_controller/query_test.exs`,
    /// "country_name, region_name, city_name").
    #[test]
    fn english_names_as_plausible_answers_them() {
        check_name(Names::Country, "GB", "United Kingdom");
        check_name(Names::Country, "US", "United States");
        check_name(Names::Country, "KR", "South Korea");
        check_name(Names::Country, "XK", "Kosovo");
        check_name(Names::Country, "", "");
        check_name(Names::Region, "EE-37", "Harjumaa");
        check_name(Names::Region, "DE-BY", "Bavaria");
        check_name(Names::Region, "GB-LND", "London");
        check_name(Names::Region, "FR-IDF", "Île-de-France");
        check_name(Names::Region, "CA-QC", "Quebec");
        check_name(Names::Region, "SE-AB", "Stockholm");
        // A mark-less form of the ISO name is not an English name.
        check_name(Names::Region, "VN-HN", "Hanoi");
        check_name(Names::Region, "Brussels Capital", "Brussels Capital");
        check_name(Names::Region, "", "");
    }

    fn check_codes(names: Names, op: FilterOp, values: &[&str], expected: &[&str]) {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            names.codes_where(op, &values),
            expected,
            "{op:?} {values:?}"
        );
    }

    #[test]
    fn conditions_on_names_select_codes() {
        check_codes(
            Names::Country,
            FilterOp::Is,
            &["Estonia", "United Kingdom"],
            &["EE", "GB"],
        );
        check_codes(Names::Country, FilterOp::Is, &["estonia"], &[]);
        check_codes(Names::Country, FilterOp::Is, &[""], &[""]);
        check_codes(Names::Country, FilterOp::Contains, &["KINGDOM"], &["GB"]);
        check_codes(Names::Country, FilterOp::Matches, &["^Cana"], &["CA"]);
        check_codes(
            Names::Region,
            FilterOp::Is,
            &["Quebec", "Ontario"],
            &["CA-ON", "CA-QC"],
        );
    }
}
