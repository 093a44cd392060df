//! The ground truth of a running train, as the scorer compares it with
//! published estimates.

use chrono::{NaiveDate, NaiveDateTime};
use crowd_proto::level::Level;
use crowd_proto::pb::v1::TripRef;

use super::network::{Direction, Line};
use super::trips::{TripRun, Whereabouts};

/// The truth about one train running now.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTruth {
    /// Its identity, as reports and estimates carry it.
    pub trip: TripRef,
    /// Which way it runs.
    pub direction: Direction,
    /// Where it is: (latitude, longitude).
    pub position: (f64, f64),
    /// Each car, car 1 first.
    pub cars: Vec<CarTruth>,
    /// Riders on board.
    pub on_board: u32,
    /// Whole-train occupancy, percent of nominal capacity.
    pub percentage: f64,
    /// Whole-train level, from `percentage`.
    pub level: Level,
    /// The station it is at or last left.
    pub last_stop: String,
    /// The station it calls at next; `None` while at its last stop.
    pub next_stop: Option<String>,
    /// Share of the run's time already done, 0..1.
    pub progress: f64,
}

/// The truth about one car.
#[derive(Debug, Clone, PartialEq)]
pub struct CarTruth {
    /// 1..n in the direction of travel.
    pub carriage_sequence: u32,
    /// Riders in the car.
    pub on_board: u32,
    /// Occupancy, percent of the car's nominal capacity.
    pub percentage: f64,
    /// Level, from `percentage`.
    pub level: Level,
}

/// The level whose band holds a fractional percentage (99.6 % is still
/// below 100 %, so it is standing room, not crushed).
pub fn level_of(percentage: f64) -> Level {
    Level::from_percentage(percentage.max(0.0).floor() as u32)
}

/// A trip reference in the form reports and estimates use.
pub fn trip_ref(line: &Line, run: &TripRun, date: NaiveDate) -> TripRef {
    TripRef {
        trip_id: run.trip_id.clone(),
        start_date: date.format("%Y%m%d").to_string(),
        route_id: line.id.clone(),
    }
}

/// Where a run is at `t`, interpolated along the line between stations.
pub fn position(line: &Line, run: &TripRun, t: NaiveDateTime) -> (f64, f64) {
    let at = |i: usize| {
        let s = &line.stations[run.calls[i].station];
        (s.lat, s.lon)
    };
    match run.whereabouts(t) {
        Whereabouts::AtStop(i) => at(i),
        Whereabouts::Between(i, f) => {
            let (a, b) = (at(i), at(i + 1));
            (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f)
        }
    }
}

/// The truth of `run` (of service day `date`) at `t`, which must be within the run.
pub fn train_truth(line: &Line, run: &TripRun, date: NaiveDate, t: NaiveDateTime) -> TrainTruth {
    let loads = run.loads_at(t);
    let capacity = f64::from(line.car_capacity);
    let cars: Vec<CarTruth> = loads
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let percentage = 100.0 * f64::from(n) / capacity;
            CarTruth {
                carriage_sequence: i as u32 + 1,
                on_board: n,
                percentage,
                level: level_of(percentage),
            }
        })
        .collect();
    let on_board: u32 = loads.iter().sum();
    let percentage = 100.0 * f64::from(on_board) / (capacity * f64::from(line.cars));
    let i = match run.whereabouts(t) {
        Whereabouts::AtStop(i) | Whereabouts::Between(i, _) => i,
    };
    let station_id = |k: usize| line.stations[run.calls[k].station].id.clone();
    let total = (run.end() - run.start()).num_milliseconds().max(1) as f64;
    TrainTruth {
        trip: trip_ref(line, run, date),
        direction: run.direction,
        position: position(line, run, t),
        cars,
        on_board,
        percentage,
        level: level_of(percentage),
        last_stop: station_id(i),
        next_stop: (i + 1 < run.calls.len()).then(|| station_id(i + 1)),
        progress: ((t - run.start()).num_milliseconds() as f64 / total).clamp(0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_percentages_stay_in_their_band() {
        assert_eq!(level_of(99.9), Level::StandingRoom);
        assert_eq!(level_of(100.0), Level::Crushed);
        assert_eq!(level_of(0.0), Level::Empty);
        assert_eq!(level_of(160.0), Level::NotAccepting);
    }
}
