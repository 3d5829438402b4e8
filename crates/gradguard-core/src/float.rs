//! Serde helpers for floats that may be non-finite.
//!
//! JSON has no NaN or infinity. gradguard writes finite values as numbers and the others as
//! the strings `"NaN"`, `"inf"` and `"-inf"`; it reads those strings back, and also reads
//! `null` as NaN (what other JSON writers produce for a NaN). Use with
//! `#[serde(with = "gradguard_core::float::lossy")]` on an `f64` field, or
//! `#[serde(with = "gradguard_core::float::lossy_opt")]` on an `Option<f64>`.

/// Formats a number for people: gradguard's one number formatter, used by every message,
/// finding, diagnosis, console line, chart label and report table (`gradguard_report`
/// re-exports it as `format_number`).
///
/// The rule, decided on the value rounded to three significant digits, `d.dd × 10^e`:
/// - `e >= 4` or `e <= -4` (|v| from about 9995 up, or below about 0.0009995): scientific with three
///   significant digits, `3.14e4`, `2.00e-5`, `-1.50e33` (the zeros of the mantissa kept, as
///   Rust's `{:.2e}` writes them);
/// - otherwise plain, rounded at the third significant digit, trailing zeros and a trailing
///   point dropped: `2.5`, `1`, `0.0123`, `49.9`; whole numbers below 10^4 keep every digit
///   (`1235`, not `1.23e3`);
/// - `0` for zero (either sign), `NaN`, `inf` and `-inf` spelled as such.
///
/// So a value never shows more precision than three significant digits carry, except the
/// whole digits of a number below about 10^4.
pub fn fmt_short(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{v:.2e}");
    // `{:.2e}` writes `d.dde<exp>`, rounded: its exponent is that of the shown value.
    let exp: i32 = sci
        .rsplit('e')
        .next()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    if !(-3..4).contains(&exp) {
        return sci;
    }
    // Rounds at the same digit as `sci` (10^(exp - 2)), so the digits agree.
    let decimals = (2 - exp).max(0) as usize;
    let plain = format!("{v:.decimals$}");
    if plain.contains('.') {
        plain
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        plain
    }
}

/// For `f64` fields: non-finite values as strings.
pub mod lossy {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// Serialises finite values as numbers, NaN as `"NaN"`, infinities as `"inf"` / `"-inf"`.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    struct F64Visitor;

    impl<'de> Visitor<'de> for F64Visitor {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number, \"NaN\", \"inf\", \"-inf\" or null")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }
        fn visit_none<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v.to_ascii_lowercase().as_str() {
                "nan" => Ok(f64::NAN),
                "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }

    /// Reads a number, `"NaN"`, `"inf"`, `"-inf"` (any case) or `null` (as NaN).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(F64Visitor)
    }

    pub(crate) fn visitor() -> impl for<'de> Visitor<'de, Value = f64> {
        F64Visitor
    }
}

/// For `Option<f64>` fields: `None` as `null`, non-finite values as strings.
pub mod lossy_opt {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// Serialises `None` as null and `Some(v)` as [`super::lossy`] does.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(x) => super::lossy::serialize(x, s),
        }
    }

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("null, a number, \"NaN\", \"inf\" or \"-inf\"")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(super::lossy::visitor()).map(Some)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            super::lossy::visitor().visit_str(v).map(Some)
        }
    }

    /// Reads `null` as `None`, otherwise as [`super::lossy`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_option(OptVisitor)
    }
}

/// For `Vec<f64>` fields: each element as [`lossy`] writes it.
pub mod lossy_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Lossy(f64);

    impl Serialize for Lossy {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::lossy::serialize(&self.0, s)
        }
    }

    impl<'de> Deserialize<'de> for Lossy {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::lossy::deserialize(d).map(Lossy)
        }
    }

    /// Serialises the values, non-finite ones as strings.
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&x| Lossy(x)))
    }

    /// Reads numbers, `"NaN"`, `"inf"`, `"-inf"` or `null` (as NaN).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Lossy>::deserialize(d).map(|v| v.into_iter().map(|l| l.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug)]
    struct V {
        #[serde(with = "super::lossy_vec")]
        v: Vec<f64>,
    }

    #[test]
    fn vec_round_trips_non_finite() {
        let s = serde_json::to_string(&V {
            v: vec![1.0, f64::NAN, f64::INFINITY],
        })
        .unwrap();
        assert_eq!(s, r#"{"v":[1.0,"NaN","inf"]}"#);
        let back: V = serde_json::from_str(r#"{"v":[1.0,null,"inf"]}"#).unwrap();
        assert!(back.v[1].is_nan() && back.v[2] == f64::INFINITY);
    }

    #[derive(Serialize, Deserialize, Debug)]
    struct T {
        #[serde(with = "super::lossy")]
        x: f64,
        #[serde(with = "super::lossy_opt")]
        y: Option<f64>,
    }

    #[test]
    fn round_trips_non_finite() {
        for (x, text) in [
            (1.5, r#"{"x":1.5,"y":null}"#),
            (f64::NAN, r#"{"x":"NaN","y":null}"#),
            (f64::INFINITY, r#"{"x":"inf","y":null}"#),
            (f64::NEG_INFINITY, r#"{"x":"-inf","y":null}"#),
        ] {
            let s = serde_json::to_string(&T { x, y: None }).unwrap();
            assert_eq!(s, text);
            let back: T = serde_json::from_str(&s).unwrap();
            assert!(back.x == x || (back.x.is_nan() && x.is_nan()));
        }
        let t: T = serde_json::from_str(r#"{"x":null,"y":"inf"}"#).unwrap();
        assert!(t.x.is_nan());
        assert_eq!(t.y, Some(f64::INFINITY));
        let t: T = serde_json::from_str(r#"{"x":3,"y":2}"#).unwrap();
        assert_eq!((t.x, t.y), (3.0, Some(2.0)));
        assert!(serde_json::from_str::<T>(r#"{"x":"big","y":null}"#).is_err());
    }

    #[test]
    fn fmt_short_boundaries() {
        let cases = [
            // non-finite and zero
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0"),
            (-0.0, "0"),
            // plain: three significant digits, trailing zeros dropped
            (1.0, "1"),
            (2.5, "2.5"),
            (-0.5, "-0.5"),
            (4.56789, "4.57"),
            (12.345, "12.3"),
            (49.9, "49.9"),
            (100.0, "100"),
            (123.456, "123"),
            (0.1, "0.1"),
            (0.012345, "0.0123"),
            // rounding that reaches the next power of ten
            (9.996, "10"),
            (99.96, "100"),
            // whole numbers below 10^4 keep every digit
            (1234.5678, "1235"),
            (-1234.4, "-1234"),
            (9994.4, "9994"),
            // the upper switch: from 9995 the value rounds to 1.00e4
            (9996.0, "1.00e4"),
            (9999.4, "1.00e4"),
            (10_000.0, "1.00e4"),
            (31415.9, "3.14e4"),
            (1.5e33, "1.50e33"),
            (-2.7e4, "-2.70e4"),
            // the lower switch: 0.001 is plain, below 0.00099995 scientific
            (0.001, "0.001"),
            (0.00099996, "0.001"),
            (0.00099949, "9.99e-4"),
            (2e-5, "2.00e-5"),
            (f64::MIN_POSITIVE, "2.23e-308"),
            (f64::MAX, "1.80e308"),
        ];
        for (v, text) in cases {
            assert_eq!(super::fmt_short(v), text, "{v:e}");
        }
    }
}
