//! The simulated rail network: lines, their stations, trains and timetable.
//!
//! A [`Network`] is always valid: it is built either by
//! [`Network::sample`](crate::sim::sample) or by the TOML loader in
//! [`file`](crate::sim::file), which checks every invariant the simulator
//! relies on (known stations, increasing times, positive capacities and
//! headways).

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};

/// A whole network: the lines that run.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Every line; each runs its own trains in both directions.
    pub lines: Vec<Line>,
}

/// One line (GTFS route): its stations, its rolling stock and its timetable.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// GTFS `route_id`, put in every trip reference of the line.
    pub id: String,
    /// Human name, for logs and pages.
    pub name: String,
    /// Cars per train; carriage_sequence runs 1..=cars.
    pub cars: u32,
    /// Passengers a car holds at 100 % (seats plus comfortable standing).
    pub car_capacity: u32,
    /// Most a car can hold, in percent of `car_capacity` (e.g. 160): a full
    /// platform cannot push more people in, so loads never exceed it.
    pub crush_percentage: u32,
    /// Stations of the line, with demand and coordinates.
    pub stations: Vec<Station>,
    /// The stopping pattern of the outbound direction; the return direction
    /// calls at the same stops in reverse with the same running times.
    pub stops: Vec<Stop>,
    /// How long doors stay open at each stop.
    pub dwell: TimeDelta,
    /// First departure from the terminus, each direction.
    pub first_departure: NaiveTime,
    /// Last departure from the terminus, each direction.
    pub last_departure: NaiveTime,
    /// Headway by time of day, ordered by `from`.
    pub headways: Vec<Headway>,
}

/// A station: where it is and how many people start or end journeys there.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    /// GTFS `stop_id`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// WGS84 latitude.
    pub lat: f64,
    /// WGS84 longitude.
    pub lon: f64,
    /// Passengers per minute leaving home from here at the morning peak
    /// (they come back in the evening).
    pub homes: f64,
    /// Passengers per minute arriving to work here at the morning peak
    /// (they leave in the evening).
    pub jobs: f64,
    /// Where the platform entrance is, 0 = the end where car 1 of an outbound
    /// train stops, 1 = the other end. People board near it, so cars there
    /// fill first.
    pub entrance: f64,
}

/// One call of the stopping pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    /// Index into [`Line::stations`].
    pub station: usize,
    /// Minutes after the departure from the first stop at which the train
    /// arrives here (0 for the first stop).
    pub minute: f64,
}

/// Trains leave every `minutes` from `from` until the next period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headway {
    /// Start of the period.
    pub from: NaiveTime,
    /// Minutes between departures, at least 1.
    pub minutes: u32,
}

/// Which way a train runs along the stopping pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// In the order of [`Line::stops`].
    Outbound,
    /// In the reverse order.
    Inbound,
}

impl Direction {
    /// GTFS `direction_id`.
    pub fn id(self) -> u8 {
        match self {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
        }
    }
}

/// One scheduled departure from a terminus.
#[derive(Debug, Clone, PartialEq)]
pub struct Departure {
    /// GTFS-like trip id, unique per line, direction and service day.
    pub trip_id: String,
    /// Which way it runs.
    pub direction: Direction,
    /// When it leaves the first stop.
    pub at: NaiveDateTime,
    /// Minutes since the previous departure in the same direction: the
    /// longer the gap, the more people wait on the platforms.
    pub gap_minutes: f64,
}

impl Line {
    /// Most passengers one car may hold.
    pub fn crush_load(&self) -> u32 {
        (u64::from(self.car_capacity) * u64::from(self.crush_percentage) / 100) as u32
    }

    /// Headway in force at `t`: the last period starting at or before `t`,
    /// or the first period before any of them starts.
    pub fn headway_at(&self, t: NaiveTime) -> u32 {
        self.headways
            .iter()
            .rev()
            .find(|h| h.from <= t)
            .or(self.headways.first())
            .map_or(60, |h| h.minutes)
    }

    /// Stops in the order a train running `direction` calls at them, with
    /// minutes since its departure.
    pub fn stops_in(&self, direction: Direction) -> Vec<Stop> {
        match direction {
            Direction::Outbound => self.stops.clone(),
            Direction::Inbound => {
                let total = self.stops.last().map_or(0.0, |s| s.minute);
                self.stops
                    .iter()
                    .rev()
                    .map(|s| Stop {
                        station: s.station,
                        minute: total - s.minute,
                    })
                    .collect()
            }
        }
    }

    /// Every departure of the service day `date`, both directions.
    pub fn departures(&self, date: NaiveDate) -> Vec<Departure> {
        let mut out = Vec::new();
        for direction in [Direction::Outbound, Direction::Inbound] {
            let mut t = self.first_departure;
            let mut gap = f64::from(self.headway_at(t));
            loop {
                out.push(Departure {
                    trip_id: format!("{}-{}-{}", self.id, direction.id(), t.format("%H%M")),
                    direction,
                    at: date.and_time(t),
                    gap_minutes: gap,
                });
                let step = self.headway_at(t);
                let (next, wrapped) = t.overflowing_add_signed(TimeDelta::minutes(i64::from(step)));
                if wrapped != 0 || next > self.last_departure {
                    break;
                }
                t = next;
                gap = f64::from(step);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        let station = |id: &str| Station {
            id: id.into(),
            name: id.into(),
            lat: 48.0,
            lon: 2.0,
            homes: 1.0,
            jobs: 1.0,
            entrance: 0.5,
        };
        Line {
            id: "L".into(),
            name: "L".into(),
            cars: 2,
            car_capacity: 100,
            crush_percentage: 150,
            stations: vec![station("A"), station("B"), station("C")],
            stops: vec![
                Stop {
                    station: 0,
                    minute: 0.0,
                },
                Stop {
                    station: 1,
                    minute: 3.0,
                },
                Stop {
                    station: 2,
                    minute: 10.0,
                },
            ],
            dwell: TimeDelta::seconds(30),
            first_departure: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            last_departure: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
            headways: vec![
                Headway {
                    from: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
                    minutes: 20,
                },
                Headway {
                    from: NaiveTime::from_hms_opt(6, 30, 0).unwrap(),
                    minutes: 10,
                },
            ],
        }
    }

    #[test]
    fn departures_follow_the_headway_periods() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let deps = line().departures(date);
        let out: Vec<_> = deps
            .iter()
            .filter(|d| d.direction == Direction::Outbound)
            .map(|d| (d.trip_id.as_str(), d.gap_minutes))
            .collect();
        // 06:00, 06:20, 06:40 (the 10-minute period applies from 06:30 on), 06:50, 07:00.
        assert_eq!(
            out,
            vec![
                ("L-0-0600", 20.0),
                ("L-0-0620", 20.0),
                ("L-0-0640", 20.0),
                ("L-0-0650", 10.0),
                ("L-0-0700", 10.0),
            ]
        );
        assert_eq!(deps.len(), 10);
    }

    #[test]
    fn inbound_reverses_stops_and_keeps_running_times() {
        let stops = line().stops_in(Direction::Inbound);
        let got: Vec<_> = stops.iter().map(|s| (s.station, s.minute)).collect();
        assert_eq!(got, vec![(2, 0.0), (1, 7.0), (0, 10.0)]);
    }

    #[test]
    fn crush_load_is_a_share_of_capacity() {
        assert_eq!(line().crush_load(), 150);
    }
}
