//! Loading a [`Network`] from a small TOML file.
//!
//! The file mirrors [`Network`] closely; every check the simulator relies on
//! is made here, and a bad file yields a [`NetworkError`] naming the line and
//! the field at fault, so the file's author can fix it at once.
//!
//! ```toml
//! [[line]]
//! id = "B"
//! name = "Line B"
//! cars = 8
//! car_capacity = 200
//! crush_percentage = 160
//! dwell_seconds = 30
//! first_departure = "05:30"
//! last_departure = "23:30"
//! headways = [{ from = "05:30", minutes = 10 }, { from = "07:00", minutes = 4 }]
//! stations = [
//!   { id = "A", name = "Alpha", lat = 48.70, lon = 2.07, homes = 20, jobs = 2 },
//!   { id = "Z", name = "Zulu", lat = 48.86, lon = 2.35, homes = 5, jobs = 90, entrance = 0.2 },
//! ]
//! stops = [{ station = "A", minute = 0 }, { station = "Z", minute = 25 }]
//! ```

use chrono::{NaiveTime, TimeDelta};
use serde::Deserialize;

use super::network::{Headway, Line, Network, Station, Stop};

/// Why a network file was refused.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The file could not be read.
    #[error("network file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the expected shape (the message points at the spot).
    #[error("network file: {0}")]
    Syntax(#[from] toml::de::Error),
    /// The file declares no line at all.
    #[error("network file: no [[line]]")]
    NoLines,
    /// A stop names a station the line does not list.
    #[error("line {line}: {field}: unknown station {station:?}")]
    UnknownStation {
        line: String,
        field: String,
        station: String,
    },
    /// A count or capacity that must be above zero is not.
    #[error("line {line}: {field}: {value} must be > 0")]
    NotPositive {
        line: String,
        field: String,
        value: i64,
    },
    /// A headway of zero minutes would run infinitely many trains.
    #[error("line {line}: {field}: headway of 0 minutes")]
    ZeroHeadway { line: String, field: String },
    /// Times that must increase do not.
    #[error("line {line}: {field}: out of order, {reason}")]
    OutOfOrder {
        line: String,
        field: String,
        reason: String,
    },
    /// Any other value out of its range (a time that is not HH:MM, a
    /// latitude beyond 90°, a duplicate id...).
    #[error("line {line}: {field}: {reason}")]
    Invalid {
        line: String,
        field: String,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    #[serde(default)]
    line: Vec<LineFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineFile {
    id: String,
    #[serde(default)]
    name: String,
    cars: i64,
    car_capacity: i64,
    #[serde(default = "default_crush")]
    crush_percentage: i64,
    #[serde(default = "default_dwell")]
    dwell_seconds: i64,
    first_departure: String,
    last_departure: String,
    headways: Vec<HeadwayFile>,
    stations: Vec<StationFile>,
    stops: Vec<StopFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadwayFile {
    from: String,
    minutes: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StationFile {
    id: String,
    #[serde(default)]
    name: String,
    lat: f64,
    lon: f64,
    #[serde(default)]
    homes: f64,
    #[serde(default)]
    jobs: f64,
    #[serde(default = "default_entrance")]
    entrance: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopFile {
    station: String,
    minute: f64,
}

fn default_crush() -> i64 {
    160
}
fn default_dwell() -> i64 {
    30
}
fn default_entrance() -> f64 {
    0.5
}

impl Network {
    /// Reads and parses a network file; errors name the file.
    pub fn from_file(path: &std::path::Path) -> Result<Network, NetworkError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetworkError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Network::from_toml(&text)
    }

    /// Parses and checks a network file's text.
    pub fn from_toml(text: &str) -> Result<Network, NetworkError> {
        let file: NetworkFile = toml::from_str(text)?;
        if file.line.is_empty() {
            return Err(NetworkError::NoLines);
        }
        let lines = file
            .line
            .into_iter()
            .map(LineFile::check)
            .collect::<Result<_, _>>()?;
        Ok(Network { lines })
    }
}

impl LineFile {
    fn check(self) -> Result<Line, NetworkError> {
        let line = self.id.clone();
        let invalid = |field: &str, reason: String| NetworkError::Invalid {
            line: line.clone(),
            field: field.to_owned(),
            reason,
        };
        let positive = |field: &str, value: i64| -> Result<u32, NetworkError> {
            u32::try_from(value)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| NetworkError::NotPositive {
                    line: line.clone(),
                    field: field.to_owned(),
                    value,
                })
        };
        if line.is_empty() || !line.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid("id", format!("{line:?} is not a visible ASCII id")));
        }
        let cars = positive("cars", self.cars)?;
        if cars > 32 {
            return Err(invalid("cars", format!("{cars} > 32")));
        }
        let car_capacity = positive("car_capacity", self.car_capacity)?;
        let crush_percentage = positive("crush_percentage", self.crush_percentage)?;
        if crush_percentage < 100 {
            return Err(invalid(
                "crush_percentage",
                format!("{crush_percentage} < 100 (crush load is above nominal)"),
            ));
        }
        let dwell_seconds = positive("dwell_seconds", self.dwell_seconds)?;
        let time = |field: &str, s: &str| {
            NaiveTime::parse_from_str(s, "%H:%M")
                .map_err(|_| invalid(field, format!("{s:?} is not HH:MM")))
        };
        let first_departure = time("first_departure", &self.first_departure)?;
        let last_departure = time("last_departure", &self.last_departure)?;
        if last_departure < first_departure {
            return Err(NetworkError::OutOfOrder {
                line: line.clone(),
                field: "last_departure".into(),
                reason: format!(
                    "{} is before first_departure {}",
                    self.last_departure, self.first_departure
                ),
            });
        }

        if self.headways.is_empty() {
            return Err(invalid("headways", "empty".into()));
        }
        let mut headways: Vec<Headway> = Vec::with_capacity(self.headways.len());
        for (i, h) in self.headways.iter().enumerate() {
            let field = format!("headways[{i}]");
            if h.minutes == 0 {
                return Err(NetworkError::ZeroHeadway {
                    line: line.clone(),
                    field: format!("{field}.minutes"),
                });
            }
            let minutes = positive(&format!("{field}.minutes"), h.minutes)?;
            let from = time(&format!("{field}.from"), &h.from)?;
            if let Some(prev) = headways.last()
                && from <= prev.from
            {
                return Err(NetworkError::OutOfOrder {
                    line: line.clone(),
                    field: format!("{field}.from"),
                    reason: format!("{} is not after {}", h.from, prev.from.format("%H:%M")),
                });
            }
            headways.push(Headway { from, minutes });
        }

        let mut stations: Vec<Station> = Vec::with_capacity(self.stations.len());
        for (i, s) in self.stations.into_iter().enumerate() {
            let field = format!("stations[{i}]");
            if s.id.is_empty() || s.id.len() > 64 || !s.id.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(
                    &format!("{field}.id"),
                    format!("{:?} is not a visible ASCII id of at most 64 bytes", s.id),
                ));
            }
            if stations.iter().any(|o| o.id == s.id) {
                return Err(invalid(
                    &format!("{field}.id"),
                    format!("duplicate station {:?}", s.id),
                ));
            }
            if !(-90.0..=90.0).contains(&s.lat) || !(-180.0..=180.0).contains(&s.lon) {
                return Err(invalid(
                    &field,
                    format!("({}, {}) is not a latitude, longitude", s.lat, s.lon),
                ));
            }
            for (name, v) in [("homes", s.homes), ("jobs", s.jobs)] {
                if !v.is_finite() || v < 0.0 {
                    return Err(invalid(
                        &format!("{field}.{name}"),
                        format!("{v} must be >= 0"),
                    ));
                }
            }
            if !(0.0..=1.0).contains(&s.entrance) {
                return Err(invalid(
                    &format!("{field}.entrance"),
                    format!("{} is not in 0..1", s.entrance),
                ));
            }
            let name = if s.name.is_empty() {
                s.id.clone()
            } else {
                s.name
            };
            stations.push(Station {
                id: s.id,
                name,
                lat: s.lat,
                lon: s.lon,
                homes: s.homes,
                jobs: s.jobs,
                entrance: s.entrance,
            });
        }

        if self.stops.len() < 2 {
            return Err(invalid("stops", "a line needs at least 2 stops".into()));
        }
        let dwell_minutes = f64::from(dwell_seconds) / 60.0;
        let mut stops: Vec<Stop> = Vec::with_capacity(self.stops.len());
        for (i, s) in self.stops.iter().enumerate() {
            let field = format!("stops[{i}]");
            let station = stations
                .iter()
                .position(|st| st.id == s.station)
                .ok_or_else(|| NetworkError::UnknownStation {
                    line: line.clone(),
                    field: format!("{field}.station"),
                    station: s.station.clone(),
                })?;
            if !s.minute.is_finite() || (i == 0 && s.minute != 0.0) {
                return Err(invalid(
                    &format!("{field}.minute"),
                    format!("{} (the first stop is at minute 0)", s.minute),
                ));
            }
            if let Some(prev) = stops.last()
                && s.minute - prev.minute <= dwell_minutes
            {
                return Err(NetworkError::OutOfOrder {
                    line: line.clone(),
                    field: format!("{field}.minute"),
                    reason: format!(
                        "{} is not after stop {} at {} plus a {dwell_seconds}s dwell",
                        s.minute,
                        i - 1,
                        prev.minute
                    ),
                });
            }
            stops.push(Stop {
                station,
                minute: s.minute,
            });
        }

        Ok(Line {
            name: if self.name.is_empty() {
                self.id.clone()
            } else {
                self.name
            },
            id: self.id,
            cars,
            car_capacity,
            crush_percentage,
            stations,
            stops,
            dwell: TimeDelta::seconds(i64::from(dwell_seconds)),
            first_departure,
            last_departure,
            headways,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[line]]
id = "B"
name = "Line B"
cars = 4
car_capacity = 150
crush_percentage = 160
dwell_seconds = 30
first_departure = "05:30"
last_departure = "22:00"
headways = [{ from = "05:30", minutes = 10 }, { from = "07:00", minutes = 5 }]
stations = [
  { id = "A", name = "Alpha", lat = 48.70, lon = 2.07, homes = 20, jobs = 2 },
  { id = "M", lat = 48.80, lon = 2.20, homes = 10, jobs = 10, entrance = 0.1 },
  { id = "Z", name = "Zulu", lat = 48.86, lon = 2.35, homes = 5, jobs = 90 },
]
stops = [{ station = "A", minute = 0 }, { station = "M", minute = 8 }, { station = "Z", minute = 20 }]
"#;

    fn load_with(from: &str, to: &str) -> Result<Network, NetworkError> {
        assert!(GOOD.contains(from), "test edits text that exists: {from}");
        Network::from_toml(&GOOD.replace(from, to))
    }

    #[test]
    fn the_shipped_example_loads_and_a_missing_file_is_named() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("networks");
        let net = Network::from_file(&dir.join("shuttle.toml")).unwrap();
        assert_eq!(net.lines[0].id, "S");
        assert_eq!(net.lines[0].stations.len(), 3);
        let err = Network::from_file(&dir.join("absent.toml")).unwrap_err();
        assert!(err.to_string().starts_with("network file "), "{err}");
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }

    #[test]
    fn a_good_file_loads() {
        let net = Network::from_toml(GOOD).unwrap();
        let line = &net.lines[0];
        assert_eq!(line.id, "B");
        assert_eq!(line.cars, 4);
        assert_eq!(line.crush_load(), 240);
        assert_eq!(line.stations[1].name, "M");
        assert_eq!(line.stations[1].entrance, 0.1);
        assert_eq!(line.stations[0].entrance, 0.5);
        assert_eq!(line.stops[2].station, 2);
        assert_eq!(line.headways[1].minutes, 5);
    }

    #[test]
    fn unknown_station_in_the_timetable_is_named() {
        let err = load_with(r#"station = "M""#, r#"station = "Q""#).unwrap_err();
        assert!(matches!(err, NetworkError::UnknownStation { .. }));
        assert_eq!(
            err.to_string(),
            r#"line B: stops[1].station: unknown station "Q""#
        );
    }

    #[test]
    fn zero_or_negative_capacity_is_refused() {
        let err = load_with("car_capacity = 150", "car_capacity = 0").unwrap_err();
        assert_eq!(err.to_string(), "line B: car_capacity: 0 must be > 0");
        let err = load_with("car_capacity = 150", "car_capacity = -5").unwrap_err();
        assert_eq!(err.to_string(), "line B: car_capacity: -5 must be > 0");
        let err = load_with("cars = 4", "cars = 0").unwrap_err();
        assert_eq!(err.to_string(), "line B: cars: 0 must be > 0");
        let err = load_with("crush_percentage = 160", "crush_percentage = -1").unwrap_err();
        assert!(matches!(err, NetworkError::NotPositive { .. }));
    }

    #[test]
    fn times_out_of_order_are_refused() {
        let err = load_with("minute = 20", "minute = 7").unwrap_err();
        assert!(matches!(err, NetworkError::OutOfOrder { .. }));
        assert_eq!(
            err.to_string(),
            "line B: stops[2].minute: out of order, 7 is not after stop 1 at 8 plus a 30s dwell"
        );
        let err = load_with(r#"from = "07:00""#, r#"from = "05:00""#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line B: headways[1].from: out of order, 05:00 is not after 05:30"
        );
        let err =
            load_with(r#"last_departure = "22:00""#, r#"last_departure = "05:00""#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line B: last_departure: out of order")
        );
    }

    #[test]
    fn zero_headway_is_refused() {
        let err = load_with("minutes = 5", "minutes = 0").unwrap_err();
        assert!(matches!(err, NetworkError::ZeroHeadway { .. }));
        assert_eq!(
            err.to_string(),
            "line B: headways[1].minutes: headway of 0 minutes"
        );
    }

    #[test]
    fn other_mistakes_are_named() {
        let err = load_with("lat = 48.80", "lat = 98.80").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line B: stations[1]: (98.8, 2.2)")
        );
        let err = load_with(r#"id = "M""#, r#"id = "A""#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"line B: stations[1].id: duplicate station "A""#
        );
        let err = load_with(r#""05:30", minutes = 10"#, r#""5h30", minutes = 10"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"line B: headways[0].from: "5h30" is not HH:MM"#
        );
        let err = Network::from_toml("line = 3").unwrap_err();
        assert!(matches!(err, NetworkError::Syntax(_)));
        assert!(matches!(
            Network::from_toml("").unwrap_err(),
            NetworkError::NoLines
        ));
    }
}
