//! Byte rates as people write them: `50MB`, `40MiB`, `400Mbit`, `1.5GB`,
//! or a plain number of bytes, per second (`/s` may follow).
//!
//! SI prefixes are powers of 1000, binary ones (`KiB`, `MiB`, ...) powers of
//! 1024, and `bit` units are eighths of a byte, as link speeds are quoted.
//! Units are case-sensitive: `Mb` could be read as megabits or megabytes,
//! so it is refused with the spellings that mean each.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::Deserialize;

/// A rate in bytes per second, more than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRate(NonZeroU64);

/// Why a rate could not be read; its `Display` quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read '{text}': {reason}")]
pub struct RateError {
    text: String,
    reason: String,
}

/// The units, each with its size in bytes (bits as eighths).
const UNITS: &[(&str, f64)] = &[
    ("", 1.0),
    ("B", 1.0),
    ("kB", 1e3),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("KiB", 1024.0),
    ("MiB", 1_048_576.0),
    ("GiB", 1_073_741_824.0),
    ("TiB", 1_099_511_627_776.0),
    ("bit", 1.0 / 8.0),
    ("kbit", 1e3 / 8.0),
    ("Kbit", 1e3 / 8.0),
    ("Mbit", 1e6 / 8.0),
    ("Gbit", 1e9 / 8.0),
    ("Tbit", 1e12 / 8.0),
];

const UNITS_HELP: &str = "a number of bytes per second, optionally with a unit: B, kB, MB, GB, TB \
                          (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024), or bit, kbit, Mbit, \
                          Gbit, Tbit (bits), as in 50MB, 40MiB or 400Mbit";

impl ByteRate {
    /// A rate of `bytes` per second; `None` for zero.
    pub fn new(bytes: u64) -> Option<ByteRate> {
        NonZeroU64::new(bytes).map(ByteRate)
    }

    /// Bytes per second.
    pub fn bytes_per_second(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for ByteRate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<ByteRate, RateError> {
        let error = |reason: String| RateError {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let trimmed = trimmed.strip_suffix("/s").unwrap_or(trimmed);
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let unit = unit.trim_start();
        let Some(&(_, size)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            let hint = match unit.to_ascii_lowercase().as_str() {
                "mb" | "gb" | "kb" | "tb" => format!(
                    "`{unit}` is ambiguous: write {}B for bytes or {}bit for bits",
                    unit[..1].to_ascii_uppercase(),
                    unit[..1].to_ascii_uppercase()
                ),
                _ => format!("unknown unit `{unit}`"),
            };
            return Err(error(format!("{hint}; expected {UNITS_HELP}")));
        };
        if number.starts_with('-') {
            return Err(error("a rate must be more than zero".into()));
        }
        let bytes = if size == 1.0 && !number.contains('.') {
            // Plain bytes stay exact, up to u64::MAX.
            number
                .parse::<u64>()
                .map_err(|_| error(format!("not a number of bytes; expected {UNITS_HELP}")))?
        } else {
            let value: f64 = number
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    error(format!("`{number}` is not a number; expected {UNITS_HELP}"))
                })?;
            let bytes = (value * size).round();
            if bytes >= u64::MAX as f64 {
                return Err(error("too large".into()));
            }
            bytes as u64
        };
        ByteRate::new(bytes).ok_or_else(|| {
            error("a rate must be at least 1 byte per second (leave it unset for no limit)".into())
        })
    }
}

impl fmt::Display for ByteRate {
    /// In MB/s (or kB/s, B/s below them), one decimal: `20.0 MB/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.bytes_per_second() as f64;
        if bytes >= 1e6 {
            write!(f, "{:.1} MB/s", bytes / 1e6)
        } else if bytes >= 1e3 {
            write!(f, "{:.1} kB/s", bytes / 1e3)
        } else {
            write!(f, "{bytes} B/s")
        }
    }
}

/// A string in any of the forms above, or a TOML integer of bytes.
impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteRate, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Bytes(n) => n.to_string(),
            Raw::Text(text) => text,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rate(text: &str) -> u64 {
        text.parse::<ByteRate>()
            .unwrap_or_else(|e| panic!("{e}"))
            .bytes_per_second()
    }

    #[test]
    fn reads_each_kind_of_unit() {
        assert_eq!(rate("50MB"), 50_000_000);
        assert_eq!(rate("40MiB"), 40 * 1024 * 1024);
        assert_eq!(rate("400Mbit"), 50_000_000);
        assert_eq!(rate("1.5GB"), 1_500_000_000);
        assert_eq!(rate("2048"), 2048);
        assert_eq!(rate("2048B"), 2048);
        assert_eq!(rate(" 20 MB/s "), 20_000_000);
        assert_eq!(rate("1kbit"), 125);
        assert_eq!(rate("0.5KiB"), 512);
        assert_eq!(rate("18446744073709551615"), u64::MAX);
    }

    #[test]
    fn refuses_what_it_cannot_read_naming_the_value() {
        let error = "12XB".parse::<ByteRate>().unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read '12XB': unknown unit `XB`"),
            "{error}"
        );
        assert!(error.contains("40MiB"), "says what it takes: {error}");
        let error = "10Mb".parse::<ByteRate>().unwrap_err().to_string();
        assert!(
            error.contains("write MB for bytes or Mbit for bits"),
            "{error}"
        );
        for text in ["", "MB", "1.2.3MB", "abc", "1e3MB", "--1"] {
            assert!(text.parse::<ByteRate>().is_err(), "`{text}` was read");
        }
    }

    #[test]
    fn refuses_zero_and_negative_rates() {
        for text in ["0", "0MB", "-5MB", "-1", "0.0001B"] {
            let error = text.parse::<ByteRate>().unwrap_err().to_string();
            assert!(
                error.contains("more than zero") || error.contains("at least 1"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn shows_megabytes_per_second() {
        assert_eq!(rate_text("20MB"), "20.0 MB/s");
        assert_eq!(rate_text("40MiB"), "41.9 MB/s");
        assert_eq!(rate_text("1500"), "1.5 kB/s");
        assert_eq!(rate_text("7"), "7 B/s");
    }

    fn rate_text(text: &str) -> String {
        text.parse::<ByteRate>().expect("valid").to_string()
    }

    #[test]
    fn flows_take_their_own_rate_over_the_shared_one() {
        let text = r#"
            [replication]
            max_bytes_per_sec = "50MB"
            [process]
            max_bytes_per_sec = 80000000
            [clusters.a]
            bootstrap_servers = "a:1"
            [clusters.b]
            bootstrap_servers = "b:1"
            [clusters.c]
            bootstrap_servers = "c:1"
            [[flows]]
            source = "a"
            target = "b"
            [[flows]]
            source = "a"
            target = "c"
            replication = { max_bytes_per_sec = "200Mbit" }
        "#;
        let config = crate::config::MirrorConfig::from_toml(text).expect("valid");
        let rates: Vec<u64> = config
            .flows()
            .expect("flows")
            .iter()
            .map(|flow| {
                flow.replication
                    .max_bytes_per_sec
                    .expect("set")
                    .bytes_per_second()
            })
            .collect();
        assert_eq!(rates, [50_000_000, 25_000_000]);
        assert_eq!(config.process.max_bytes_per_sec, ByteRate::new(80_000_000));
    }

    #[test]
    fn a_bad_rate_in_the_file_names_its_key_and_value() {
        let text = format!(
            "{}\n[replication]\nmax_bytes_per_sec = \"12XB\"\n",
            crate::config::tests::MINIMAL
        );
        let error = crate::config::MirrorConfig::from_toml(&text)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("key `replication.max_bytes_per_sec`"),
            "{error}"
        );
        assert!(
            error.contains("cannot read '12XB': unknown unit `XB`"),
            "{error}"
        );
        let text = format!(
            "{}\n[process]\nmax_bytes_per_sec = 0\n",
            crate::config::tests::MINIMAL
        );
        let error = crate::config::MirrorConfig::from_toml(&text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("key `process.max_bytes_per_sec`"), "{error}");
        assert!(error.contains("at least 1 byte per second"), "{error}");
    }

    proptest! {
        /// Every positive whole count in every unit reads back as that
        /// count times the unit's size.
        #[test]
        fn whole_counts_scale_by_their_unit(count in 1u64..1_000_000, unit in 0..UNITS.len()) {
            let (name, size) = UNITS[unit];
            let expected = (count as f64 * size).round() as u64;
            let read: ByteRate = format!("{count}{name}").parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(read.bytes_per_second(), expected);
        }

        /// Whatever the text, reading it either fails with a message quoting
        /// it or gives a rate above zero; it never panics.
        #[test]
        fn any_text_is_read_or_refused_by_name(text in "\\PC{0,12}") {
            match text.parse::<ByteRate>() {
                Ok(rate) => prop_assert!(rate.bytes_per_second() > 0),
                Err(e) => {
                    let quoted = format!("cannot read '{text}'");
                    prop_assert!(e.to_string().starts_with(&quoted));
                }
            }
        }

        /// Plain byte counts are exact.
        #[test]
        fn plain_bytes_are_exact(bytes in 1u64..) {
            prop_assert_eq!(rate(&bytes.to_string()), bytes);
        }
    }
}
