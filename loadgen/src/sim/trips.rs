//! One train's run: its calls and the true load of each car between them.
//!
//! A run is computed once, when its service day is first needed, from its
//! own random stream (seeded from the simulation seed, the date and the trip
//! id), so the truth does not depend on when or how often it is asked for.
//! At each stop riders get off first, then board near the platform entrance;
//! a car at crush load takes nobody more, they try the other cars, and those
//! who find no room stay on the platform.

use chrono::{NaiveDateTime, TimeDelta, Timelike};
use rand::Rng;
use rand_distr::{Distribution, Poisson};

use super::demand;
use super::network::{Departure, Direction, Line};

/// A train run with its true loads.
#[derive(Debug, Clone)]
pub struct TripRun {
    /// Index of the line in the network.
    pub line: usize,
    /// GTFS-like trip id.
    pub trip_id: String,
    /// Which way it runs.
    pub direction: Direction,
    /// Its calls, in running order.
    pub calls: Vec<Call>,
}

/// One call at a station and what happened there.
#[derive(Debug, Clone)]
pub struct Call {
    /// Index into the line's stations.
    pub station: usize,
    /// When the doors open.
    pub arrival: NaiveDateTime,
    /// When the train leaves (doors closed).
    pub departure: NaiveDateTime,
    /// Riders who got off here.
    pub alighted: u32,
    /// Riders who got on here.
    pub boarded: u32,
    /// Riders left on the platform because every car was at crush load.
    pub denied: u32,
    /// Riders in each car (index 0 = car 1) when leaving.
    pub loads: Vec<u32>,
}

/// Where a run is at some instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Whereabouts {
    /// Doors open at call `i`.
    AtStop(usize),
    /// Between call `i` and call `i + 1`, `fraction` of the way.
    Between(usize, f64),
}

impl TripRun {
    /// Simulates the whole run of `dep` on `line` with `rng`.
    pub fn simulate(
        line_index: usize,
        line: &Line,
        dep: &Departure,
        rng: &mut impl Rng,
    ) -> TripRun {
        let stops = line.stops_in(dep.direction);
        let n_cars = line.cars as usize;
        let crush = line.crush_load();
        let mut loads = vec![0u32; n_cars];
        let mut calls = Vec::with_capacity(stops.len());
        let last = stops.len() - 1;
        for (i, stop) in stops.iter().enumerate() {
            let arrival = dep.at + minutes(stop.minute);
            let departure = if i == last {
                arrival
            } else {
                arrival + line.dwell
            };
            let m = minute_of_day(arrival);
            let station = &line.stations[stop.station];
            let here = demand::attraction(station, m);
            let ahead: f64 = stops[i + 1..]
                .iter()
                .map(|s| demand::attraction(&line.stations[s.station], m))
                .sum();
            let behind: f64 = stops[..i]
                .iter()
                .map(|s| demand::attraction(&line.stations[s.station], m))
                .sum();

            // Off first: everyone at the terminus, else in proportion to
            // this stop's pull among the stops still ahead.
            let share_off = if i == last || here + ahead <= 0.0 {
                1.0
            } else {
                here / (here + ahead)
            };
            let mut alighted = 0;
            for load in &mut loads {
                let off = ((f64::from(*load) * share_off).round() as u32).min(*load);
                *load -= off;
                alighted += off;
            }

            // Then on: those whose destination lies ahead.
            let share_ahead = if ahead + behind > 0.0 {
                ahead / (ahead + behind)
            } else {
                0.0
            };
            let mean = demand::production(station, m) * dep.gap_minutes * share_ahead;
            let wanting = if i == last || mean <= 0.0 {
                0
            } else {
                Poisson::new(mean).map_or(0, |p| p.sample(rng) as u32)
            };
            let entrance = match dep.direction {
                Direction::Outbound => station.entrance,
                Direction::Inbound => 1.0 - station.entrance,
            };
            let boarded = board(&mut loads, wanting, &car_weights(n_cars, entrance), crush);
            calls.push(Call {
                station: stop.station,
                arrival,
                departure,
                alighted,
                boarded,
                denied: wanting - boarded,
                loads: loads.clone(),
            });
        }
        TripRun {
            line: line_index,
            trip_id: dep.trip_id.clone(),
            direction: dep.direction,
            calls,
        }
    }

    /// When the run starts (doors open at the first stop).
    pub fn start(&self) -> NaiveDateTime {
        self.calls[0].arrival
    }

    /// When the run ends (arrival at the terminus, everyone off).
    pub fn end(&self) -> NaiveDateTime {
        self.calls[self.calls.len() - 1].arrival
    }

    /// Whether the train is in service at `t` with riders able to report.
    pub fn running_at(&self, t: NaiveDateTime) -> bool {
        self.start() <= t && t < self.end()
    }

    /// Where the train is at `t`, which must be within the run.
    pub fn whereabouts(&self, t: NaiveDateTime) -> Whereabouts {
        let i = self.calls.iter().rposition(|c| c.arrival <= t).unwrap_or(0);
        let call = &self.calls[i];
        if t < call.departure || i + 1 == self.calls.len() {
            return Whereabouts::AtStop(i);
        }
        let next = &self.calls[i + 1];
        let span = (next.arrival - call.departure).num_milliseconds() as f64;
        let done = (t - call.departure).num_milliseconds() as f64;
        Whereabouts::Between(i, if span > 0.0 { done / span } else { 0.0 })
    }

    /// Riders in each car at `t`: the load when leaving the last call.
    pub fn loads_at(&self, t: NaiveDateTime) -> &[u32] {
        let i = match self.whereabouts(t) {
            Whereabouts::AtStop(i) | Whereabouts::Between(i, _) => i,
        };
        &self.calls[i].loads
    }
}

fn minutes(m: f64) -> TimeDelta {
    TimeDelta::milliseconds((m * 60_000.0).round() as i64)
}

fn minute_of_day(t: NaiveDateTime) -> f64 {
    f64::from(t.num_seconds_from_midnight()) / 60.0
}

/// How riders spread along the train: most near the platform entrance
/// (`entrance` 0 = car 1's end), some everywhere.
fn car_weights(n: usize, entrance: f64) -> Vec<f64> {
    (0..n)
        .map(|c| {
            let x = (c as f64 + 0.5) / n as f64;
            0.5 + (-(x - entrance).powi(2) / (2.0 * 0.25_f64.powi(2))).exp()
        })
        .collect()
}

/// Puts up to `wanting` riders into the cars by `weights`, never above
/// `crush` per car; riders who find a car full try the others. Returns how
/// many got on.
fn board(loads: &mut [u32], wanting: u32, weights: &[f64], crush: u32) -> u32 {
    let mut left = wanting;
    // Each round either seats everyone or fills at least one car.
    for _ in 0..=loads.len() {
        let open: Vec<usize> = (0..loads.len()).filter(|&c| loads[c] < crush).collect();
        if left == 0 || open.is_empty() {
            break;
        }
        let shares = largest_remainder(left, &open.iter().map(|&c| weights[c]).collect::<Vec<_>>());
        for (&c, share) in open.iter().zip(shares) {
            let take = share.min(crush - loads[c]);
            loads[c] += take;
            left -= take;
        }
    }
    wanting - left
}

/// Splits `total` into integer parts proportional to `weights` that add up to
/// `total` exactly.
fn largest_remainder(total: u32, weights: &[f64]) -> Vec<u32> {
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 || weights.is_empty() {
        let mut out = vec![0; weights.len()];
        if let Some(first) = out.first_mut() {
            *first = total;
        }
        return out;
    }
    let exact: Vec<f64> = weights.iter().map(|w| f64::from(total) * w / sum).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut short = total - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if short == 0 {
            break;
        }
        out[i] += 1;
        short -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_remainder_adds_up() {
        assert_eq!(largest_remainder(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(largest_remainder(7, &[0.0, 0.0]), vec![7, 0]);
        assert_eq!(largest_remainder(5, &[3.0, 1.0]), vec![4, 1]);
    }

    #[test]
    fn boarding_spills_over_and_stops_at_crush() {
        let mut loads = vec![9, 0, 0];
        // Car 1 is wanted most but has room for 1 only.
        let got = board(&mut loads, 12, &[10.0, 1.0, 1.0], 10);
        assert_eq!(got, 12);
        assert_eq!(loads.iter().sum::<u32>(), 21);
        assert_eq!(loads[0], 10);
        let got = board(&mut loads, 100, &[1.0, 1.0, 1.0], 10);
        assert_eq!(got, 9);
        assert_eq!(loads, vec![10, 10, 10]);
    }

    #[test]
    fn cars_near_the_entrance_weigh_more() {
        let w = car_weights(8, 0.0);
        assert!(w.windows(2).all(|p| p[0] > p[1]));
        let w = car_weights(8, 1.0);
        assert!(w[7] > w[0]);
    }
}
