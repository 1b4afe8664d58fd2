//! The notice in English, with the same blocks, in the same order and
//! depending on the same settings as the French one.

use super::{join, link, sorted, t, Block, Facts, Out};
use crate::config::{ConsentMode, OnDenied, OnOptOut};
use crate::privacy::geo::GeoLevel;

pub fn blocks(f: &Facts<'_>) -> Vec<Block> {
    let (o, s) = (f.org, f.site);
    let org = o
        .name
        .clone()
        .unwrap_or_else(|| "The organization that publishes this site".to_string());
    let org_short = o
        .name
        .clone()
        .unwrap_or_else(|| "the organization".to_string());
    let mut out = Out(Vec::new());

    out.heading(&["id"], format!("Audience measurement on {}", s.id));
    out.para(
        &["organization.name", "id"],
        vec![t(format!(
            "{org} measures visits to {} with tamis, a privacy-respecting audience measurement tool. \
             Its only purpose is to produce anonymous visit statistics, in order to improve the content and services offered online. \
             It is not used to identify you, to profile you or to follow you from one site to another.",
            s.id
        ))],
    );

    out.heading(&[], "Information collected");
    out.para(
        &[],
        vec![t("When you view a page, your browser sends a request to tamis. The following information is taken from it, reduced as soon as it arrives, then grouped into hourly statistics:")],
    );
    let mut params = s.query_params.clone();
    params.sort();
    let mut page = "the page viewed (its path only".to_string();
    if params.is_empty() {
        page.push_str(", without the parameters of the address");
    } else {
        page.push_str(&format!(
            ", without the parameters of the address other than {}",
            join(
                &params
                    .iter()
                    .map(|p| format!("\u{201c}{p}\u{201d}"))
                    .collect::<Vec<_>>(),
                "and"
            )
        ));
    }
    if s.hash_routing {
        page.push_str(
            ", with the part of the address after \u{201c}#\u{201d} when it names a page",
        );
    } else {
        page.push_str(" or the part after \u{201c}#\u{201d}");
    }
    page.push_str(
        "); e-mail addresses, long runs of digits and identifiers that may appear in it are masked",
    );
    out.item(&["query_params", "hash_routing"], vec![t(page)]);
    out.item(&[], vec![t("the site you came from (its domain name only) and the kind of source it indicates: search engine, social network, e-mail, direct access or other site")]);
    if s.collect_campaigns {
        out.item(&["collect_campaigns"], vec![t("the campaign parameters (utm_source, utm_medium, utm_campaign, utm_content and utm_term) present in the address of the page, and the name of an advertising click identifier found there (gclid, msclkid), never its value")]);
    }
    out.item(&[], vec![t("the type of browser and its version (major and minor number), the operating system and its version (major number) and the type of device (desktop, mobile or tablet)")]);
    out.item(&[], vec![t("the main language of your browser (for example \u{201c}fr\u{201d} or \u{201c}en\u{201d})")]);
    match s.geo_level {
        GeoLevel::Region => out.item(&["geo_level"], vec![t("the country and region (province or state) the visit comes from, derived from your truncated IP address")]),
        GeoLevel::Country => out.item(&["geo_level"], vec![t("the country the visit comes from, derived from your truncated IP address")]),
        GeoLevel::None => {}
    }
    if !s.event_names.is_empty() {
        let mut text = format!(
            "the following actions on the site: {}",
            join(&sorted(&s.event_names), "and")
        );
        if !s.prop_keys.is_empty() {
            text.push_str(&format!(
                ", with these details only: {}",
                join(&sorted(&s.prop_keys), "and")
            ));
        }
        out.item(&["event_names", "prop_keys"], vec![t(text)]);
    }
    out.item(&[], vec![t("the date and time of the visit (rounded to the hour), the number of pages viewed and the length of the visit, how long each page was shown and how far down it was scrolled (in percent), added up by page")]);

    out.para(&[], vec![t("Never collected or kept:")]);
    out.item(
        &["ipv4_prefix", "ipv6_prefix"],
        vec![t(format!(
            "your full IP address: as soon as it arrives, it is truncated in memory, before any other use (only the first {} bits of an IPv4 address and the first {} bits of an IPv6 address are kept), and even the truncated address is never stored",
            s.ipv4_prefix, s.ipv6_prefix
        ))],
    );
    match s.geo_level {
        GeoLevel::None => out.item(
            &["geo_level"],
            vec![t("your location, in any form (no country, region or city)")],
        ),
        _ => out.item(
            &["geo_level"],
            vec![t(
                "your city, postal code, geographic coordinates or internet service provider",
            )],
        ),
    }
    match &s.opt_out_url {
        Some(_) => out.item(&["opt_out_url"], vec![t("an identifier on your device, as a cookie or otherwise: none is stored or read there; only your refusal, if you express it on the page provided for it, is stored there")]),
        None => out.item(&["opt_out_url"], vec![t("an identifier on your device, as a cookie or otherwise: none is stored or read there")]),
    }
    out.item(
        &[],
        vec![t(
            "a user identifier, the content of a form or any text you type",
        )],
    );
    out.item(
        &[],
        vec![t(
            "a link between your visits on different days or between different sites",
        )],
    );

    out.heading(&[], "Counting visitors");
    out.para(
        &["timezone"],
        vec![t(format!(
            "To count the distinct visitors of a day without identifying them, tamis computes in memory a fingerprint (a keyed BLAKE3 hash) of the truncated IP address and of the browser, system and device types listed above. \
             The key of this computation is a random 256-bit number specific to the site; it is replaced every day at midnight (time zone {}) and destroyed within 48 hours, and each destruction is recorded. \
             The fingerprint is never stored as such: it is only used to produce counts of distinct visitors. \
             Once the key is destroyed, no one, not even {org_short}, can link a statistic to an IP address or to another day.",
            s.timezone.name()
        ))],
    );
    if s.consent_mode == ConsentMode::Required {
        out.para(&["consent_mode"], vec![t("This fingerprint is computed only if you have given your consent through the site's banner.")]);
    }

    out.heading(&[], "Consent and refusal");
    match s.consent_mode {
        ConsentMode::NotRequired => out.para(
            &["consent_mode"],
            vec![t("Limited to anonymous statistics, this audience measurement does not require your consent. You may nevertheless refuse it at any time.")],
        ),
        ConsentMode::Required => out.para(
            &["consent_mode"],
            vec![t("This audience measurement requires your consent; until you have given it, your visit is treated as a refusal of consent.")],
        ),
    }
    match s.on_denied {
        OnDenied::Anonymous => out.para(&["on_denied"], vec![t("If you refuse your consent, your visit is counted only as a page view: no fingerprint is computed and no visit is counted.")]),
        OnDenied::Drop => out.para(&["on_denied"], vec![t("If you refuse your consent, your visit is not counted.")]),
    }
    out.para(&[], vec![t("To refuse audience measurement:")]);
    // Each way after the first begins with "or".
    let mut first = true;
    let mut or = || {
        if std::mem::take(&mut first) {
            ""
        } else {
            "or "
        }
    };
    if s.honour_gpc {
        out.item(&["honour_gpc"], vec![t(format!("{}turn on your browser's Global Privacy Control (GPC) signal, which is honoured automatically", or()))]);
    }
    if s.honour_dnt {
        out.item(
            &["honour_dnt", "honour_gpc"],
            vec![t(format!(
                "{}turn on your browser's \u{201c}Do Not Track\u{201d} option",
                or()
            ))],
        );
    }
    match &s.opt_out_url {
        Some(url) => out.item(
            &["opt_out_url", "honour_gpc", "honour_dnt"],
            vec![
                t(format!(
                    "{}use the opt-out page, which stores your choice in your browser: ",
                    or()
                )),
                link(url.clone(), url.clone()),
            ],
        ),
        None => out.item(
            &["opt_out_url", "honour_gpc", "honour_dnt"],
            vec![t(format!(
                "{}block the requests sent to tamis with a content blocker",
                or()
            ))],
        ),
    }
    match s.on_opt_out {
        OnOptOut::Drop => out.para(
            &["on_opt_out"],
            vec![t("When you refuse, your visit is set aside before any processing: nothing about it is stored or counted, except the total number of visits set aside per hour.")],
        ),
        OnOptOut::Anonymous => out.para(&["on_opt_out"], vec![t("When you refuse, your visit is counted only as a page view: no fingerprint is computed and no visit is counted.")]),
    }
    out.para(&[], vec![t("Your refusal applies from the next page and has no consequence on your access to the site or its services.")]);

    out.heading(&[], "Retention, access and security");
    out.para(
        &["k_threshold"],
        vec![t(format!(
            "Only statistics aggregated by hour are kept, never data about a particular visit or visitor. \
             No statistics row representing fewer than {} visitors is shown: it is grouped with others under \u{201c}(other)\u{201d} or withheld.",
            s.k_threshold
        ))],
    );
    let base = crate::query::disclosure::rounding_base(s.k_threshold);
    out.para(
        &["k_threshold"],
        vec![t(format!(
            "So that no combination of numbers reveals a small group, every number published is also rounded to a multiple of {base}, \
             up or down at random in proportion to its distance (Statistics Canada's census practice); the same question always gets the same answer, so asking again reveals nothing. \
             Figures over less than a day (one hour, the last minutes) describing fewer than {k} visitors are always withheld. \
             For example, with a threshold of 5 and 6 visitors on /dp/a and 1 on /dp/ab, “pages containing /dp/a” and “page /dp/a” are both answered 5 or 10, never 7 and 6, so their difference never singles out the visitor of /dp/ab; \
             an hour with 2 visitors is withheld whether asked as an hour or as a time range; and a total of 30 minus the rows shown no longer gives the 4 visitors grouped under “(other)”. \
             Exact numbers are reserved to access tokens expressly configured for them, and each of their reads is recorded as such in the audit log.",
            k = s.k_threshold,
        ))],
    );
    out.para(&["retention_months"], vec![t(format!("These statistics are kept for {} months, then deleted automatically, month by month; each deletion is recorded.", s.retention_months))]);
    out.para(
        &["organization.name"],
        vec![t(format!("Only people authorized by {org_short} can read the statistics, with named access tokens; every read is recorded in an audit log."))],
    );
    let operator = o
        .hosting_operator
        .clone()
        .unwrap_or_else(|| org_short.clone());
    let place = o
        .hosting_location
        .as_ref()
        .map(|l| format!(", located in {l}"))
        .unwrap_or_default();
    let mut hosting = format!("The statistics are hosted on servers run by {operator}{place}. ");
    if o.hosting_in_quebec {
        hosting.push_str(
            "They are not disclosed to any third party and are not communicated outside Québec.",
        );
    } else {
        hosting.push_str(
            "They are not disclosed to any third party; they are, however, hosted outside Québec.",
        );
    }
    hosting.push_str(" tamis uses no outside service.");
    out.para(
        &[
            "organization.hosting_operator",
            "organization.hosting_location",
            "organization.hosting_in_quebec",
        ],
        vec![t(hosting)],
    );
    out.para(
        &[],
        vec![t("Security measures: IP addresses truncated in memory before any use, no individual data, a confidentiality threshold in reports, a daily key destroyed within 48 hours, access by named tokens, an audit log and automatic deletion of expired data.")],
    );
    match s.geo_level {
        GeoLevel::None => out.para(&["geo_level"], vec![t("No technology that could identify you, locate you or profile you is used.")]),
        GeoLevel::Country => out.para(&["geo_level"], vec![t(format!("No technology that could identify you or profile you is used. The only location determined is your country, derived from the truncated IP address; {org_short} can turn it off."))]),
        GeoLevel::Region => out.para(&["geo_level"], vec![t(format!("No technology that could identify you or profile you is used. The only location determined is your region, derived from the truncated IP address; {org_short} can reduce it to the country or turn it off."))]),
    }

    out.heading(&[], "Your rights and how to reach us");
    out.para(
        &[],
        vec![t("Because these statistics cannot identify you, none of them can be associated with you or communicated to you. You may nevertheless ask any question about this audience measurement, exercise your rights of access and rectification or file a complaint with the person in charge of the protection of personal information.")],
    );
    let mut contact = vec![t(
        "Person in charge of the protection of personal information: ",
    )];
    let mut who = o
        .privacy_officer
        .clone()
        .unwrap_or_else(|| "the person in charge".to_string());
    who.push_str(&format!(", {org_short}"));
    if let Some(address) = &o.address {
        who.push_str(&format!(", {address}"));
    }
    contact.push(t(who));
    if let Some(email) = &o.privacy_officer_email {
        contact.push(t(" \u{2014} e-mail: "));
        contact.push(link(email.clone(), format!("mailto:{email}")));
    }
    if let Some(phone) = &o.privacy_officer_phone {
        contact.push(t(format!(" \u{2014} telephone: {phone}")));
    }
    if let Some(website) = &o.website {
        contact.push(t(" \u{2014} website: "));
        contact.push(link(website.clone(), website.clone()));
    }
    out.para(
        &[
            "organization.privacy_officer",
            "organization.privacy_officer_email",
            "organization.privacy_officer_phone",
            "organization.name",
            "organization.address",
            "organization.website",
        ],
        contact,
    );
    out.para(
        &[],
        vec![t("If you are not satisfied with the answer, you may contact the Commission d'accès à l'information du Québec: "), link("www.cai.gouv.qc.ca", "https://www.cai.gouv.qc.ca"), t(".")],
    );
    out.0
}
