//! Shared links: a read-only dashboard of one site behind an unguessable
//! URL (issue 17, part 4; see /work/notes/share-design.md while it is a
//! work in progress). This module is pure: link ids and secrets, their
//! digests, the session cookie's value and its check, expiry parsing, and
//! a link's state from its stored events. It does no I/O; the rows live in
//! ClickHouse (`sink::shares`), the HTTP side is `query`'s.
//!
//! The secret never leaves the operator's terminal and the visitor's
//! browser: tamis stores its SHA-256 digest only (a 256-bit random secret
//! needs no slow hash), and the URL carries it in the fragment, which
//! browsers never send to a server.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest a session cookie lives, whatever the link's expiry.
pub const SESSION_LIFETIME: Duration = Duration::hours(24);

/// A link's public id (shown by `tamis share list`, used to revoke) and
/// its secret (shown once, at creation).
pub struct NewLink {
    pub id: String,
    pub secret: Secret,
}

/// The secret part of a link. Prints as `<redacted>` in `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    pub fn parse(text: &str) -> Option<Secret> {
        let ok = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Secret(text.to_ascii_lowercase()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// What is stored: the secret's SHA-256, hex.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
    /// Whether `stored` (hex, as [`Secret::digest`] writes it) is this
    /// secret's digest, compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        bool::from(self.digest().as_bytes().ct_eq(stored.as_bytes()))
    }
}

impl NewLink {
    pub fn generate() -> NewLink {
        NewLink {
            id: hex(&rand::random::<[u8; 8]>()),
            secret: Secret(hex(&rand::random::<[u8; 32]>())),
        }
    }

    /// The URL to hand out: the secret in the fragment.
    pub fn url(&self, base: &str) -> String {
        format!(
            "{}/share/{}#{}",
            base.trim_end_matches('/'),
            self.id,
            self.secret.0
        )
    }
}

/// How a shared link's reads are named where a token's name would be (the
/// audit log's actor, the key of its running queries): `share:<id>`. No
/// configured token may take a name that starts so.
pub const ACTOR_PREFIX: &str = "share:";

/// A link id as the HTTP side accepts it: 16 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One stored event of a link (a row of `shared_links`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub link_id: String,
    pub site_id: String,
    pub name: String,
    pub secret_sha256: String,
    /// Empty when the link has no password.
    pub password_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The operator who created or revoked it.
    pub actor: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Revoke,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Revoke => "revoke",
        }
    }
    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "create" => Some(EventKind::Create),
            "revoke" => Some(EventKind::Revoke),
            _ => None,
        }
    }
}

/// A link as its events make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub secret_sha256: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Expired,
    Revoked,
}

impl Link {
    /// The links `events` describe, in creation order. A revoke without its
    /// create (on a shard not yet answering, say) is kept aside: the link
    /// is unknown, hence refused, either way.
    pub fn from_events(events: &[Event]) -> Vec<Link> {
        let mut links: Vec<Link> = Vec::new();
        let mut creates: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == EventKind::Create)
            .collect();
        creates.sort_by_key(|e| e.at);
        for e in creates {
            if links.iter().any(|l| l.id == e.link_id) {
                continue;
            }
            links.push(Link {
                id: e.link_id.clone(),
                site_id: e.site_id.clone(),
                name: e.name.clone(),
                secret_sha256: e.secret_sha256.clone(),
                password_hash: e.password_hash.clone(),
                created_at: e.at,
                expires_at: e.expires_at,
                revoked_at: None,
            });
        }
        for e in events.iter().filter(|e| e.kind == EventKind::Revoke) {
            if let Some(l) = links.iter_mut().find(|l| l.id == e.link_id) {
                l.revoked_at = Some(l.revoked_at.map_or(e.at, |r| r.min(e.at)));
            }
        }
        links
    }

    pub fn state(&self, now: DateTime<Utc>) -> State {
        if self.revoked_at.is_some() {
            State::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            State::Expired
        } else {
            State::Active
        }
    }

    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }

    /// Until when a session opened at `now` lasts: a day at most, never past
    /// the link's expiry.
    pub fn session_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let day = now + SESSION_LIFETIME;
        self.expires_at.map_or(day, |t| t.min(day))
    }

    /// The session cookie's value for this link: the end of the session
    /// and a MAC over it keyed by the link's stored secret digest and
    /// password hash. The secret itself stays out of the cookie (a leaked
    /// cookie header is not the link), and a session of a password link
    /// can be made only by whoever passed the password check (or read the
    /// database, who can read the statistics anyway).
    pub fn session_cookie(&self, until: DateTime<Utc>) -> String {
        format!(
            "{}.{}",
            until.timestamp(),
            self.session_mac(until.timestamp())
        )
    }

    fn session_mac(&self, until: i64) -> String {
        let mut key_input = Vec::new();
        prefixed(&mut key_input, self.secret_sha256.as_bytes());
        prefixed(&mut key_input, self.password_hash.as_bytes());
        let key = blake3::derive_key("tamis share session v2", &key_input);
        let mut message = Vec::new();
        prefixed(&mut message, self.id.as_bytes());
        prefixed(&mut message, until.to_string().as_bytes());
        blake3::keyed_hash(&key, &message).to_hex().to_string()
    }

    /// Whether `cookie` is a live session of this link at `now`: its MAC
    /// holds and its end is ahead, but no further than a session lasts
    /// (with [`CLOCK_SLACK`] for collectors whose clocks differ). The
    /// link's own state (revoked, expired) is checked by the caller.
    pub fn check_session(&self, cookie: &str, now: DateTime<Utc>) -> bool {
        let mut parts = cookie.split('.');
        let (Some(until), Some(mac), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Ok(until) = until.parse::<i64>() else {
            return false;
        };
        let latest = (now + SESSION_LIFETIME + CLOCK_SLACK).timestamp();
        if until <= now.timestamp() || until > latest {
            return false;
        }
        let expected = self.session_mac(until);
        bool::from(expected.as_bytes().ct_eq(mac.as_bytes()))
    }
}

/// How far ahead of this collector's clock another's may have set a
/// session's end.
const CLOCK_SLACK: Duration = Duration::minutes(5);

fn prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Shortest password a link may have.
pub const MIN_PASSWORD: usize = 8;

/// A link password's Argon2id hash (PHC string, default parameters), as
/// stored. Passwords are chosen by people, so unlike secrets they get a
/// slow hash.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!("at least {MIN_PASSWORD} characters"));
    }
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` is the one `stored` ([`hash_password`]) was made of.
pub fn password_matches(password: &str, stored: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(stored) {
        Ok(hash) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Longest expiry a link may be given.
const MAX_DAYS: i64 = 3 * 366;

/// `--expires`: a duration ahead of `now` (`12h`, `30d`), a date (the
/// start of that day, UTC) or an RFC 3339 time; it must be in the future.
pub fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = text.trim();
    let at = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
    } else {
        let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let hours = match unit {
            "h" => 1,
            "d" => 24,
            _ => {
                return Err(format!(
                    "`{s}` is not a duration (12h, 30d), a date or an RFC 3339 time"
                ))
            }
        };
        let n: i64 = number
            .parse()
            .map_err(|_| format!("`{s}`: at most {MAX_DAYS} days"))?;
        let hours = n
            .checked_mul(hours)
            .filter(|h| *h <= MAX_DAYS * 24)
            .ok_or_else(|| format!("`{s}`: at most {MAX_DAYS} days"))?;
        now + Duration::hours(hours)
    };
    if at <= now {
        return Err(format!("`{s}` is not in the future"));
    }
    if at > now + Duration::days(MAX_DAYS) {
        return Err(format!("`{s}`: at most {MAX_DAYS} days ahead"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(input: &str, expected: Result<&str, ()>) {
        let got = parse_expiry(input, now()).map(|t| t.to_rfc3339());
        match expected {
            Ok(t) => assert_eq!(got.as_deref(), Ok(t), "{input}"),
            Err(()) => assert!(got.is_err(), "{input}: {got:?}"),
        }
    }

    #[test]
    fn expiry_is_a_future_duration_date_or_time() {
        check("12h", Ok("2026-12-06T00:00:00+00:00"));
        check("30d", Ok("2027-01-04T12:00:00+00:00"));
        check("2027-01-01", Ok("2027-01-01T00:00:00+00:00"));
        check("2027-01-01T10:00:00-05:00", Ok("2027-01-01T15:00:00+00:00"));
        check("2026-12-01", Err(()));
        check("0h", Err(()));
        check("5y", Err(()));
        check("99999999999999999999d", Err(()));
        check("2000d", Err(()));
    }

    fn link(password_hash: &str, secret: &Secret) -> Link {
        Link {
            id: "0123456789abcdef".into(),
            site_id: "example.org".into(),
            name: "board".into(),
            secret_sha256: secret.digest(),
            password_hash: password_hash.into(),
            created_at: now(),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn ids_and_secrets_are_random_and_the_url_keeps_the_secret_in_the_fragment() {
        let (a, b) = (NewLink::generate(), NewLink::generate());
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret.expose(), b.secret.expose());
        assert!(valid_id(&a.id));
        assert!(Secret::parse(a.secret.expose()).is_some());
        let url = a.url("https://stats.example.org/");
        assert_eq!(
            url,
            format!(
                "https://stats.example.org/share/{}#{}",
                a.id,
                a.secret.expose()
            )
        );
        assert!(!format!("{:?}", a.secret).contains(a.secret.expose()));
        assert!(a.secret.matches(&a.secret.digest()));
        assert!(!b.secret.matches(&a.secret.digest()));
    }

    #[test]
    fn a_session_cookie_opens_only_its_link_until_its_end() {
        let secret = NewLink::generate().secret;
        let l = link("", &secret);
        let until = l.session_until(now());
        let cookie = l.session_cookie(until);
        assert!(l.check_session(&cookie, now()));
        assert!(!l.check_session(&cookie, until));
        assert!(!cookie.contains(secret.expose()), "the secret stays out");
        // Another link's secret, a tampered end, or a password set since:
        // refused.
        let other = link("", &NewLink::generate().secret);
        assert!(!l.check_session(&other.session_cookie(until), now()));
        let later = until + Duration::hours(1);
        let forged = cookie.replacen(
            &until.timestamp().to_string(),
            &later.timestamp().to_string(),
            1,
        );
        assert!(!l.check_session(&forged, until));
        assert!(!link("$argon2id$x", &secret).check_session(&cookie, now()));
        assert!(!l.check_session("garbage", now()));
        // An end further than a session lasts is refused even with its MAC
        // (a password-less link's key is known to whoever has the secret).
        let far = now() + SESSION_LIFETIME + Duration::hours(1);
        assert!(!l.check_session(&l.session_cookie(far), now()));
        assert!(!l.check_session(&format!("{cookie}.x"), now()));
    }

    #[test]
    fn sessions_end_with_the_link() {
        let secret = NewLink::generate().secret;
        let mut l = link("", &secret);
        assert_eq!(l.session_until(now()), now() + SESSION_LIFETIME);
        l.expires_at = Some(now() + Duration::hours(2));
        assert_eq!(l.session_until(now()), now() + Duration::hours(2));
        assert_eq!(l.state(now()), State::Active);
        assert_eq!(l.state(now() + Duration::hours(2)), State::Expired);
    }

    #[test]
    fn passwords_are_hashed_with_a_salt_and_checked() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b);
        assert!(!a.contains("correct horse"));
        assert!(password_matches("correct horse", &a));
        assert!(!password_matches("wrong horse", &a));
        assert!(!password_matches("correct horse", "not a hash"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn a_revoke_event_revokes_its_link_only() {
        let event = |kind, id: &str, minutes| Event {
            at: now() + Duration::minutes(minutes),
            kind,
            link_id: id.into(),
            site_id: "example.org".into(),
            name: String::new(),
            secret_sha256: String::new(),
            password_hash: String::new(),
            expires_at: None,
            actor: "ops".into(),
        };
        let links = Link::from_events(&[
            event(EventKind::Create, "a", 0),
            event(EventKind::Create, "b", 1),
            event(EventKind::Revoke, "a", 2),
            event(EventKind::Revoke, "c", 3),
        ]);
        let states: Vec<(&str, State)> = links
            .iter()
            .map(|l| (l.id.as_str(), l.state(now() + Duration::minutes(5))))
            .collect();
        assert_eq!(states, [("a", State::Revoked), ("b", State::Active)]);
    }
}
