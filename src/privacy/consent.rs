//! The consent decision: whether a hit gets a visitor key, is counted
//! anonymously, or is dropped, from its consent state and the site's policy.

use crate::config::{ConsentMode, OnDenied, OnOptOut, SiteSettings};
use crate::privacy::coded::coded_enum;
use crate::privacy::optout::OptOut;

coded_enum! {
    /// What is kept of a counted hit's consent, so reports can show the
    /// consent rate. Codes are written to the journal; labels are the
    /// values of the `consent` column and of the stats API's filters.
    pub enum Consent {
        Granted = 0 => "granted",
        Denied = 1 => "denied",
        /// The hit carried no consent state (or one tamis does not know).
        Unset = 2 => "none",
        /// An opted-out hit that its site chose to count anonymously.
        OptOut = 3 => "opt_out",
    }
}

/// The consent state a hit carries (`c` in the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    Granted,
    Denied,
    Unset,
}

impl ConsentState {
    /// Unknown values are treated as unset rather than refused: an old
    /// beacon must not lose hits, and unset is never more permissive than
    /// the site's own mode.
    pub fn parse(value: Option<&str>) -> ConsentState {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("granted") => ConsentState::Granted,
            Some(v) if v.eq_ignore_ascii_case("denied") => ConsentState::Denied,
            _ => ConsentState::Unset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Counted with a daily visitor key and a session.
    Identified,
    /// Counted as pageviews only: no visitor key, no session.
    Anonymous,
    /// Not counted; only the dropped counter moves.
    Drop,
}

/// What is kept of a hit's consent: its state, unless an opt-out signal
/// overrides it.
pub fn kept(state: ConsentState, opt_out: Option<OptOut>) -> Consent {
    match (opt_out, state) {
        (Some(_), _) => Consent::OptOut,
        (None, ConsentState::Granted) => Consent::Granted,
        (None, ConsentState::Denied) => Consent::Denied,
        (None, ConsentState::Unset) => Consent::Unset,
    }
}

pub fn decide(state: ConsentState, opt_out: Option<OptOut>, site: &SiteSettings) -> Decision {
    if opt_out.is_some() {
        return match site.on_opt_out {
            OnOptOut::Drop => Decision::Drop,
            OnOptOut::Anonymous => Decision::Anonymous,
        };
    }
    let denied = match (state, site.consent_mode) {
        (ConsentState::Granted, _) => false,
        (ConsentState::Denied, _) => true,
        (ConsentState::Unset, ConsentMode::NotRequired) => false,
        (ConsentState::Unset, ConsentMode::Required) => true,
    };
    match (denied, site.on_denied) {
        (false, _) => Decision::Identified,
        (true, OnDenied::Anonymous) => Decision::Anonymous,
        (true, OnDenied::Drop) => Decision::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::pipeline::test_site;

    fn check(
        state: &str,
        opt_out: Option<OptOut>,
        mode: ConsentMode,
        on_denied: OnDenied,
        on_opt_out: OnOptOut,
        expected: Decision,
    ) {
        let mut site = test_site("example.org");
        site.consent_mode = mode;
        site.on_denied = on_denied;
        site.on_opt_out = on_opt_out;
        let got = decide(ConsentState::parse(Some(state)), opt_out, &site);
        assert_eq!(
            got, expected,
            "{state} {opt_out:?} {mode:?} {on_denied:?} {on_opt_out:?}"
        );
    }

    #[test]
    fn follows_the_site_policy() {
        use ConsentMode::*;
        use Decision::*;
        check(
            "",
            None,
            NotRequired,
            OnDenied::Anonymous,
            OnOptOut::Drop,
            Identified,
        );
        check(
            "granted",
            None,
            NotRequired,
            OnDenied::Anonymous,
            OnOptOut::Drop,
            Identified,
        );
        check(
            "denied",
            None,
            NotRequired,
            OnDenied::Anonymous,
            OnOptOut::Drop,
            Anonymous,
        );
        check(
            "denied",
            None,
            NotRequired,
            OnDenied::Drop,
            OnOptOut::Drop,
            Drop,
        );
        check(
            "",
            None,
            Required,
            OnDenied::Anonymous,
            OnOptOut::Drop,
            Anonymous,
        );
        check(
            "GRANTED",
            None,
            Required,
            OnDenied::Anonymous,
            OnOptOut::Drop,
            Identified,
        );
        check(
            "maybe",
            None,
            Required,
            OnDenied::Drop,
            OnOptOut::Drop,
            Drop,
        );
        check(
            "granted",
            Some(OptOut::Gpc),
            NotRequired,
            OnDenied::Anonymous,
            OnOptOut::Drop,
            Drop,
        );
        check(
            "granted",
            Some(OptOut::Dnt),
            NotRequired,
            OnDenied::Anonymous,
            OnOptOut::Anonymous,
            Anonymous,
        );
    }

    #[test]
    fn an_opt_out_signal_overrides_the_kept_state() {
        assert_eq!(kept(ConsentState::Granted, None), Consent::Granted);
        assert_eq!(kept(ConsentState::Denied, None), Consent::Denied);
        assert_eq!(kept(ConsentState::Unset, None), Consent::Unset);
        assert_eq!(
            kept(ConsentState::Granted, Some(OptOut::Gpc)),
            Consent::OptOut
        );
    }

    #[test]
    fn consent_codes_round_trip_and_labels_are_the_column_values() {
        crate::privacy::coded::check_codes(&Consent::ALL, |c| c as u8, Consent::as_str);
        let labels: Vec<&str> = Consent::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels, ["granted", "denied", "none", "opt_out"]);
    }
}
