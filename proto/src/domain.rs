//! Validated domain types: once a value has one of these types, it is known
//! to be well-formed, so nothing downstream re-checks it.

use chrono::{DateTime, NaiveDate, Utc};

use crate::level::Level;

/// Identity of one train run: GTFS-RT `trip_id` + `start_date`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TripKey {
    /// GTFS `trip_id`: 1..=64 visible ASCII characters.
    pub trip_id: String,
    /// Service day, YYYYMMDD (a real calendar date).
    pub start_date: String,
}

impl TripKey {
    /// The canonical text form used inside Redis keys and members:
    /// `YYYYMMDD:trip_id`. The date has a fixed width, so this is unambiguous
    /// whatever the trip id contains.
    pub fn canonical(&self) -> String {
        format!("{}:{}", self.start_date, self.trip_id)
    }

    /// Inverse of [`TripKey::canonical`].
    pub fn from_canonical(s: &str) -> Option<TripKey> {
        let (date, trip) = s.split_at_checked(8)?;
        let trip = trip.strip_prefix(':')?;
        Some(TripKey {
            trip_id: trip.to_owned(),
            start_date: date.to_owned(),
        })
    }
}

impl std::fmt::Display for TripKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.trip_id, self.start_date)
    }
}

/// A WGS84 position with its accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Degrees, -90..=90.
    pub latitude: f64,
    /// Degrees, -180..=180.
    pub longitude: f64,
    /// Metres, >= 0 (0 when unknown).
    pub accuracy_m: f32,
}

/// An accepted rider report, validated at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Client idempotency key.
    pub report_id: String,
    /// Keyed hash of the device pseudonym ([`DeviceHasher`]).
    pub device: u64,
    pub trip: TripKey,
    /// Empty when the client did not say.
    pub route_id: String,
    /// 1..=max cars; 0 = the whole train.
    pub carriage_sequence: u32,
    pub level: Level,
    pub occupancy_percentage: Option<u32>,
    pub observed_at: DateTime<Utc>,
    pub position: Option<Position>,
    /// Empty when the client did not say.
    pub stop_id: String,
}

/// Turns device pseudonyms into keyed 64-bit hashes.
///
/// Raw device ids never reach Redis: with a secret key, the stored value cannot
/// be linked back to the app install by anyone who reads the database.
#[derive(Clone)]
pub struct DeviceHasher {
    key: [u8; 16],
}

impl std::fmt::Debug for DeviceHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceHasher(<secret>)")
    }
}

impl DeviceHasher {
    /// Derives the hashing key from a secret of any length.
    pub fn new(secret: &str) -> DeviceHasher {
        use std::hash::Hasher;
        let mut key = [0u8; 16];
        for (half, salt) in key.chunks_mut(8).zip([0x63726f77u64, 0x64736563]) {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(salt, !salt);
            h.write(secret.as_bytes());
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
        DeviceHasher { key }
    }

    /// The stored pseudonym of a device id.
    pub fn hash(&self, device_id: &str) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_key(&self.key);
        h.write(device_id.as_bytes());
        h.finish()
    }
}

/// Parses `YYYYMMDD` into a calendar date.
///
/// Digits are read directly rather than through a format string: this runs
/// for every report at the edge, and chrono's format parser costs more than
/// the rest of the date check together.
pub fn parse_service_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |digits: &[u8]| {
        digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let year = i32::try_from(number(&b[..4])).ok()?;
    NaiveDate::from_ymd_opt(year, number(&b[4..6]), number(&b[6..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_trip_key_round_trips_even_with_colons() {
        let key = TripKey {
            trip_id: "RER:B:1234".into(),
            start_date: "20261126".into(),
        };
        assert_eq!(key.canonical(), "20261126:RER:B:1234");
        assert_eq!(TripKey::from_canonical(&key.canonical()), Some(key));
        assert_eq!(TripKey::from_canonical("2026"), None);
    }

    #[test]
    fn service_dates_must_exist() {
        assert!(parse_service_date("20261126").is_some());
        assert!(parse_service_date("20240229").is_some());
        assert!(parse_service_date("20230229").is_none());
        assert!(parse_service_date("2026-11-2").is_none());
        assert!(parse_service_date("+2026112").is_none());
        assert!(parse_service_date("20261300").is_none());
        assert!(parse_service_date("20261100").is_none());
        assert!(parse_service_date("00010101").is_some());
        assert_eq!(
            parse_service_date("20261126"),
            NaiveDate::from_ymd_opt(2026, 11, 26)
        );
    }

    #[test]
    fn device_hash_depends_on_secret_and_id() {
        let a = DeviceHasher::new("secret-a");
        let b = DeviceHasher::new("secret-b");
        assert_eq!(a.hash("phone-1"), a.hash("phone-1"));
        assert_ne!(a.hash("phone-1"), a.hash("phone-2"));
        assert_ne!(a.hash("phone-1"), b.hash("phone-1"));
    }
}
