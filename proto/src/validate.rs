//! Validation of untrusted reports at the edge: the one place where a
//! `CrowdingReport` from the wire becomes a [`Report`], or a [`ReportError`]
//! that names the field and says why, so a client developer can act on it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{DeviceHasher, Position, Report, TripKey, parse_service_date};
use crate::level::Level;
use crate::pb::v1::{CrowdingReport, GeoPoint, TripRef};

/// Bounds a report must respect; configured by the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Highest `carriage_sequence` accepted (longest train).
    pub max_carriage: u32,
    /// Oldest `observed_at` accepted, relative to now.
    pub max_age: Duration,
    /// Furthest `observed_at` may be ahead of now (phone clocks drift).
    pub max_future: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_carriage: 32,
            max_age: Duration::from_secs(30 * 60),
            max_future: Duration::from_secs(2 * 60),
        }
    }
}

/// Highest `occupancy_percentage` accepted: GTFS-RT allows crush loads above
/// 100, but no real vehicle holds twice its capacity.
pub const MAX_PERCENTAGE: u32 = 200;
/// Longest report, trip, route or stop id.
pub const MAX_ID_LEN: usize = 64;
/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// Why a report was rejected: the offending field and a reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ReportError {
    /// Wire name of the field, dotted for nested ones (`trip.start_date`).
    pub field: &'static str,
    pub reason: String,
}

impl ReportError {
    fn new(field: &'static str, reason: impl Into<String>) -> ReportError {
        ReportError {
            field,
            reason: reason.into(),
        }
    }

    /// A short, stable label for metrics (`field` plus the kind of problem).
    pub fn metric_label(&self) -> &'static str {
        self.field
    }
}

/// Validates `raw` at time `now`; the device id is replaced by its keyed hash.
pub fn validate_report(
    raw: &CrowdingReport,
    limits: &Limits,
    devices: &DeviceHasher,
    now: DateTime<Utc>,
) -> Result<Report, ReportError> {
    check_id("report_id", &raw.report_id, MAX_ID_LEN, true)?;
    check_id("device_id", &raw.device_id, MAX_DEVICE_ID_LEN, true)?;
    let trip_ref = raw
        .trip
        .as_ref()
        .ok_or_else(|| ReportError::new("trip", "missing"))?;
    let (trip, route_id) = validate_trip(trip_ref)?;
    if raw.carriage_sequence > limits.max_carriage {
        return Err(ReportError::new(
            "carriage_sequence",
            format!("{} > {}", raw.carriage_sequence, limits.max_carriage),
        ));
    }
    let level = Level::from_number(raw.level).ok_or_else(|| {
        let reason = if raw.level == 0 {
            "UNSPECIFIED; say how crowded it is (EMPTY..NOT_ACCEPTING_PASSENGERS)".to_owned()
        } else {
            format!("unknown value {} (expected 1..7)", raw.level)
        };
        ReportError::new("level", reason)
    })?;
    if let Some(p) = raw.occupancy_percentage
        && p > MAX_PERCENTAGE
    {
        return Err(ReportError::new(
            "occupancy_percentage",
            format!("{p} > {MAX_PERCENTAGE}"),
        ));
    }
    let observed_at = validate_observed_at(raw.observed_at.as_ref(), limits, now)?;
    let position = raw.position.as_ref().map(validate_position).transpose()?;
    check_id("stop_id", &raw.stop_id, MAX_ID_LEN, false)?;

    Ok(Report {
        report_id: raw.report_id.clone(),
        device: devices.hash(&raw.device_id),
        trip,
        route_id,
        carriage_sequence: raw.carriage_sequence,
        level,
        occupancy_percentage: raw.occupancy_percentage,
        observed_at,
        position,
        stop_id: raw.stop_id.clone(),
    })
}

/// Validates a trip reference (also used by queries).
pub fn validate_trip(trip: &TripRef) -> Result<(TripKey, String), ReportError> {
    check_id("trip.trip_id", &trip.trip_id, MAX_ID_LEN, true)?;
    if parse_service_date(&trip.start_date).is_none() {
        let reason = if trip.start_date.is_empty() {
            "missing (expected YYYYMMDD)".to_owned()
        } else {
            format!("{:?} is not a real YYYYMMDD date", trip.start_date)
        };
        return Err(ReportError::new("trip.start_date", reason));
    }
    check_id("trip.route_id", &trip.route_id, MAX_ID_LEN, false)?;
    Ok((
        TripKey {
            trip_id: trip.trip_id.clone(),
            start_date: trip.start_date.clone(),
        },
        trip.route_id.clone(),
    ))
}

/// Validates a position (also used by SearchNearby).
pub fn validate_position(p: &GeoPoint) -> Result<Position, ReportError> {
    if !p.latitude.is_finite() || !(-90.0..=90.0).contains(&p.latitude) {
        return Err(ReportError::new(
            "position.latitude",
            format!("{} is not in -90..90", p.latitude),
        ));
    }
    if !p.longitude.is_finite() || !(-180.0..=180.0).contains(&p.longitude) {
        return Err(ReportError::new(
            "position.longitude",
            format!("{} is not in -180..180", p.longitude),
        ));
    }
    if !p.accuracy_m.is_finite() || p.accuracy_m < 0.0 {
        return Err(ReportError::new(
            "position.accuracy_m",
            format!("{} must be a finite number >= 0", p.accuracy_m),
        ));
    }
    Ok(Position {
        latitude: p.latitude,
        longitude: p.longitude,
        accuracy_m: p.accuracy_m,
    })
}

fn validate_observed_at(
    ts: Option<&prost_types::Timestamp>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ReportError> {
    const FIELD: &str = "observed_at";
    let ts = ts.ok_or_else(|| ReportError::new(FIELD, "missing"))?;
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| ReportError::new(FIELD, format!("nanos {} not in 0..1e9", ts.nanos)))?;
    let at = DateTime::from_timestamp(ts.seconds, nanos)
        .ok_or_else(|| ReportError::new(FIELD, format!("seconds {} out of range", ts.seconds)))?;
    let skew = at - now;
    if skew > chrono::Duration::from_std(limits.max_future).unwrap_or(chrono::Duration::MAX) {
        return Err(ReportError::new(
            FIELD,
            format!(
                "{} in the future (max {}); check the device clock",
                human(skew),
                human_std(limits.max_future)
            ),
        ));
    }
    if -skew > chrono::Duration::from_std(limits.max_age).unwrap_or(chrono::Duration::MAX) {
        return Err(ReportError::new(
            FIELD,
            format!(
                "{} in the past (max {})",
                human(-skew),
                human_std(limits.max_age)
            ),
        ));
    }
    Ok(at)
}

fn check_id(
    field: &'static str,
    value: &str,
    max_len: usize,
    required: bool,
) -> Result<(), ReportError> {
    if value.is_empty() {
        return if required {
            Err(ReportError::new(field, "empty"))
        } else {
            Ok(())
        };
    }
    if value.len() > max_len {
        return Err(ReportError::new(
            field,
            format!("{} bytes > {max_len}", value.len()),
        ));
    }
    if let Some((i, c)) = value.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return Err(ReportError::new(
            field,
            format!("illegal character {c:?} at byte {i} (allowed: visible ASCII, no spaces)"),
        ));
    }
    Ok(())
}

/// "3h 5m", "2m 30s", "45s": durations as people read them.
fn human(d: chrono::Duration) -> String {
    human_secs(d.num_seconds().max(0) as u64)
}

fn human_std(d: Duration) -> String {
    human_secs(d.as_secs())
}

fn human_secs(s: u64) -> String {
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) if h < 48 => format!("{h}h {m}m"),
        (h, _, _) => format!("{}d", h / 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::v1::CrowdingLevel;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).unwrap()
    }

    fn good() -> CrowdingReport {
        CrowdingReport {
            report_id: "r-1".into(),
            device_id: "device-1".into(),
            trip: Some(TripRef {
                trip_id: "T100".into(),
                start_date: "20261126".into(),
                route_id: "B".into(),
            }),
            carriage_sequence: 3,
            level: CrowdingLevel::StandingRoomOnly as i32,
            occupancy_percentage: Some(80),
            observed_at: Some(prost_types::Timestamp {
                seconds: now().timestamp() - 10,
                nanos: 0,
            }),
            position: Some(GeoPoint {
                latitude: 48.85,
                longitude: 2.35,
                accuracy_m: 12.0,
            }),
            stop_id: "STOP_1".into(),
        }
    }

    fn check(mutate: impl FnOnce(&mut CrowdingReport)) -> Result<Report, ReportError> {
        let mut r = good();
        mutate(&mut r);
        validate_report(&r, &Limits::default(), &DeviceHasher::new("k"), now())
    }

    fn rejected(mutate: impl FnOnce(&mut CrowdingReport)) -> String {
        check(mutate).expect_err("should be rejected").to_string()
    }

    #[test]
    fn a_good_report_is_accepted_with_hashed_device() {
        let r = check(|_| {}).unwrap();
        assert_eq!(r.level, Level::StandingRoom);
        assert_eq!(r.trip.trip_id, "T100");
        assert_eq!(r.device, DeviceHasher::new("k").hash("device-1"));
        assert!(r.position.is_some());
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(rejected(|r| r.report_id.clear()), "report_id: empty");
        assert_eq!(
            rejected(|r| r.report_id = "x".repeat(65)),
            "report_id: 65 bytes > 64"
        );
        assert!(
            rejected(|r| r.device_id = "a b".into())
                .starts_with("device_id: illegal character ' '")
        );
        assert_eq!(rejected(|r| r.trip = None), "trip: missing");
        assert!(
            rejected(|r| r.trip.as_mut().unwrap().start_date = "20261332".into())
                .starts_with("trip.start_date: \"20261332\" is not a real YYYYMMDD date")
        );
        assert_eq!(
            rejected(|r| r.carriage_sequence = 40),
            "carriage_sequence: 40 > 32"
        );
        assert!(rejected(|r| r.level = 0).starts_with("level: UNSPECIFIED"));
        assert_eq!(
            rejected(|r| r.level = 9),
            "level: unknown value 9 (expected 1..7)"
        );
        assert_eq!(
            rejected(|r| r.occupancy_percentage = Some(201)),
            "occupancy_percentage: 201 > 200"
        );
        assert_eq!(
            rejected(|r| r.observed_at.as_mut().unwrap().seconds = now().timestamp() - 3 * 3600),
            "observed_at: 3h 0m in the past (max 30m)"
        );
        assert!(
            rejected(|r| r.observed_at.as_mut().unwrap().seconds = now().timestamp() + 200)
                .starts_with("observed_at: 3m 20s in the future (max 2m)")
        );
        assert!(
            rejected(|r| r.position.as_mut().unwrap().latitude = f64::NAN)
                .starts_with("position.latitude: NaN")
        );
        assert!(
            rejected(|r| r.position.as_mut().unwrap().longitude = 181.0)
                .starts_with("position.longitude: 181")
        );
        assert!(
            rejected(|r| r.position.as_mut().unwrap().accuracy_m = -1.0)
                .starts_with("position.accuracy_m: -1")
        );
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let r = check(|r| {
            r.position = None;
            r.stop_id.clear();
            r.occupancy_percentage = None;
            r.carriage_sequence = 0;
            r.trip.as_mut().unwrap().route_id.clear();
        })
        .unwrap();
        assert_eq!(r.position, None);
        assert_eq!(r.carriage_sequence, 0);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_secs(45), "45s");
        assert_eq!(human_secs(120), "2m");
        assert_eq!(human_secs(150), "2m 30s");
        assert_eq!(human_secs(3 * 3600 + 60), "3h 1m");
        assert_eq!(human_secs(100 * 3600), "4d");
    }
}
