//! Display names for the codes reports carry: `visit:region` values are
//! ISO 3166-2 codes (`CA-QC`), shown to people as `Québec`. French names
//! for Canada's provinces and territories, as Québec public bodies write
//! them; elsewhere the ISO name.

/// Canada's provinces and territories: code, French name, English name.
const CANADA: [(&str, &str, &str); 13] = [
    ("CA-AB", "Alberta", "Alberta"),
    ("CA-BC", "Colombie-Britannique", "British Columbia"),
    ("CA-MB", "Manitoba", "Manitoba"),
    ("CA-NB", "Nouveau-Brunswick", "New Brunswick"),
    (
        "CA-NL",
        "Terre-Neuve-et-Labrador",
        "Newfoundland and Labrador",
    ),
    ("CA-NS", "Nouvelle-Écosse", "Nova Scotia"),
    (
        "CA-NT",
        "Territoires du Nord-Ouest",
        "Northwest Territories",
    ),
    ("CA-NU", "Nunavut", "Nunavut"),
    ("CA-ON", "Ontario", "Ontario"),
    ("CA-PE", "Île-du-Prince-Édouard", "Prince Edward Island"),
    ("CA-QC", "Québec", "Quebec"),
    ("CA-SK", "Saskatchewan", "Saskatchewan"),
    ("CA-YT", "Yukon", "Yukon"),
];

/// The name of a region code in `language` (`fr` or `en`), if known.
/// Values that are not codes (names kept where no code matched) are
/// already names.
pub fn region_name(code: &str, language: &str) -> Option<String> {
    if let Some((_, fr, en)) = CANADA.iter().find(|(c, _, _)| *c == code) {
        return Some(if language == "fr" { fr } else { en }.to_string());
    }
    let country = code.get(..2)?;
    rust_iso3166::from_alpha2(country)?
        .subdivisions()?
        .iter()
        .find(|s| s.code == code)
        .map(|s| s.name.to_string())
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
}
