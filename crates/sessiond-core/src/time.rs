//! Timestamps: UTC, millisecond precision, so that what is stored is exactly what is rendered
//! (and a cursor built from a rendered value finds the same row).

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// A UTC instant with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }
    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }
    pub fn millis(&self) -> i64 {
        self.0
    }
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_millis())
    }
    pub fn to_datetime(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
    /// RFC 3339 with milliseconds and `Z`.
    pub fn to_rfc3339(&self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
    /// Parses any RFC 3339 date-time (any offset), truncating to milliseconds.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|dt| Self(dt.with_timezone(&Utc).timestamp_millis()))
    }
    /// Like [`Timestamp::parse_rfc3339`] but rounding up to the next millisecond, for exclusive
    /// upper bounds (`createdBefore`): a bound between two milliseconds keeps the earlier one.
    pub fn parse_rfc3339_ceil(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s).ok().map(|dt| {
            let dt = dt.with_timezone(&Utc);
            let ms = dt.timestamp_millis();
            let sub_ms = dt.timestamp_subsec_nanos() % 1_000_000 != 0;
            Self(if sub_ms { ms + 1 } else { ms })
        })
    }

    pub fn plus_seconds(&self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 date-time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_millis_with_z_and_round_trips() {
        let t = Timestamp::parse_rfc3339("2026-12-01T09:10:11.123456+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-01T07:10:11.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        let ceil = Timestamp::parse_rfc3339_ceil("2026-12-01T07:10:11.1234Z").unwrap();
        assert_eq!(ceil.to_rfc3339(), "2026-12-01T07:10:11.124Z");
        let exact = Timestamp::parse_rfc3339_ceil("2026-12-01T07:10:11.123Z").unwrap();
        assert_eq!(exact.to_rfc3339(), "2026-12-01T07:10:11.123Z");
    }
}
