//! L'avis en français, rédigé comme un organisme public québécois le
//! publierait dans sa politique de confidentialité (Loi sur l'accès, A-2.1).
//! Espaces insécables avant le deux-points et dans les guillemets.

use super::{join, link, sorted, t, Block, Facts, Out};
use crate::config::{ConsentMode, OnDenied, OnOptOut};
use crate::privacy::geo::GeoLevel;

const NB: char = '\u{a0}';

pub fn blocks(f: &Facts<'_>) -> Vec<Block> {
    let (o, s) = (f.org, f.site);
    let org = o
        .name
        .clone()
        .unwrap_or_else(|| "L'organisme qui publie ce site".to_string());
    let org_short = o.name.clone().unwrap_or_else(|| "l'organisme".to_string());
    let mut out = Out(Vec::new());

    out.heading(&["id"], format!("Mesure d'audience du site {}", s.id));
    out.para(
        &["organization.name", "id"],
        vec![t(format!(
            "{org} mesure la fréquentation du site {} au moyen de tamis, un outil de mesure d'audience respectueux de la vie privée. \
             Cette mesure a pour seule fin de produire des statistiques anonymes de fréquentation, afin d'améliorer les contenus et les services offerts en ligne. \
             Elle ne sert ni à vous identifier, ni à établir votre profil, ni à vous suivre d'un site à l'autre.",
            s.id
        ))],
    );

    out.heading(&[], "Renseignements recueillis");
    out.para(
        &[],
        vec![t(format!(
            "Lorsque vous consultez une page, votre navigateur transmet une requête à tamis. Les renseignements suivants en sont tirés, réduits dès leur réception, puis regroupés en statistiques par heure{NB}:"
        ))],
    );
    let mut page = "la page consultée (son chemin seulement".to_string();
    let params = {
        let mut p = s.query_params.clone();
        p.sort();
        p
    };
    if params.is_empty() {
        page.push_str(", sans les paramètres de l'adresse");
    } else {
        page.push_str(&format!(
            ", sans les paramètres de l'adresse autres que {}",
            join(
                &params
                    .iter()
                    .map(|p| format!("«{NB}{p}{NB}»"))
                    .collect::<Vec<_>>(),
                "et"
            )
        ));
    }
    if s.hash_routing {
        page.push_str(", avec la partie de l'adresse qui suit le «\u{a0}#\u{a0}» lorsqu'elle désigne une page");
    } else {
        page.push_str(" ni la partie qui suit le «\u{a0}#\u{a0}»");
    }
    page.push_str("); les adresses courriel, les longues suites de chiffres et les identifiants qui y figureraient sont masqués");
    out.item(&["query_params", "hash_routing"], vec![t(page)]);
    out.item(&[], vec![t("le site d'où vous venez (son nom de domaine seulement) et le type de provenance qui en découle : moteur de recherche, réseau social, courriel, accès direct ou autre site".replace(" :", &format!("{NB}:")))]);
    if s.collect_campaigns {
        out.item(&["collect_campaigns"], vec![t("les paramètres de campagne (utm_source, utm_medium, utm_campaign, utm_content et utm_term) présents dans l'adresse de la page, et le nom d'un identifiant de clic publicitaire qui s'y trouverait (gclid, msclkid), jamais sa valeur")]);
    }
    out.item(&[], vec![t("le type de navigateur et sa version (numéros majeur et mineur), le système d'exploitation et sa version (numéro majeur) et le type d'appareil (ordinateur, mobile ou tablette)")]);
    out.item(&[], vec![t("la langue principale de votre navigateur (par exemple «\u{a0}fr\u{a0}» ou «\u{a0}en\u{a0}»)")]);
    match s.geo_level {
        GeoLevel::Region => out.item(&["geo_level"], vec![t("le pays et la région (province ou État) d'où provient la consultation, déduits de votre adresse IP tronquée")]),
        GeoLevel::Country => out.item(&["geo_level"], vec![t("le pays d'où provient la consultation, déduit de votre adresse IP tronquée")]),
        GeoLevel::None => {}
    }
    if !s.event_names.is_empty() {
        let mut text = format!(
            "les actions suivantes sur le site{NB}: {}",
            join(&sorted(&s.event_names), "et")
        );
        if !s.prop_keys.is_empty() {
            text.push_str(&format!(
                ", avec ces seules précisions{NB}: {}",
                join(&sorted(&s.prop_keys), "et")
            ));
        }
        out.item(&["event_names", "prop_keys"], vec![t(text)]);
    }
    out.item(&[], vec![t("la date et l'heure de la consultation (arrondies à l'heure), ainsi que le nombre de pages vues et la durée de la visite, le temps pendant lequel chaque page est restée affichée et jusqu'où elle a été défilée (en pourcentage), additionnés par page")]);

    out.para(
        &[],
        vec![t(format!("Ne sont jamais recueillis ni conservés{NB}:"))],
    );
    out.item(
        &["ipv4_prefix", "ipv6_prefix"],
        vec![t(format!(
            "votre adresse IP complète{NB}: dès sa réception, elle est tronquée en mémoire, avant tout autre usage (seuls les {} premiers bits d'une adresse IPv4 et les {} premiers bits d'une adresse IPv6 sont gardés), et même l'adresse tronquée n'est jamais enregistrée",
            s.ipv4_prefix, s.ipv6_prefix
        ))],
    );
    match s.geo_level {
        GeoLevel::None => out.item(&["geo_level"], vec![t("votre localisation, sous quelque forme que ce soit (ni pays, ni région, ni ville)")]),
        _ => out.item(&["geo_level"], vec![t("votre ville, votre code postal, vos coordonnées géographiques ou votre fournisseur d'accès Internet")]),
    }
    match &s.opt_out_url {
        Some(_) => out.item(&["opt_out_url"], vec![t(format!("un identifiant sur votre appareil, sous forme de témoin (cookie) ou autrement{NB}: aucun n'y est déposé ni lu; seul votre refus, si vous l'exprimez au moyen de la page prévue à cette fin, y est enregistré"))]),
        None => out.item(&["opt_out_url"], vec![t(format!("un identifiant sur votre appareil, sous forme de témoin (cookie) ou autrement{NB}: aucun n'y est déposé ni lu"))]),
    }
    out.item(&[], vec![t("un identifiant d'utilisateur, le contenu d'un formulaire ou tout texte que vous saisissez")]);
    out.item(
        &[],
        vec![t(
            "un lien entre vos visites de jours différents ou entre différents sites",
        )],
    );

    out.heading(&[], "Dénombrement des visiteurs");
    out.para(
        &["timezone"],
        vec![t(format!(
            "Pour compter les visiteurs distincts d'une même journée sans les identifier, tamis calcule en mémoire une empreinte (hachage BLAKE3 avec clé) de l'adresse IP tronquée et des types de navigateur, de système et d'appareil énumérés plus haut. \
             La clé de ce calcul est un nombre aléatoire de 256 bits propre au site{NB}; elle est remplacée chaque jour à minuit (fuseau horaire {}) et détruite dans les 48 heures, et chaque destruction est consignée. \
             L'empreinte n'est jamais enregistrée telle quelle{NB}: elle ne sert qu'à produire des décomptes de visiteurs distincts. \
             Une fois la clé détruite, personne, pas même {org_short}, ne peut relier une statistique à une adresse IP ni à une autre journée.",
            s.timezone.name()
        ).replace(&format!("{NB};"), ";"))],
    );
    if s.consent_mode == ConsentMode::Required {
        out.para(&["consent_mode"], vec![t("Cette empreinte n'est calculée que si vous avez donné votre consentement au moyen du bandeau du site.")]);
    }

    out.heading(&[], "Consentement et refus");
    match s.consent_mode {
        ConsentMode::NotRequired => out.para(
            &["consent_mode"],
            vec![t("Limitée à des statistiques anonymes, cette mesure d'audience ne requiert pas votre consentement. Vous pouvez toutefois la refuser en tout temps.")],
        ),
        ConsentMode::Required => out.para(
            &["consent_mode"],
            vec![t("Cette mesure d'audience requiert votre consentement; tant que vous ne l'avez pas donné, votre consultation est traitée comme un refus de consentement.")],
        ),
    }
    match s.on_denied {
        OnDenied::Anonymous => out.para(&["on_denied"], vec![t(format!("Si vous refusez votre consentement, votre consultation est seulement comptée comme une page vue{NB}: aucune empreinte n'est calculée et aucune visite n'est comptée."))]),
        OnDenied::Drop => out.para(&["on_denied"], vec![t("Si vous refusez votre consentement, votre consultation n'est pas comptée.")]),
    }
    out.para(
        &[],
        vec![t(format!("Pour refuser la mesure d'audience{NB}:"))],
    );
    // Each way after the first begins with "ou".
    let mut first = true;
    let mut or = || {
        if std::mem::take(&mut first) {
            ""
        } else {
            "ou "
        }
    };
    if s.honour_gpc {
        out.item(&["honour_gpc"], vec![t(format!("{}activez le signal Global Privacy Control (GPC) de votre navigateur, qui est respecté automatiquement", or()))]);
    }
    if s.honour_dnt {
        out.item(&["honour_dnt", "honour_gpc"], vec![t(format!("{}activez l'option «\u{a0}Ne pas me suivre\u{a0}» (Do Not Track) de votre navigateur", or()))]);
    }
    match &s.opt_out_url {
        Some(url) => out.item(&["opt_out_url", "honour_gpc", "honour_dnt"], vec![t(format!("{}utilisez la page de refus, qui enregistre votre choix dans votre navigateur{NB}: ", or())), link(url.clone(), url.clone())]),
        None => out.item(&["opt_out_url", "honour_gpc", "honour_dnt"], vec![t(format!("{}bloquez les requêtes envoyées à tamis au moyen d'un bloqueur de contenu", or()))]),
    }
    match s.on_opt_out {
        OnOptOut::Drop => out.para(
            &["on_opt_out"],
            vec![t("Lorsque vous refusez, votre consultation est écartée avant tout traitement{NB}: rien n'est enregistré ni compté à son sujet, sauf le nombre total de consultations écartées par heure.".replace("{NB}", &NB.to_string()))],
        ),
        OnOptOut::Anonymous => out.para(&["on_opt_out"], vec![t(format!("Lorsque vous refusez, votre consultation est seulement comptée comme une page vue{NB}: aucune empreinte n'est calculée et aucune visite n'est comptée."))]),
    }
    out.para(&[], vec![t("Votre refus s'applique dès la page suivante et n'a aucune conséquence sur votre accès au site ou aux services.")]);

    out.heading(&[], "Conservation, accès et sécurité");
    out.para(
        &["k_threshold"],
        vec![t(format!(
            "Seules des statistiques agrégées par heure sont conservées, jamais de données sur une consultation ou un visiteur en particulier. \
             Aucune ligne de statistique représentant moins de {} visiteurs n'est affichée{NB}: elle est regroupée avec d'autres sous la mention «{NB}(other){NB}» ou masquée.",
            s.k_threshold
        ))],
    );
    let base = crate::query::disclosure::rounding_base(s.k_threshold);
    out.para(
        &["k_threshold"],
        vec![t(format!(
            "Pour qu'aucune combinaison de chiffres ne révèle un petit groupe, chaque nombre publié est en outre arrondi à un multiple de {base}, \
             vers le haut ou vers le bas au hasard, en proportion de sa distance (la pratique du recensement de Statistique Canada){NB}; la même question reçoit toujours la même réponse, de sorte que la reposer ne révèle rien. \
             Les chiffres portant sur moins d'une journée (une heure, les dernières minutes) qui représentent moins de {k} visiteurs sont toujours masqués. \
             Par exemple, avec un seuil de 5 et 6 visiteurs sur /dp/a et 1 sur /dp/ab, «{NB}pages contenant /dp/a{NB}» et «{NB}page /dp/a{NB}» reçoivent chacune 5 ou 10, jamais 7 et 6{NB}: leur différence ne désigne jamais le visiteur de /dp/ab{NB}; \
             une heure de 2 visiteurs est masquée, qu'on la demande comme heure ou comme période{NB}; et un total de 30 moins les lignes affichées ne donne plus les 4 visiteurs regroupés sous «{NB}(other){NB}». \
             Les nombres exacts sont réservés aux jetons d'accès expressément configurés à cette fin, et chacune de leurs consultations est consignée comme telle dans le journal d'audit.",
            k = s.k_threshold,
        ))],
    );
    out.para(
        &["retention_months"],
        vec![t(format!("Ces statistiques sont conservées pendant {} mois, puis supprimées automatiquement, mois par mois{NB}; chaque suppression est consignée.", s.retention_months).replace(&format!("{NB};"), ";"))],
    );
    out.para(
        &["organization.name"],
        vec![t(format!(
            "Seules les personnes autorisées par {org_short} peuvent consulter les statistiques, au moyen de jetons d'accès nominatifs{NB}; chaque consultation est consignée dans un journal d'audit.",
        ).replace(&format!("{NB};"), ";"))],
    );
    let operator = o
        .hosting_operator
        .clone()
        .unwrap_or_else(|| org_short.clone());
    let place = o
        .hosting_location
        .as_ref()
        .map(|l| format!(", situés à l'emplacement suivant{NB}: {l}"))
        .unwrap_or_default();
    let mut hosting = format!(
        "Les statistiques sont hébergées sur des serveurs exploités par {operator}{place}. "
    );
    if o.hosting_in_quebec {
        hosting.push_str("Elles ne sont communiquées à aucun tiers et ne sont pas communiquées à l'extérieur du Québec.");
    } else {
        hosting.push_str("Elles ne sont communiquées à aucun tiers; elles sont toutefois hébergées à l'extérieur du Québec.");
    }
    hosting.push_str(" tamis n'utilise aucun service externe.");
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
        vec![t("Mesures de sécurité{NB}: troncature des adresses IP en mémoire avant tout usage, absence de données individuelles, seuil de confidentialité dans les rapports, clé quotidienne détruite dans les 48 heures, accès par jetons nominatifs, journal d'audit et suppression automatique des données échues.".replace("{NB}", &NB.to_string()))],
    );
    match s.geo_level {
        GeoLevel::None => out.para(&["geo_level"], vec![t("Aucune technologie permettant de vous identifier, de vous localiser ou d'établir votre profil n'est utilisée.")]),
        GeoLevel::Country => out.para(&["geo_level"], vec![t(format!("Aucune technologie permettant de vous identifier ou d'établir votre profil n'est utilisée. La seule localisation effectuée est celle de votre pays, déduite de l'adresse IP tronquée{NB}; elle peut être désactivée par {org_short}.").replace(&format!("{NB};"), ";"))]),
        GeoLevel::Region => out.para(&["geo_level"], vec![t(format!("Aucune technologie permettant de vous identifier ou d'établir votre profil n'est utilisée. La seule localisation effectuée est celle de votre région, déduite de l'adresse IP tronquée{NB}; elle peut être réduite au pays ou désactivée par {org_short}.").replace(&format!("{NB};"), ";"))]),
    }

    out.heading(&[], "Vos droits et pour nous joindre");
    out.para(
        &[],
        vec![t("Comme ces statistiques ne permettent pas de vous identifier, aucune d'elles ne peut vous être associée ni vous être communiquée. Vous pouvez néanmoins poser toute question sur cette mesure d'audience, exercer vos droits d'accès et de rectification ou porter plainte auprès de la personne responsable de la protection des renseignements personnels.")],
    );
    let mut contact = vec![t(format!(
        "Responsable de la protection des renseignements personnels{NB}: "
    ))];
    let mut who = o
        .privacy_officer
        .clone()
        .unwrap_or_else(|| "la personne responsable".to_string());
    who.push_str(&format!(", {org_short}"));
    if let Some(address) = &o.address {
        who.push_str(&format!(", {address}"));
    }
    contact.push(t(who));
    if let Some(email) = &o.privacy_officer_email {
        contact.push(t(format!("{NB}— courriel{NB}: ")));
        contact.push(link(email.clone(), format!("mailto:{email}")));
    }
    if let Some(phone) = &o.privacy_officer_phone {
        contact.push(t(format!("{NB}— téléphone{NB}: {phone}")));
    }
    if let Some(website) = &o.website {
        contact.push(t(format!("{NB}— site Web{NB}: ")));
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
        vec![
            t("Si la réponse ne vous satisfait pas, vous pouvez vous adresser à la Commission d'accès à l'information du Québec{NB}: ".replace("{NB}", &NB.to_string())),
            link("www.cai.gouv.qc.ca", "https://www.cai.gouv.qc.ca"),
            t("."),
        ],
    );
    out.0
}
