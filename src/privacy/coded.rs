//! Enums whose values are written as one byte: into journal records
//! (`journal::record`), and some also as labels into metrics and
//! ClickHouse columns. [`coded_enum!`] defines each such enum once — every
//! variant with its code and its label — and derives from that one list the
//! `#[repr(u8)]` enum, `as_str`, `ALL` and `TryFrom<u8>`, so that codes,
//! labels and the list of variants cannot drift apart. Must not: change or
//! reuse a code once released; logs written with it would replay wrong.

/// A byte that is not the code of any variant (a damaged or foreign log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{code} is not the code of a {kind}")]
pub struct UnknownCode {
    pub kind: &'static str,
    pub code: u8,
}

/// Defines a fieldless enum encoded as one byte, written as an enum whose
/// every variant reads `Name = code => "label",` (see `referrer::Medium`).
/// Each variant's explicit discriminant is its code (`variant as u8`);
/// the string is its label (`as_str`). `ALL` lists the variants in
/// declaration order.
macro_rules! coded_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $code:literal => $label:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                $variant = $code,
            )+
        }

        // Not every coded enum needs its list or its labels outside tests
        // (the journal's own tags have no label worth showing).
        #[allow(dead_code)]
        impl $name {
            pub const ALL: [$name; [$($code),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl TryFrom<u8> for $name {
            type Error = $crate::privacy::coded::UnknownCode;

            fn try_from(code: u8) -> Result<$name, Self::Error> {
                match code {
                    $($code => Ok($name::$variant),)+
                    _ => Err($crate::privacy::coded::UnknownCode {
                        kind: stringify!($name),
                        code,
                    }),
                }
            }
        }
    };
}
pub(crate) use coded_enum;

/// Checks a coded enum: every variant comes back from its code, every other
/// byte is refused, and codes and labels are each unique.
#[cfg(test)]
pub(crate) fn check_codes<T>(all: &[T], code: fn(T) -> u8, label: fn(T) -> &'static str)
where
    T: Copy + Eq + std::fmt::Debug + TryFrom<u8, Error = UnknownCode>,
{
    let mut codes = std::collections::HashSet::new();
    let mut labels = std::collections::HashSet::new();
    for &v in all {
        assert_eq!(T::try_from(code(v)), Ok(v), "{v:?} round-trips");
        assert!(codes.insert(code(v)), "code of {v:?} is unique");
        assert!(labels.insert(label(v)), "label of {v:?} is unique");
    }
    for byte in 0..=u8::MAX {
        if !codes.contains(&byte) {
            assert!(T::try_from(byte).is_err(), "{byte} is no code");
        }
    }
}
