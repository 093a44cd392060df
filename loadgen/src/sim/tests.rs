//! Invariants and shape of the simulation as a whole.

use std::collections::HashSet;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use crowd_proto::domain::DeviceHasher;
use crowd_proto::validate::{Limits, validate_report};
use proptest::prelude::*;

use super::*;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

fn at(h: u32, m: u32) -> NaiveDateTime {
    day().and_time(NaiveTime::from_hms_opt(h, m, 0).unwrap())
}

fn wall(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

fn sim(scenario: Scenario, seed: u64) -> Simulation {
    Simulation::new(Simulation::sample_network(), scenario, seed)
}

/// Checks every run of `date`: loads within 0..=crush, and for each call
/// boarded − alighted equals the change of riders on board; empty at the end.
fn check_day(sim: &mut Simulation, date: NaiveDate) {
    let line = sim.network().lines[0].clone();
    let crush = line.crush_load();
    let runs = sim.day_runs(date).to_vec();
    assert!(!runs.is_empty());
    for run in &runs {
        let mut on_board = 0i64;
        for call in &run.calls {
            assert_eq!(call.loads.len(), line.cars as usize);
            assert!(
                call.loads.iter().all(|&n| n <= crush),
                "{} over crush",
                run.trip_id
            );
            on_board += i64::from(call.boarded) - i64::from(call.alighted);
            assert!(on_board >= 0);
            assert_eq!(on_board, i64::from(call.loads.iter().sum::<u32>()));
        }
        assert_eq!(on_board, 0, "{} ends with riders on board", run.trip_id);
    }
}

#[test]
fn loads_stay_within_bounds_and_passengers_are_conserved() {
    let mut s = sim(Scenario::default(), 1);
    check_day(&mut s, day());
}

#[test]
fn morning_rush_builds_towards_the_hub_and_drops_after() {
    let mut s = sim(Scenario::default(), 3);
    let line = s.network().lines[0].clone();
    let hub = line
        .stations
        .iter()
        .position(|st| st.id == sample::SAMPLE_HUB)
        .unwrap();
    let runs = s.day_runs(day()).to_vec();
    let rush: Vec<&TripRun> = runs
        .iter()
        .filter(|r| r.direction == Direction::Outbound)
        .filter(|r| r.start() >= at(7, 30) && r.start() <= at(8, 15))
        .collect();
    assert!(rush.len() >= 8);
    let mean_load = |i: usize| {
        rush.iter()
            .map(|r| f64::from(r.calls[i].loads.iter().sum::<u32>()))
            .sum::<f64>()
            / rush.len() as f64
    };
    let nominal = f64::from(line.cars * line.car_capacity);
    let before_hub = mean_load(hub - 1);
    // Loads rise from the suburbs to just before the hub...
    assert!(mean_load(0) < mean_load(2));
    assert!(mean_load(2) < before_hub);
    // ...the train is packed there...
    assert!(before_hub > 0.9 * nominal, "{before_hub}");
    // ...and it empties at and after the hub.
    assert!(mean_load(hub) < 0.8 * before_hub);
    assert!(mean_load(hub + 2) < 0.5 * before_hub);
    // Off-peak trains are much lighter.
    let noon: Vec<&TripRun> = runs
        .iter()
        .filter(|r| r.direction == Direction::Outbound && r.start() >= at(12, 0))
        .take(5)
        .collect();
    let noon_load = noon
        .iter()
        .map(|r| f64::from(r.calls[hub - 1].loads.iter().sum::<u32>()))
        .sum::<f64>()
        / noon.len() as f64;
    assert!(noon_load < 0.6 * before_hub, "{noon_load} vs {before_hub}");
}

#[test]
fn cars_near_the_platform_entrances_fill_more() {
    let mut s = sim(Scenario::default(), 4);
    let runs = s.day_runs(day()).to_vec();
    // Outbound suburban entrances are at the far end (car 8) in the sample.
    let run = runs
        .iter()
        .find(|r| r.direction == Direction::Outbound && r.start() >= at(8, 0))
        .unwrap();
    let loads = &run.calls[3].loads;
    assert!(loads[7] > loads[0], "{loads:?}");
}

#[test]
fn trains_report_truth_consistently() {
    let mut s = sim(Scenario::default(), 5);
    assert!(s.trains().is_empty());
    s.advance_to(at(8, 10));
    let trains = s.trains();
    assert!(trains.len() > 10, "{}", trains.len());
    let crush = f64::from(s.network().lines[0].crush_percentage);
    for t in &trains {
        assert_eq!(t.trip.start_date, "20261126");
        assert_eq!(t.trip.route_id, "B");
        assert_eq!(t.cars.len(), 8);
        assert!(
            t.cars
                .iter()
                .all(|c| c.percentage >= 0.0 && c.percentage <= crush)
        );
        assert_eq!(t.on_board, t.cars.iter().map(|c| c.on_board).sum::<u32>());
        let mean = t.cars.iter().map(|c| c.percentage).sum::<f64>() / 8.0;
        assert!((mean - t.percentage).abs() < 1e-9);
        assert_eq!(t.level, truth::level_of(t.percentage));
        assert!((48.6..49.1).contains(&t.position.0) && (2.0..2.6).contains(&t.position.1));
        assert!((0.0..=1.0).contains(&t.progress));
    }
    let ids: HashSet<_> = trains.iter().map(|t| t.trip.trip_id.clone()).collect();
    assert_eq!(ids.len(), trains.len());
    // Nothing runs in the middle of the night.
    s.advance_to(at(3, 0) + TimeDelta::days(1));
    assert!(s.trains().is_empty());
    assert!(s.sample_report(wall(at(3, 0))).is_none());
}

#[test]
fn small_steps_see_the_same_trains_as_one_jump() {
    let mut stepping = sim(Scenario::default(), 8);
    let mut t = at(23, 20);
    while t < at(1, 0) + TimeDelta::days(1) {
        stepping.advance_to(t);
        let mut jumping = sim(Scenario::default(), 8);
        jumping.advance_to(t);
        assert_eq!(stepping.trains(), jumping.trains(), "at {t}");
        t += TimeDelta::seconds(197);
    }
    // Late trains of the previous service day run past midnight.
    let mut late = sim(Scenario::default(), 8);
    late.advance_to(at(0, 20) + TimeDelta::days(1));
    let trains = late.trains();
    assert!(!trains.is_empty());
    assert!(trains.iter().all(|t| t.trip.start_date == "20261126"));
}

#[test]
fn the_clock_only_moves_forward() {
    let mut s = sim(Scenario::default(), 5);
    s.advance_to(at(9, 0));
    s.advance_to(at(8, 0));
    assert_eq!(s.now(), Some(at(9, 0)));
}

fn reports(seed: u64, scenario: Scenario, n: usize) -> Vec<SimReport> {
    let mut s = sim(scenario, seed);
    let mut out = Vec::new();
    for k in 0..n {
        let t = at(7, 50) + TimeDelta::seconds(k as i64 * 3);
        s.advance_to(t);
        out.extend(s.sample_report(wall(t)));
    }
    out
}

#[test]
fn same_seed_same_reports_other_seed_other_reports() {
    let a = reports(42, Scenario::adversarial(), 300);
    let b = reports(42, Scenario::adversarial(), 300);
    assert_eq!(a.len(), 300);
    assert_eq!(a, b);
    let c = reports(43, Scenario::adversarial(), 300);
    assert_ne!(a, c);
}

#[test]
fn default_reports_pass_validation_with_unique_ids() {
    let hasher = DeviceHasher::new("test");
    let mut s = sim(Scenario::default(), 9);
    let mut ids = HashSet::new();
    let mut kinds = HashSet::new();
    let mut devices_per_trip: std::collections::HashMap<String, HashSet<String>> =
        Default::default();
    for k in 0..2_000 {
        let t = at(8, 0) + TimeDelta::seconds(k);
        s.advance_to(t);
        let r = s.sample_report(wall(t)).expect("trains run at 8:00");
        validate_report(&r.report, &Limits::default(), &hasher, wall(t))
            .unwrap_or_else(|e| panic!("{e}: {:?}", r.report));
        assert!(ids.insert(r.report.report_id.clone()));
        kinds.insert(r.reporter);
        let trip = r.report.trip.as_ref().unwrap().trip_id.clone();
        devices_per_trip
            .entry(trip)
            .or_default()
            .insert(r.report.device_id);
        let p = r.report.position.unwrap();
        assert!((10.0..50.0).contains(&p.accuracy_m));
        if r.reporter == ReporterKind::Honest && r.report.occupancy_percentage.is_none() {
            assert!(
                Level::from_number(r.report.level)
                    .unwrap()
                    .distance(r.true_level)
                    <= 1
            );
        }
        if r.reporter == ReporterKind::Liar {
            assert_eq!(r.report.level, Level::Full.number());
        }
    }
    for kind in [
        ReporterKind::Honest,
        ReporterKind::Noisy,
        ReporterKind::Liar,
        ReporterKind::Spammer,
        ReporterKind::SkewedClock,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} report");
    }
    assert!(!kinds.contains(&ReporterKind::Swarm));
    // Devices report more than once during a ride.
    let reports_on_trips = 2_000;
    let devices: usize = devices_per_trip.values().map(HashSet::len).sum();
    assert!(devices < reports_on_trips, "{devices}");
}

#[test]
fn commuters_keep_their_device_from_day_to_day() {
    let devices_on = |date: NaiveDate| {
        let mut s = sim(Scenario::default(), 21);
        let t = date.and_hms_opt(8, 5, 0).unwrap();
        s.advance_to(t);
        (0..400)
            .map(|_| s.sample_report(wall(t)).unwrap().report.device_id)
            .collect::<HashSet<_>>()
    };
    let today = devices_on(day());
    let tomorrow = devices_on(day().succ_opt().unwrap());
    assert!(today.intersection(&tomorrow).count() > today.len() / 4);
}

#[test]
fn skewed_clocks_shift_observed_at() {
    let mut s = sim(Scenario::default(), 11);
    let t = at(8, 0);
    s.advance_to(t);
    let mut skewed = 0;
    for _ in 0..3_000 {
        let r = s.sample_report(wall(t)).unwrap();
        let seen = r.report.observed_at.unwrap().seconds;
        if r.reporter == ReporterKind::SkewedClock {
            skewed += 1;
            let shift = seen - wall(t).timestamp();
            assert!((-900..=-60).contains(&shift), "{shift}");
        } else {
            assert_eq!(seen, wall(t).timestamp());
        }
    }
    assert!(skewed > 0);
}

#[test]
fn the_swarm_hits_one_train_with_one_lie() {
    let spec = SwarmSpec {
        size: 50,
        lie: Level::Full,
        at_minute: 8 * 60 + 15,
        reports_per_device: 2,
    };
    let scenario = Scenario {
        swarm: Some(spec),
        ..Scenario::default()
    };
    let mut s = sim(scenario, 13);
    s.advance_to(at(8, 14));
    assert!(s.swarm_target().is_none());
    for _ in 0..10 {
        let r = s.sample_report(wall(at(8, 14))).unwrap();
        assert_ne!(r.reporter, ReporterKind::Swarm);
    }
    s.advance_to(at(8, 15));
    let target = s.swarm_target().cloned().expect("swarm started");
    let target_truth = s
        .trains()
        .into_iter()
        .find(|t| t.trip == target)
        .expect("target runs");
    let furthest = s
        .trains()
        .iter()
        .map(|t| t.level.distance(Level::Full))
        .max()
        .unwrap();
    assert_eq!(target_truth.level.distance(Level::Full), furthest);
    let mut devices = HashSet::new();
    for _ in 0..100 {
        let r = s.sample_report(wall(at(8, 15))).unwrap();
        assert_eq!(r.reporter, ReporterKind::Swarm);
        assert_eq!(r.report.trip.as_ref(), Some(&target));
        assert_eq!(r.report.level, Level::Full.number());
        devices.insert(r.report.device_id);
    }
    assert_eq!(devices.len(), 50);
    let next = s.sample_report(wall(at(8, 15))).unwrap();
    assert_ne!(next.reporter, ReporterKind::Swarm);
}

#[test]
fn network_files_run_like_the_sample() {
    let text = r#"
[[line]]
id = "X"
cars = 2
car_capacity = 10
first_departure = "07:00"
last_departure = "09:00"
headways = [{ from = "07:00", minutes = 30 }]
stations = [
  { id = "H", lat = 45.0, lon = 5.0, homes = 50 },
  { id = "W", lat = 45.1, lon = 5.1, jobs = 50 },
]
stops = [{ station = "H", minute = 0 }, { station = "W", minute = 10 }]
"#;
    let mut s = Simulation::new(Network::from_toml(text).unwrap(), Scenario::default(), 1);
    check_day(&mut s, day());
    s.advance_to(at(8, 5));
    let trains = s.trains();
    assert_eq!(trains.len(), 2);
    // A 30-minute headway at the peak packs the tiny outbound train to crush.
    let out = trains
        .iter()
        .find(|t| t.direction == Direction::Outbound)
        .unwrap();
    assert_eq!(out.on_board, 32);
    assert_eq!(out.trip.trip_id, "X-0-0800");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn invariants_hold_for_any_seed_and_time(seed in any::<u64>(), minute in 0u32..(24 * 60)) {
        let mut s = sim(Scenario::adversarial(), seed);
        let t = day().and_hms_opt(minute / 60, minute % 60, 0).unwrap();
        s.advance_to(t);
        let crush = f64::from(s.network().lines[0].crush_percentage);
        for train in s.trains() {
            for car in &train.cars {
                prop_assert!(car.percentage >= 0.0 && car.percentage <= crush);
            }
        }
        for _ in 0..20 {
            match s.sample_report(wall(t)) {
                Some(r) => {
                    prop_assert!(r.report.device_id.len() <= 128);
                    prop_assert!(r.report.carriage_sequence >= 1 && r.report.carriage_sequence <= 8);
                    prop_assert!(Level::from_number(r.report.level).is_some());
                }
                None => prop_assert!(s.trains().is_empty()),
            }
        }
        let mut again = sim(Scenario::adversarial(), seed);
        again.advance_to(t);
        prop_assert_eq!(again.trains(), s.trains());
        let date = t.date();
        let runs = s.day_runs(date).to_vec();
        for run in runs {
            let mut on_board = 0i64;
            for call in &run.calls {
                on_board += i64::from(call.boarded) - i64::from(call.alighted);
                prop_assert_eq!(on_board, i64::from(call.loads.iter().sum::<u32>()));
            }
            prop_assert_eq!(on_board, 0);
        }
    }
}
