//! Whole numbers as written ([`Number`]: read loosely, so that validation can say what it
//! found instead) and [`at`], where any value was written.

use std::fmt;

use serde::{Deserialize, Deserializer, de};
use serde_saphyr::{Location, Spanned};

/// A number as written: a whole number (decimal, `0x` hex, `0o` octal), or any other scalar,
/// kept as a description for the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Number {
    Int(i128),
    NotInt(String),
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl<'de> de::Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }
    fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
        Ok(Number::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
        Ok(Number::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Number, E> {
        Ok(Number::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Number, E> {
        Ok(i128::try_from(v).map_or_else(|_| Number::NotInt(v.to_string()), Number::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
        Ok(Number::NotInt(format!("the floating-point number {v}")))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Number, E> {
        Ok(Number::NotInt(format!("the boolean {v}")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Number, E> {
        Ok(Number::NotInt(format!(
            "the string {}",
            super::errors::shown(v)
        )))
    }
    fn visit_unit<E>(self) -> Result<Number, E> {
        Ok(Number::NotInt("null".to_owned()))
    }
    fn visit_none<E>(self) -> Result<Number, E> {
        Ok(Number::NotInt("null".to_owned()))
    }
}

/// Where a value is written: for a value reached through an alias (`*name`), the anchored
/// definition, which is what the operator has to edit.
pub(crate) fn at<T>(value: &Spanned<T>) -> Location {
    value.defined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(yaml: &str) -> Number {
        #[derive(Deserialize)]
        struct Doc {
            n: Number,
        }
        match serde_saphyr::from_str::<Doc>(yaml) {
            Ok(doc) => doc.n,
            Err(e) => panic!("{yaml:?}: {e}"),
        }
    }

    #[test]
    fn numbers_are_read_in_decimal_hex_and_octal() {
        assert_eq!(number("n: 1935"), Number::Int(1935));
        assert_eq!(number("n: 0x5eed1b5d"), Number::Int(0x5eed_1b5d));
        assert_eq!(number("n: 0o17"), Number::Int(15));
        assert_eq!(number("n: -3"), Number::Int(-3));
    }

    #[test]
    fn other_scalars_are_kept_for_the_error_message() {
        assert_eq!(
            number("n: \"12\""),
            Number::NotInt("the string `12`".to_owned())
        );
        assert_eq!(
            number("n: 1.5"),
            Number::NotInt("the floating-point number 1.5".to_owned())
        );
        assert_eq!(
            number("n: true"),
            Number::NotInt("the boolean true".to_owned())
        );
        assert_eq!(number("n: ~"), Number::NotInt("null".to_owned()));
    }
}
