//! Unit tests of the stretch profiles.

use std::collections::HashMap;

use crowd_proto::level::Level;
use crowd_proto::pb::store::StoredReport;
use crowd_proto::pb::v1::EstimateSource;

use super::*;
use crate::estimator::{UniformTrust, apply};

const HOUR: i64 = 3_600_000;
const NOW: i64 = 1_795_000_000_000;
const MINUTE: i64 = 60_000;

#[test]
fn a_train_is_not_its_own_prior() {
    let cell = Cell::new(1, 80.0, 0);
    assert_eq!(cell.prior(1, 1_000, HOUR), None);
    assert_eq!(cell.prior(2, 1_000, HOUR), Some(80.0));
}

#[test]
fn a_train_replaces_its_own_record_and_averages_the_others() {
    let mut cell = Cell::new(1, 80.0, 0);
    cell.record(1, 60.0, 1_000, HOUR);
    assert_eq!(cell.prior(2, 2_000, HOUR), Some(60.0));
    cell.record(2, 100.0, 3_000, HOUR);
    // Train 2 reads the trains before it; train 3 all of them.
    assert_eq!(cell.prior(2, 4_000, HOUR), Some(60.0));
    assert_eq!(cell.prior(3, 4_000, HOUR), Some(80.0));
    cell.record(3, 40.0, 5_000, HOUR);
    assert_eq!(cell.prior(4, 6_000, HOUR), Some(60.0));
}

#[test]
fn old_trains_say_nothing() {
    let mut cell = Cell::new(1, 80.0, 0);
    assert_eq!(cell.prior(2, HOUR + 1, HOUR), None);
    cell.record(2, 30.0, 2 * HOUR, HOUR);
    assert_eq!(cell.earlier, None);
    assert_eq!(cell.prior(3, 2 * HOUR, HOUR), Some(30.0));
}

#[test]
fn a_non_finite_percentage_is_not_recorded() {
    let mut cell = Cell::new(1, 80.0, 0);
    cell.record(2, f64::NAN, 1_000, HOUR);
    assert_eq!(cell, Cell::new(1, 80.0, 0));
}

#[test]
fn cells_round_trip_through_storage_and_non_finite_ones_are_dropped() {
    let mut cell = Cell::new(1, 80.0, 0);
    cell.record(2, 30.0, 1_000, HOUR);
    assert_eq!(Cell::from_stored(&cell.to_stored()), Some(cell));
    let fresh = Cell::new(7, 12.5, 9);
    assert_eq!(Cell::from_stored(&fresh.to_stored()), Some(fresh));
    let mut broken = cell.to_stored();
    broken.percentage = f64::INFINITY;
    assert_eq!(Cell::from_stored(&broken), None);
}

#[test]
fn stretch_fields_round_trip() {
    let s = Stretch {
        previous: 0xdead_beef,
        latest: 7,
    };
    assert_eq!(s.field(), "deadbeef00000007");
    assert_eq!(Stretch::from_field(&s.field()), Some(s));
    assert_eq!(Stretch::from_field("nope"), None);
    assert_eq!(Stretch::from_field("zzzzzzzz00000007"), None);
}

fn report(trip: &str, device: u64, level: Level, at_ms: i64, stop: &str) -> StoredReport {
    StoredReport {
        report_id: format!("{trip}-{device}-{at_ms}"),
        device,
        trip_id: trip.into(),
        start_date: "20261126".into(),
        route_id: "B".into(),
        carriage_sequence: 1 + (device % 8) as u32,
        level: level.number() as u32,
        occupancy_percentage: None,
        observed_at_ms: at_ms,
        received_at_ms: at_ms,
        position: None,
        stop_id: stop.into(),
    }
}

fn state_of(reports: &[StoredReport]) -> TrainState {
    let params = Params::default();
    let mut state = TrainState::default();
    for r in reports {
        apply(&mut state, r, &params);
    }
    state
}

/// A train seen at stops `X` then `Y` (at NOW − 4 min) by riders who say
/// `at_stops` there, with `before` reports made before `Y` and `since`
/// reports made after it.
fn train(
    trip: &str,
    at_stops: Level,
    before: &[(u64, Level)],
    since: &[(u64, Level)],
) -> TrainState {
    let mut reports = vec![
        report(trip, 100, at_stops, NOW - 10 * MINUTE, "X"),
        report(trip, 101, at_stops, NOW - 4 * MINUTE, "Y"),
    ];
    for &(d, l) in before {
        reports.push(report(trip, d, l, NOW - 5 * MINUTE, ""));
    }
    for &(d, l) in since {
        reports.push(report(trip, d, l, NOW - 2 * MINUTE, ""));
    }
    state_of(&reports)
}

fn crushed_train(trip: &str) -> TrainState {
    let crushed: Vec<(u64, Level)> = (1..=5).map(|d| (d, Level::Crushed)).collect();
    train(trip, Level::Crushed, &[], &crushed)
}

#[test]
fn a_train_whose_riders_spoke_before_its_stop_leans_on_the_train_ahead() {
    let params = Params::default();
    let mut profiles = Profiles::default();
    let ahead = crushed_train("A");
    let a = profiles
        .estimate(&ahead, NOW, &params, &UniformTrust)
        .expect("an estimate");
    assert_eq!(a.level, Level::Crushed.number());
    let (stretch, _) = estimator::stretch(&ahead, NOW).expect("a stretch");
    let recorded = profiles.cell("B", stretch).expect("a cell").percentage;
    assert!(recorded >= 100.0, "{recorded}");

    // The train behind: one rider at Y, three before it, all of few seats.
    let few = Level::FewSeats;
    let behind = train("C", few, &[(11, few), (12, few), (13, few)], &[]);
    let alone = estimator::estimate(&behind, NOW, &params, &UniformTrust).expect("an estimate");
    assert_eq!(alone.level, few.number());
    let informed = profiles
        .estimate(&behind, NOW, &params, &UniformTrust)
        .expect("an estimate");
    assert!(
        informed.occupancy_percentage > alone.occupancy_percentage + 20,
        "{} vs {}",
        informed.occupancy_percentage,
        alone.occupancy_percentage
    );
    // And says so.
    assert_eq!(alone.source, EstimateSource::Crowd as i32);
    assert_eq!(informed.source, EstimateSource::CrowdAndTrainsAhead as i32);
    // What C's own riders said is now the latest, A's in the average.
    let cell = profiles.cell("B", stretch).expect("a cell");
    assert_eq!(cell.trip, trip_fingerprint(&behind));
    assert_eq!(cell.earlier.map(|(p, _)| p), Some(recorded));
    assert!(cell.percentage < 70.0, "{cell:?}");
}

#[test]
fn riders_since_the_stop_outweigh_a_train_ahead_that_disagrees() {
    let params = Params::default();
    let mut profiles = Profiles::default();
    profiles.estimate(&crushed_train("A"), NOW, &params, &UniformTrust);
    let seats: Vec<(u64, Level)> = (11..=16).map(|d| (d, Level::ManySeats)).collect();
    let behind = train("C", Level::ManySeats, &[], &seats);
    let informed = profiles
        .estimate(&behind, NOW, &params, &UniformTrust)
        .expect("an estimate");
    assert_eq!(informed.level, Level::ManySeats.number());
}

#[test]
fn a_train_seen_at_no_stop_for_long_has_no_stretch() {
    let params = Params::default();
    let mut profiles = Profiles::default();
    profiles.estimate(&crushed_train("A"), NOW, &params, &UniformTrust);
    let changed = profiles.take_changed();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].route, "B");
    assert_eq!(changed[0].recorded.len(), 1);
    let few = Level::FewSeats;
    let behind = train("C", few, &[(11, few), (12, few)], &[]);
    // Six minutes later its latest stop is too old to name its stretch.
    let later = NOW + 6 * MINUTE;
    let alone = estimator::estimate(&behind, later, &params, &UniformTrust);
    let informed = profiles.estimate(&behind, later, &params, &UniformTrust);
    assert!(alone.is_some());
    assert_eq!(informed, alone);
    assert!(profiles.take_changed().is_empty());
}

#[test]
fn another_route_or_direction_is_another_profile() {
    let params = Params::default();
    let mut profiles = Profiles::default();
    profiles.estimate(&crushed_train("A"), NOW, &params, &UniformTrust);
    let few = Level::FewSeats;
    let mut other_route = train("C", few, &[(11, few), (12, few)], &[]);
    other_route.route_id = "D".into();
    let alone = estimator::estimate(&other_route, NOW, &params, &UniformTrust);
    assert_eq!(
        profiles.estimate(&other_route, NOW, &params, &UniformTrust),
        alone
    );
    // A train of no known route neither reads nor records.
    let mut no_route = crushed_train("N");
    no_route.route_id.clear();
    profiles.take_changed();
    profiles.estimate(&no_route, NOW, &params, &UniformTrust);
    assert!(profiles.take_changed().is_empty());
    // The same stations the other way round: Y, then X.
    let mut reports = vec![
        report("E", 100, few, NOW - 10 * MINUTE, "Y"),
        report("E", 101, few, NOW - 4 * MINUTE, "X"),
    ];
    reports.push(report("E", 11, few, NOW - 5 * MINUTE, ""));
    let reverse = state_of(&reports);
    let alone = estimator::estimate(&reverse, NOW, &params, &UniformTrust);
    assert_eq!(
        profiles.estimate(&reverse, NOW, &params, &UniformTrust),
        alone
    );
}

#[test]
fn a_route_keeps_its_most_recently_recorded_stretches() {
    let stretch = |i: usize| Stretch {
        previous: i as u32,
        latest: i as u32 + 1,
    };
    // Loaded over the bound: the oldest go, and are to be deleted.
    let cells: HashMap<Stretch, Cell> = (0..MAX_STRETCHES_PER_ROUTE + 3)
        .map(|i| (stretch(i), Cell::new(1, 50.0, i as i64)))
        .collect();
    let mut profiles = Profiles::default();
    profiles.insert_route("B", cells);
    assert!(profiles.cell("B", stretch(2)).is_none());
    assert!(profiles.cell("B", stretch(3)).is_some());
    let changed = profiles.take_changed();
    assert_eq!(changed[0].dropped, vec![stretch(0), stretch(1), stretch(2)]);
    assert!(changed[0].recorded.is_empty());

    // Recording a new stretch into a full route drops the oldest.
    let route = profiles.routes.get_mut("B").expect("the route");
    route.record(stretch(5_000), 2, 80.0, 10_000, HOUR);
    assert_eq!(route.cells.len(), MAX_STRETCHES_PER_ROUTE);
    assert!(!route.cells.contains_key(&stretch(3)));
    let changed = profiles.take_changed();
    assert_eq!(changed[0].dropped, vec![stretch(3)]);
    assert_eq!(changed[0].recorded.len(), 1);
    assert_eq!(changed[0].recorded[0].0, stretch(5_000));
}
