//! Bearer tokens: configured as SHA-256 digests, compared in constant time.
//! A token that may not read a site gets the same answer as a site that does
//! not exist, so tokens cannot probe which sites are configured.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Disclosure, TokenSettings};

#[derive(Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// No token, or an unknown one.
    Unauthorized,
    Granted {
        token: &'a str,
        sites: &'a [String],
        admin: bool,
        disclosure: Disclosure,
    },
}

pub fn authorize<'a>(authorization: Option<&str>, tokens: &'a [TokenSettings]) -> Access<'a> {
    let Some(secret) = authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Access::Unauthorized;
    };
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    // Every configured token is compared, matched or not, so timing does
    // not tell which one came close.
    let mut found = None;
    for token in tokens {
        if bool::from(token.secret_sha256.ct_eq(&digest)) {
            found = Some(token);
        }
    }
    match found {
        Some(t) => Access::Granted {
            token: &t.name,
            sites: &t.sites,
            admin: t.admin,
            disclosure: t.disclosure,
        },
        None => Access::Unauthorized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Vec<TokenSettings> {
        vec![TokenSettings {
            name: "dashboard".into(),
            secret_sha256: Sha256::digest(b"s3cret").into(),
            sites: vec!["example.org".into()],
            admin: false,
            disclosure: Disclosure::Protected,
        }]
    }

    fn check(header: Option<&str>, expected: Option<&str>) {
        let tokens = tokens();
        let got = match authorize(header, &tokens) {
            Access::Granted { token, .. } => Some(token.to_string()),
            Access::Unauthorized => None,
        };
        assert_eq!(got.as_deref(), expected, "{header:?}");
    }

    #[test]
    fn only_the_right_secret_opens() {
        check(Some("Bearer s3cret"), Some("dashboard"));
        check(Some("Bearer s3cret2"), None);
        check(Some("Basic s3cret"), None);
        check(Some("Bearer "), None);
        check(None, None);
    }
}
