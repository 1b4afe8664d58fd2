//! Opt-out signals: `Sec-GPC: 1`, `DNT: 1` and the beacon's own opt-out
//! flag. Read first, so an opted-out hit can be dropped before any other
//! processing touches it.

use crate::config::SiteSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOut {
    Gpc,
    Dnt,
    Beacon,
}

/// The headers as sent (`None` when absent) and the payload flag.
pub struct Signals<'a> {
    pub sec_gpc: Option<&'a [u8]>,
    pub dnt: Option<&'a [u8]>,
    pub payload_opt_out: bool,
}

/// The opt-out signal this site honours, if the hit carries one. The
/// beacon's flag is always honoured: the visitor asked for it explicitly.
pub fn signal(signals: &Signals<'_>, site: &SiteSettings) -> Option<OptOut> {
    let is_one = |v: Option<&[u8]>| v.is_some_and(|v| v.trim_ascii() == b"1");
    if signals.payload_opt_out {
        Some(OptOut::Beacon)
    } else if site.honour_gpc && is_one(signals.sec_gpc) {
        Some(OptOut::Gpc)
    } else if site.honour_dnt && is_one(signals.dnt) {
        Some(OptOut::Dnt)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::pipeline::test_site;

    fn check(
        gpc: Option<&str>,
        dnt: Option<&str>,
        flag: bool,
        honour_dnt: bool,
        expected: Option<OptOut>,
    ) {
        let mut site = test_site("example.org");
        site.honour_dnt = honour_dnt;
        let signals = Signals {
            sec_gpc: gpc.map(str::as_bytes),
            dnt: dnt.map(str::as_bytes),
            payload_opt_out: flag,
        };
        assert_eq!(signal(&signals, &site), expected, "{gpc:?} {dnt:?} {flag}");
    }

    #[test]
    fn reads_each_signal() {
        check(None, None, false, true, None);
        check(Some("1"), None, false, true, Some(OptOut::Gpc));
        check(Some(" 1 "), None, false, true, Some(OptOut::Gpc));
        check(Some("0"), None, false, true, None);
        check(None, Some("1"), false, true, Some(OptOut::Dnt));
        check(None, Some("1"), false, false, None);
        check(None, Some("0"), false, true, None);
        check(None, None, true, false, Some(OptOut::Beacon));
    }
}
