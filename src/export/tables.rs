//! What an open-data package holds: each table's file, the stats-API
//! questions that fill it, and its columns named and described in French
//! and English. One definition; the CSV headers and the metadata are both
//! derived from it.

use super::Lang;

/// A column: its stable name (the English header), its French header,
/// its descriptions, and its CSVW datatype.
pub struct Column {
    pub en: &'static str,
    pub fr: &'static str,
    pub about_en: &'static str,
    pub about_fr: &'static str,
    pub datatype: &'static str,
}

impl Column {
    pub fn header(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.en,
            Lang::Fr => self.fr,
        }
    }

    pub fn about(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.about_en,
            Lang::Fr => self.about_fr,
        }
    }
}

/// One stats-API question of a table: its dimensions and metrics (as the
/// API names them), and a constant first cell for each row where the table
/// stacks several breakdowns (`devices.csv`: `device`, `browser`, `os`).
pub struct Ask {
    pub label: Option<&'static str>,
    pub dimensions: &'static [&'static str],
    pub metrics: &'static [&'static str],
}

pub struct Table {
    pub file: &'static str,
    pub title_en: &'static str,
    pub title_fr: &'static str,
    pub asks: &'static [Ask],
    /// The leading label column (when asks have labels), the dimension
    /// columns, then the metric columns, in that order.
    pub columns: &'static [Column],
}

impl Table {
    pub fn title(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.title_en,
            Lang::Fr => self.title_fr,
        }
    }
}

const VISITORS: Column = Column {
    en: "visitors",
    fr: "visiteurs",
    about_en: "Unique visitors. A visitor is recognised within one local day only (the key rotates at midnight), so over a month a visitor who came back on another day counts once per day.",
    about_fr: "Visiteurs uniques. Un visiteur n'est reconnu que pendant une journée locale (la clé change à minuit) : sur un mois, un visiteur revenu un autre jour compte une fois par jour.",
    datatype: "integer",
};
const VISITS: Column = Column {
    en: "visits",
    fr: "visites",
    about_en: "Visits: a run of page views by one visitor with no gap of more than 30 minutes.",
    about_fr:
        "Visites : suite de pages vues par un même visiteur sans pause de plus de 30 minutes.",
    datatype: "integer",
};
const PAGEVIEWS: Column = Column {
    en: "pageviews",
    fr: "pages_vues",
    about_en: "Page views.",
    about_fr: "Pages vues.",
    datatype: "integer",
};
const BOUNCE_RATE: Column = Column {
    en: "bounce_rate",
    fr: "taux_de_rebond",
    about_en:
        "Percentage of visits that saw a single page, computed from the published (rounded) counts.",
    about_fr:
        "Pourcentage des visites d'une seule page, calculé à partir des nombres publiés (arrondis).",
    datatype: "decimal",
};
const VISIT_DURATION: Column = Column {
    en: "visit_duration_seconds",
    fr: "duree_de_visite_secondes",
    about_en: "Mean visit duration in seconds, over the visits counted.",
    about_fr: "Durée moyenne des visites, en secondes.",
    datatype: "decimal",
};
const DATE: Column = Column {
    en: "date",
    fr: "date",
    about_en: "Day, in the site's time zone (YYYY-MM-DD).",
    about_fr: "Jour, dans le fuseau horaire du site (AAAA-MM-JJ).",
    datatype: "date",
};
const MONTH: Column = Column {
    en: "month",
    fr: "mois",
    about_en: "The month (YYYY-MM), in the site's time zone.",
    about_fr: "Le mois (AAAA-MM), dans le fuseau horaire du site.",
    datatype: "string",
};

const TOTALS: [&str; 5] = [
    "visitors",
    "visits",
    "pageviews",
    "bounce_rate",
    "visit_duration",
];

pub const TABLES: &[Table] = &[
    Table {
        file: "month.csv",
        title_en: "Totals for the month",
        title_fr: "Totaux du mois",
        asks: &[Ask {
            label: Some(""),
            dimensions: &[],
            metrics: &TOTALS,
        }],
        columns: &[MONTH, VISITORS, VISITS, PAGEVIEWS, BOUNCE_RATE, VISIT_DURATION],
    },
    Table {
        file: "daily.csv",
        title_en: "Daily totals",
        title_fr: "Totaux par jour",
        asks: &[Ask {
            label: None,
            dimensions: &["time:day"],
            metrics: &TOTALS,
        }],
        columns: &[DATE, VISITORS, VISITS, PAGEVIEWS, BOUNCE_RATE, VISIT_DURATION],
    },
    Table {
        file: "pages.csv",
        title_en: "Pages",
        title_fr: "Pages",
        asks: &[Ask {
            label: None,
            dimensions: &["event:page"],
            metrics: &["visitors", "pageviews"],
        }],
        columns: &[
            Column {
                en: "page",
                fr: "page",
                about_en: "Page path, without query string or fragment; e-mail addresses, long numbers and tokens are replaced by [email], [number], [token].",
                about_fr: "Chemin de la page, sans paramètres ni fragment; adresses courriel, longs nombres et jetons remplacés par [email], [number], [token].",
                datatype: "string",
            },
            VISITORS,
            PAGEVIEWS,
        ],
    },
    Table {
        file: "sources.csv",
        title_en: "Sources",
        title_fr: "Sources",
        asks: &[Ask {
            label: None,
            dimensions: &["visit:source"],
            metrics: &["visitors", "visits"],
        }],
        columns: &[
            Column {
                en: "source",
                fr: "source",
                about_en: "Where the visit came from: the referring site's name or host, or the campaign source; Direct / None without one.",
                about_fr: "Provenance de la visite : nom ou domaine du site référent, ou source de campagne; Direct / None sans provenance.",
                datatype: "string",
            },
            VISITORS,
            VISITS,
        ],
    },
    Table {
        file: "regions.csv",
        title_en: "Countries and regions",
        title_fr: "Pays et régions",
        asks: &[Ask {
            label: None,
            dimensions: &["visit:country", "visit:region"],
            metrics: &["visitors", "visits"],
        }],
        columns: &[
            Column {
                en: "country",
                fr: "pays",
                about_en: "Country, ISO 3166-1 alpha-2 code, from the truncated IP address.",
                about_fr: "Pays, code ISO 3166-1 alpha-2, d'après l'adresse IP tronquée.",
                datatype: "string",
            },
            Column {
                en: "region",
                fr: "region",
                about_en: "Province, state or region, ISO 3166-2 code (e.g. CA-QC); no finer location is kept.",
                about_fr: "Province, État ou région, code ISO 3166-2 (p. ex. CA-QC); aucune localisation plus fine n'est conservée.",
                datatype: "string",
            },
            VISITORS,
            VISITS,
        ],
    },
    Table {
        file: "devices.csv",
        title_en: "Devices, browsers and operating systems",
        title_fr: "Appareils, navigateurs et systèmes d'exploitation",
        asks: &[
            Ask {
                label: Some("device"),
                dimensions: &["visit:device"],
                metrics: &["visitors", "visits"],
            },
            Ask {
                label: Some("browser"),
                dimensions: &["visit:browser"],
                metrics: &["visitors", "visits"],
            },
            Ask {
                label: Some("os"),
                dimensions: &["visit:os"],
                metrics: &["visitors", "visits"],
            },
        ],
        columns: &[
            Column {
                en: "category",
                fr: "categorie",
                about_en: "device (Desktop, Mobile, Tablet, from the screen width or user agent), browser, or os (operating system), as tamis reduces the user agent.",
                about_fr: "device (appareil : Desktop, Mobile, Tablet, selon la largeur d'écran ou l'agent utilisateur), browser (navigateur) ou os (système d'exploitation), tels que tamis les réduit de l'agent utilisateur.",
                datatype: "string",
            },
            Column {
                en: "value",
                fr: "valeur",
                about_en: "The device type, browser or operating system.",
                about_fr: "Le type d'appareil, le navigateur ou le système d'exploitation.",
                datatype: "string",
            },
            VISITORS,
            VISITS,
        ],
    },
    Table {
        file: "languages.csv",
        title_en: "Languages",
        title_fr: "Langues",
        asks: &[Ask {
            label: None,
            dimensions: &["visit:language"],
            metrics: &["visitors", "visits"],
        }],
        columns: &[
            Column {
                en: "language",
                fr: "langue",
                about_en: "The browser's preferred language (primary subtag, e.g. fr, en).",
                about_fr: "Langue préférée du navigateur (sous-étiquette principale, p. ex. fr, en).",
                datatype: "string",
            },
            VISITORS,
            VISITS,
        ],
    },
    Table {
        file: "consent.csv",
        title_en: "Consent rates by day",
        title_fr: "Taux de consentement par jour",
        asks: &[Ask {
            label: None,
            dimensions: &["time:day"],
            metrics: &[
                "consent_rate",
                "consent_denied_rate",
                "consent_unset_rate",
                "opt_out_rate",
            ],
        }],
        columns: &[
            DATE,
            Column {
                en: "consent_granted_percent",
                fr: "consentement_accorde_pourcentage",
                about_en: "Percentage of hits sent with consent granted.",
                about_fr: "Pourcentage des requêtes envoyées avec consentement accordé.",
                datatype: "decimal",
            },
            Column {
                en: "consent_denied_percent",
                fr: "consentement_refuse_pourcentage",
                about_en: "Percentage of hits sent with consent denied (counted without a visitor key).",
                about_fr: "Pourcentage des requêtes envoyées avec consentement refusé (comptées sans clé de visiteur).",
                datatype: "decimal",
            },
            Column {
                en: "consent_unset_percent",
                fr: "consentement_non_exprime_pourcentage",
                about_en: "Percentage of hits sent without a consent decision.",
                about_fr: "Pourcentage des requêtes envoyées sans décision de consentement.",
                datatype: "decimal",
            },
            Column {
                en: "opt_out_percent",
                fr: "refus_de_suivi_pourcentage",
                about_en: "Percentage of hits dropped for an opt-out signal (Global Privacy Control, Do Not Track, the site's opt-out).",
                about_fr: "Pourcentage des requêtes écartées pour un signal de refus (Global Privacy Control, Do Not Track, le refus offert par le site).",
                datatype: "decimal",
            },
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each table has one column per label, dimension and metric of its
    /// asks, and its asks agree on their shape.
    #[test]
    fn columns_match_the_asks() {
        for t in TABLES {
            let a = &t.asks[0];
            let width = usize::from(a.label.is_some()) + a.dimensions.len() + a.metrics.len();
            assert_eq!(t.columns.len(), width, "{}", t.file);
            for other in t.asks {
                assert_eq!(other.label.is_some(), a.label.is_some(), "{}", t.file);
                assert_eq!(other.dimensions.len(), a.dimensions.len(), "{}", t.file);
                assert_eq!(other.metrics, a.metrics, "{}", t.file);
            }
            for c in t.columns {
                for name in [c.en, c.fr] {
                    assert!(
                        name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                        "{name}: headers are plain identifiers"
                    );
                }
            }
        }
    }
}
