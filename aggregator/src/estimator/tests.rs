//! Unit and property tests of the estimator.

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_795_000_000_000;
const MINUTE: i64 = 60_000;

fn report(id: &str, device: u64, car: u32, level: Level, observed_at_ms: i64) -> StoredReport {
    StoredReport {
        report_id: id.into(),
        device,
        trip_id: "T1".into(),
        start_date: "20261126".into(),
        route_id: "B".into(),
        carriage_sequence: car,
        level: level.number() as u32,
        occupancy_percentage: None,
        observed_at_ms,
        received_at_ms: observed_at_ms,
        position: None,
        stop_id: String::new(),
    }
}

fn run(reports: &[StoredReport]) -> (TrainState, Option<OccupancyEstimate>) {
    let params = Params::default();
    let mut state = TrainState::default();
    for r in reports {
        apply(&mut state, r, &params);
    }
    let est = estimate(&state, NOW, &params, &UniformTrust);
    (state, est)
}

fn level(est: &OccupancyEstimate) -> Level {
    Level::from_number(est.level).expect("a crowding level")
}

#[test]
fn a_single_report_gives_its_level() {
    let (state, est) = run(&[report("a", 1, 2, Level::Crushed, NOW - MINUTE)]);
    let est = est.expect("an estimate");
    assert_eq!(level(&est), Level::Crushed);
    assert_eq!(
        est.occupancy_percentage,
        Level::Crushed.typical_percentage()
    );
    assert_eq!(est.reporters, 1);
    assert_eq!(est.cars.len(), 1);
    assert_eq!(est.cars[0].carriage_sequence, 2);
    assert_eq!(est.cars[0].level, Level::Crushed.number());
    assert_eq!(est.source, EstimateSource::Crowd as i32);
    let trip = est.trip.expect("trip");
    assert_eq!((trip.trip_id.as_str(), trip.route_id.as_str()), ("T1", "B"));
    assert!(est.confidence > 0.0 && est.confidence < 1.0);
    assert_eq!(state.reports_counted, 1);
}

#[test]
fn no_report_in_the_window_means_no_estimate() {
    let (_, est) = run(&[report("a", 1, 1, Level::Full, NOW - 20 * MINUTE)]);
    assert!(est.is_none());
    let (_, est) = run(&[]);
    assert!(est.is_none());
}

#[test]
fn car_zero_counts_for_the_train_only() {
    let (_, est) = run(&[report("a", 1, 0, Level::Full, NOW - MINUTE)]);
    let est = est.expect("an estimate");
    assert_eq!(level(&est), Level::Full);
    assert!(est.cars.is_empty());
}

#[test]
fn a_newer_report_outweighs_an_older_disagreeing_one() {
    let older = report("a", 1, 1, Level::Empty, NOW - 10 * MINUTE);
    let newer = report("b", 2, 1, Level::Full, NOW - MINUTE);
    for order in [[older.clone(), newer.clone()], [newer, older]] {
        let (_, est) = run(&order);
        assert_eq!(level(&est.expect("an estimate")), Level::Full);
    }
}

#[test]
fn a_device_updating_its_report_replaces_it() {
    let (state, est) = run(&[
        report("a", 1, 1, Level::Full, NOW - 5 * MINUTE),
        report("b", 1, 1, Level::ManySeats, NOW - MINUTE),
    ]);
    assert_eq!(state.observations.len(), 1);
    assert_eq!(state.reports_counted, 2);
    let est = est.expect("an estimate");
    assert_eq!(level(&est), Level::ManySeats);
    assert_eq!(est.reporters, 1);
}

#[test]
fn one_device_repeating_itself_cannot_outweigh_others() {
    let mut reports = vec![
        report("b", 2, 1, Level::ManySeats, NOW - MINUTE / 2),
        report("c", 3, 1, Level::ManySeats, NOW - MINUTE / 2),
    ];
    for i in 0..20 {
        reports.push(report(
            &format!("loud-{i}"),
            9,
            1,
            Level::NotAccepting,
            NOW - i,
        ));
    }
    // The same device also floods every other car of the train.
    for car in 2..=8 {
        reports.push(report(
            &format!("car-{car}"),
            9,
            car,
            Level::NotAccepting,
            NOW - 1,
        ));
    }
    let (_, est) = run(&reports);
    let est = est.expect("an estimate");
    assert_eq!(level(&est), Level::ManySeats);
    assert_eq!(est.reporters, 3);
    let car1 = est
        .cars
        .iter()
        .find(|c| c.carriage_sequence == 1)
        .expect("car 1");
    assert_eq!(car1.level, Level::ManySeats.number());
    assert_eq!(car1.reporters, 3);
}

#[test]
fn a_noisy_minority_does_not_move_the_median() {
    let mut reports = Vec::new();
    for d in 0..6 {
        reports.push(report(
            &format!("h{d}"),
            d,
            1,
            Level::FewSeats,
            NOW - MINUTE,
        ));
    }
    for d in 100..104 {
        reports.push(report(
            &format!("x{d}"),
            d,
            1,
            Level::NotAccepting,
            NOW - MINUTE / 2,
        ));
    }
    let (_, est) = run(&reports);
    assert_eq!(level(&est.expect("an estimate")), Level::FewSeats);
}

#[test]
fn a_duplicate_report_id_changes_nothing() {
    let first = report("same", 1, 1, Level::Empty, NOW - MINUTE);
    let params = Params {
        max_recent_ids: 8,
        ..Params::default()
    };
    let mut state = TrainState::default();
    assert_eq!(apply(&mut state, &first, &params), Applied::Counted);
    let before = state.clone();
    let mut retry = report("same", 1, 1, Level::Full, NOW);
    assert_eq!(apply(&mut state, &retry, &params), Applied::Duplicate);
    assert_eq!(state, before);
    // The same id from another device is another report.
    retry.device = 2;
    assert_eq!(apply(&mut state, &retry, &params), Applied::Counted);
    assert_eq!(state.reports_counted, 2);
}

#[test]
fn agreement_and_numbers_raise_confidence() {
    let (_, one) = run(&[report("a", 1, 1, Level::Full, NOW)]);
    let agreeing: Vec<_> = (0..5)
        .map(|d| report(&format!("r{d}"), d, 1, Level::Full, NOW))
        .collect();
    let (_, five) = run(&agreeing);
    let split: Vec<_> = (0..6)
        .map(|d| {
            let l = if d % 2 == 0 {
                Level::Empty
            } else {
                Level::Full
            };
            report(&format!("r{d}"), d, 1, l, NOW)
        })
        .collect();
    let (_, split) = run(&split);
    let (one, five, split) = (one.unwrap(), five.unwrap(), split.unwrap());
    assert!(five.confidence > one.confidence, "{five:?} vs {one:?}");
    assert!(five.confidence > split.confidence);
    assert!(five.confidence <= 1.0);
}

#[test]
fn percentages_are_averaged_with_typical_values_for_the_rest() {
    let mut a = report("a", 1, 1, Level::Crushed, NOW);
    a.occupancy_percentage = Some(120);
    let b = report("b", 2, 1, Level::Crushed, NOW);
    let (_, est) = run(&[a, b]);
    let expected = (120 + Level::Crushed.typical_percentage()).div_ceil(2);
    assert_eq!(est.unwrap().occupancy_percentage, expected);
}

#[test]
fn the_latest_position_is_published_while_fresh() {
    let mut a = report("a", 1, 1, Level::Full, NOW - 2 * MINUTE);
    a.position = Some(Position {
        latitude: 48.0,
        longitude: 2.0,
        accuracy_m: 5.0,
    });
    let mut b = report("b", 2, 1, Level::Full, NOW - MINUTE);
    b.position = Some(Position {
        latitude: 48.5,
        longitude: 2.5,
        accuracy_m: 5.0,
    });
    let (_, est) = run(&[b.clone(), a.clone()]);
    let p = est.unwrap().position.expect("a position");
    assert_eq!((p.latitude, p.longitude), (48.5, 2.5));

    let params = Params::default();
    let mut state = TrainState::default();
    apply(&mut state, &a, &params);
    let later = NOW + params.window_ms;
    let mut fresh = report("c", 3, 1, Level::Full, later);
    fresh.position = None;
    apply(&mut state, &fresh, &params);
    let est = estimate(&state, later, &params, &UniformTrust).unwrap();
    assert!(est.position.is_none());
}

#[test]
fn trust_scales_a_device_weight() {
    let reports = [
        report("a", 1, 1, Level::Empty, NOW),
        report("b", 2, 1, Level::Full, NOW),
        report("c", 3, 1, Level::Full, NOW),
    ];
    let params = Params::default();
    let mut state = TrainState::default();
    for r in &reports {
        apply(&mut state, r, &params);
    }
    let est = estimate(&state, NOW, &params, &|d: u64| {
        if d == 1 { 5.0 } else { 1.0 }
    });
    assert_eq!(est.unwrap().level, Level::Empty.number());
    let est = estimate(&state, NOW, &params, &UniformTrust);
    assert_eq!(est.unwrap().level, Level::Full.number());
}

#[test]
fn state_stays_bounded() {
    let params = Params {
        max_observations: 4,
        max_recent_ids: 3,
        ..Params::default()
    };
    let mut state = TrainState::default();
    for d in 0..10u64 {
        let r = report(&format!("r{d}"), d, 1, Level::Empty, NOW - 10 + d as i64);
        apply(&mut state, &r, &params);
    }
    assert_eq!(state.observations.len(), 4);
    assert!(state.observations.iter().all(|o| o.device >= 6));
    assert_eq!(state.recent_report_ids.len(), 3);
    assert_eq!(state.reports_counted, 10);
}

#[test]
fn prune_drops_what_left_the_window() {
    let params = Params::default();
    let (mut state, _) = run(&[
        report("a", 1, 1, Level::Empty, NOW - 20 * MINUTE),
        report("b", 2, 1, Level::Empty, NOW),
    ]);
    prune(&mut state, NOW, &params);
    assert_eq!(state.observations.len(), 1);
    assert_eq!(state.observations[0].device, 2);
}

#[test]
fn an_unknown_level_is_rejected() {
    let mut r = report("a", 1, 1, Level::Empty, NOW);
    r.level = 0;
    let mut state = TrainState::default();
    assert_eq!(apply(&mut state, &r, &Params::default()), Applied::Rejected);
    r.level = 99;
    assert_eq!(apply(&mut state, &r, &Params::default()), Applied::Rejected);
    assert_eq!(state, TrainState::default());
}

/// Devices `established` have standing and weigh 1; the others are newcomers.
struct Standing(std::collections::BTreeSet<u64>);

impl Trust for Standing {
    fn weight(&self, _device: u64) -> f64 {
        1.0
    }
    fn established(&self, device: u64) -> bool {
        self.0.contains(&device)
    }
}

fn estimate_with(reports: &[StoredReport], trust: &impl Trust) -> Option<OccupancyEstimate> {
    let params = Params::default();
    let mut state = TrainState::default();
    for r in reports {
        apply(&mut state, r, &params);
    }
    estimate(&state, NOW, &params, trust)
}

/// Four riders (devices 0 to 3, cars 1 to 4) who found the train with many
/// seats at `at`.
fn four_riders_with_many_seats(at: i64) -> Vec<StoredReport> {
    (0..4)
        .map(|d| report(&format!("h{d}"), d, 1 + d as u32, Level::ManySeats, at))
        .collect()
}

#[test]
fn a_swarm_of_fresh_devices_cannot_outvote_established_riders() {
    let mut reports = four_riders_with_many_seats(NOW - MINUTE);
    for d in 100..150u64 {
        reports.push(report(
            &format!("s{d}"),
            d,
            1 + (d % 8) as u32,
            Level::Full,
            NOW,
        ));
    }
    let trust = Standing((0..4).collect());
    let est = estimate_with(&reports, &trust).expect("an estimate");
    assert_eq!(level(&est), Level::ManySeats);
    assert_eq!(est.reporters, 54);
    // Without standing, the same swarm wins.
    let naive = estimate_with(&reports, &UniformTrust).expect("an estimate");
    assert_eq!(level(&naive), Level::Full);
}

#[test]
fn a_swarm_cannot_flip_a_train_of_riders_nobody_knows_yet() {
    // Three riders, none with standing, boarded a couple of minutes apart;
    // fifty fresh devices then claim the train is full, all at once.
    let mut reports: Vec<StoredReport> = (0..3)
        .map(|d| {
            let at = NOW - 3 * MINUTE + d as i64 * 40_000;
            report(&format!("h{d}"), d, 1 + d as u32, Level::ManySeats, at)
        })
        .collect();
    for d in 100..150u64 {
        let car = 1 + (d % 8) as u32;
        reports.push(report(
            &format!("s{d}"),
            d,
            car,
            Level::Full,
            NOW - d as i64,
        ));
    }
    let nobody = Standing(Default::default());
    let est = estimate_with(&reports, &nobody).expect("an estimate");
    assert_eq!(level(&est), Level::ManySeats);
}

#[test]
fn the_first_riders_of_an_empty_train_are_heard_in_full() {
    let nobody = Standing(Default::default());
    let one = [report("a", 1, 2, Level::Crushed, NOW)];
    let alone = estimate_with(&one, &nobody).expect("an estimate");
    let uniform = estimate_with(&one, &UniformTrust).expect("an estimate");
    assert_eq!(alone, uniform);
    // Up to the floor, newcomers weigh what established riders would.
    let three: Vec<StoredReport> = (0..3)
        .map(|d| report(&format!("n{d}"), d, 1, Level::Crushed, NOW))
        .collect();
    assert_eq!(
        estimate_with(&three, &nobody),
        estimate_with(&three, &UniformTrust)
    );
}

#[test]
fn newcomers_can_still_sway_a_split_train() {
    // Established riders of one car split 2 / 2 between few seats and
    // standing: the newcomers' capped voice decides, as it should on an
    // honest train.
    let mut reports = vec![
        report("a", 1, 1, Level::FewSeats, NOW),
        report("b", 2, 1, Level::FewSeats, NOW),
        report("c", 3, 1, Level::StandingRoom, NOW),
        report("d", 4, 1, Level::StandingRoom, NOW),
    ];
    reports.push(report("n", 10, 1, Level::StandingRoom, NOW));
    let trust = Standing((1..=4).collect());
    let est = estimate_with(&reports, &trust).expect("an estimate");
    assert_eq!(level(&est), Level::StandingRoom);
}

#[test]
fn an_implausibly_late_report_counts_less() {
    let on_time = report("a", 1, 1, Level::Empty, NOW - MINUTE);
    let mut late = report("b", 2, 1, Level::Full, NOW - MINUTE);
    late.observed_at_ms = NOW - 10 * MINUTE;
    late.received_at_ms = NOW;
    let mut late_late = late.clone();
    late_late.report_id = "c".into();
    late_late.device = 3;
    // Two late FULL reports against one on-time EMPTY: on time wins.
    let (state, est) = run(&[on_time, late, late_late]);
    assert_eq!(level(&est.expect("an estimate")), Level::Empty);
    assert!(state.observations.iter().any(|o| o.discount > 0.5));
}

#[test]
fn a_report_far_from_the_train_counts_less_and_does_not_move_it() {
    let at = |lat: f64, lon: f64| {
        Some(Position {
            latitude: lat,
            longitude: lon,
            accuracy_m: 20.0,
        })
    };
    let mut reports = Vec::new();
    for d in 0..2u64 {
        let mut r = report(&format!("h{d}"), d, 1, Level::FewSeats, NOW);
        r.position = at(48.8618, 2.3469);
        reports.push(r);
    }
    for d in 10..13u64 {
        let mut r = report(&format!("f{d}"), d, 1, Level::Full, NOW);
        r.position = at(48.7054, 2.0714);
        reports.push(r);
    }
    let (state, est) = run(&reports);
    let est = est.expect("an estimate");
    assert_eq!(level(&est), Level::FewSeats);
    let p = est.position.expect("a position");
    assert!((p.latitude - 48.8618).abs() < 1e-9);
    assert_eq!(state.recent_fixes.len(), 2);
}

#[test]
fn riders_of_a_packed_car_do_not_decide_for_a_half_empty_train() {
    // Four riders in a packed front car, one in each of three quiet cars:
    // the median rider stands, but the train (the mean of its cars) has
    // seats. Each rider's vote is weighed by how full their car is relative
    // to the train, within MAX_CAR_FACTOR.
    let mut reports: Vec<StoredReport> = (0..4)
        .map(|d| report(&format!("f{d}"), d, 1, Level::StandingRoom, NOW))
        .collect();
    for car in 2..=4 {
        reports.push(report(
            &format!("q{car}"),
            10 + u64::from(car),
            car,
            Level::ManySeats,
            NOW,
        ));
    }
    let (_, est) = run(&reports);
    assert_eq!(level(&est.expect("an estimate")), Level::ManySeats);
    // The same riders all in one car: nothing to correct, the median stands.
    let one_car: Vec<StoredReport> = reports
        .iter()
        .cloned()
        .map(|mut r| {
            r.carriage_sequence = 1;
            r
        })
        .collect();
    let (_, est) = run(&one_car);
    assert_eq!(level(&est.expect("an estimate")), Level::StandingRoom);
}

#[test]
fn a_burst_cannot_overturn_the_only_riders_of_a_quiet_train_however_old() {
    // Two riders said "empty" ten minutes ago; fifty fresh devices claim
    // "full" within seconds. Nobody has standing.
    let mut reports = vec![
        report("a", 1, 1, Level::Empty, NOW - 10 * MINUTE),
        report("b", 2, 2, Level::Empty, NOW - 10 * MINUTE + 20_000),
    ];
    for d in 0..50u64 {
        reports.push(report(
            &format!("s{d}"),
            1000 + d,
            1 + (d % 4) as u32,
            Level::Full,
            NOW - (d as i64 % 5) * 1000,
        ));
    }
    let nobody = Standing(Default::default());
    let est = estimate_with(&reports, &nobody).expect("an estimate");
    assert_eq!(level(&est), Level::Empty);
    // Without the two riders, the burst is all there is to go by: honest
    // riders boarding an empty train together must be heard. It weighs
    // little, so the estimate says so (low confidence).
    let alone = estimate_with(&reports[2..], &nobody).expect("an estimate");
    assert_eq!(level(&alone), Level::Full);
    let trusted = estimate_with(&reports[2..], &UniformTrust).expect("an estimate");
    assert!(
        alone.confidence < trusted.confidence,
        "{alone:?} {trusted:?}"
    );
}

#[test]
fn the_half_life_is_a_minute_and_a_half() {
    // A report one half-life old weighs half a fresh one: two of them tie
    // with one fresh report, three outweigh it.
    let half = Params::default().half_life_ms;
    assert_eq!(half, 90_000);
    let mut reports = vec![report("new", 9, 1, Level::Crushed, NOW)];
    for d in 0..3 {
        reports.push(report(&format!("o{d}"), d, 1, Level::ManySeats, NOW - half));
    }
    let (_, est) = run(&reports);
    assert_eq!(level(&est.expect("an estimate")), Level::ManySeats);
    let (_, est) = run(&reports[..2]);
    let est = est.expect("an estimate");
    // One fresh Crushed (1) against one old ManySeats (½): Crushed.
    assert_eq!(level(&est), Level::Crushed);
}

fn arb_report(index: usize) -> impl Strategy<Value = StoredReport> {
    (
        0u64..6,
        0u32..4,
        1u32..=7,
        proptest::option::of(0u32..200),
        -(20 * MINUTE)..(2 * MINUTE),
    )
        .prop_map(move |(device, car, level, pct, offset)| StoredReport {
            report_id: format!("r{index}"),
            device,
            trip_id: "T1".into(),
            start_date: "20261126".into(),
            route_id: String::new(),
            carriage_sequence: car,
            level,
            occupancy_percentage: pct,
            observed_at_ms: NOW + offset,
            received_at_ms: NOW,
            position: None,
            stop_id: String::new(),
        })
}

fn arb_reports() -> impl Strategy<Value = Vec<StoredReport>> {
    (0usize..30).prop_flat_map(|n| (0..n).map(arb_report).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_estimate_does_not_depend_on_report_order(
        (reports, shuffled) in arb_reports().prop_flat_map(|r| {
            let shuffled = Just(r.clone()).prop_shuffle();
            (Just(r), shuffled)
        })
    ) {
        prop_assert_eq!(run(&reports).1, run(&shuffled).1);
    }

    #[test]
    fn the_trains_ahead_pull_an_estimate_toward_them_and_no_further(
        reports in arb_reports(),
        ahead in 0.0f64..300.0,
    ) {
        let (state, alone) = run(&reports);
        let params = Params::default();
        let given = estimate_given(&state, NOW, &params, &UniformTrust, Some(ahead));
        prop_assert_eq!(given.is_some(), alone.is_some());
        if let (Some(given), Some(alone)) = (given, alone) {
            let own = f64::from(alone.occupancy_percentage);
            let pct = f64::from(given.published.occupancy_percentage);
            // Between the riders' percentage and the prior (give or take
            // the rounding of the riders').
            prop_assert!(pct >= own.min(ahead).floor() - 1.0, "{pct} from {own} and {ahead}");
            prop_assert!(pct <= own.max(ahead).ceil() + 1.0, "{pct} from {own} and {ahead}");
            prop_assert!((0.0..=1.0).contains(&given.published.confidence));
            // Everything but the train's level, percentage and confidence
            // is the riders' alone.
            prop_assert_eq!(given.published.cars, alone.cars);
            prop_assert_eq!(given.published.reporters, alone.reporters);
        }
    }

    #[test]
    fn duplicates_change_nothing(
        reports in arb_reports(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut with_dups = reports.clone();
        if !reports.is_empty() {
            for p in picks {
                with_dups.push(p.get(&reports).clone());
            }
        }
        let (state, est) = run(&with_dups);
        let (plain_state, plain_est) = run(&reports);
        prop_assert_eq!(est, plain_est);
        prop_assert_eq!(state.reports_counted, plain_state.reports_counted);
    }

    #[test]
    fn reports_older_than_the_window_have_no_effect(
        reports in arb_reports(),
        old in proptest::collection::vec((0u64..8, 0u32..4, 1u32..=7, 1i64..1_000_000), 0..10),
    ) {
        let window = Params::default().window_ms;
        let mut with_old = reports.clone();
        for (i, (device, car, level, extra)) in old.into_iter().enumerate() {
            let mut r = report(&format!("old{i}"), device, car, Level::Empty, NOW - window - extra);
            r.level = level;
            r.route_id = String::new();
            with_old.push(r);
        }
        prop_assert_eq!(run(&with_old).1, run(&reports).1);
    }

    #[test]
    fn one_device_moves_three_agreeing_ones_one_level_at_most(
        agreed in 1u32..=7,
        extra in proptest::collection::vec((0u32..9, 1u32..=7, -(10 * MINUTE)..MINUTE), 1..40),
        trust in 0.0f64..1e6,
    ) {
        // Three devices agree; a fourth sends anything, as often as it likes,
        // with the highest trust the estimator allows. (The three reported a
        // sixth of a half-life ago: a much fresher report may outweigh
        // much older ones, which is what the half-life is for.)
        let mut reports: Vec<StoredReport> = (1..=3)
            .map(|d| {
                let mut r = report(&format!("a{d}"), d, d as u32, Level::Empty, NOW - MINUTE / 4);
                r.level = agreed;
                r
            })
            .collect();
        for (i, (car, lvl, offset)) in extra.into_iter().enumerate() {
            let mut r = report(&format!("x{i}"), 99, car, Level::Empty, NOW + offset);
            r.level = lvl;
            reports.push(r);
        }
        // (The mean of cars stands while one device moves it by a level at
        // most: the level of a mean of three or four cars often hangs on
        // one rider, and falling back to the median whenever it did cost
        // a point of exact level.)
        let heavy = move |d: u64| if d == 99 { trust } else { MAX_TRUST };
        let est = estimate_with(&reports, &heavy).expect("an estimate");
        prop_assert!((est.level - agreed as i32).abs() <= 1, "{} vs {agreed}", est.level);
    }

    #[test]
    fn newcomers_move_agreeing_established_riders_one_level_at_most(
        agreed in 1u32..=7,
        lie in 1u32..=7,
        honest in 3u64..8,
        swarm in 0u64..200,
    ) {
        let mut reports: Vec<StoredReport> = (0..honest)
            .map(|d| {
                let mut r = report(&format!("h{d}"), d, 1, Level::Empty, NOW - MINUTE);
                r.level = agreed;
                r
            })
            .collect();
        for d in 0..swarm {
            let mut r = report(&format!("s{d}"), 1000 + d, 1 + (d % 8) as u32, Level::Empty, NOW);
            r.level = lie;
            reports.push(r);
        }
        // However many, and spread over every car, fresh devices move the
        // level by one at most: the quality bar's swarm rule.
        let trust = Standing((0..honest).collect());
        let est = estimate_with(&reports, &trust).expect("an estimate");
        prop_assert!((est.level - agreed as i32).abs() <= 1, "{} vs {agreed}", est.level);
    }

    #[test]
    fn extreme_inputs_never_panic_or_produce_nan(
        observed in any::<i64>(),
        now in any::<i64>(),
        half_life in any::<i64>(),
        window in any::<i64>(),
        pct in proptest::option::of(any::<u32>()),
        trust in any::<f64>(),
        lat in any::<f64>(),
    ) {
        let params = Params {
            half_life_ms: half_life,
            window_ms: window,
            ..Params::default()
        };
        let mut r = report("x", 1, 3, Level::Full, observed);
        r.occupancy_percentage = pct;
        r.position = Some(Position { latitude: lat, longitude: 0.0, accuracy_m: f32::NAN });
        let mut state = TrainState::default();
        apply(&mut state, &r, &params);
        prune(&mut state, now, &params);
        if let Some(est) = estimate(&state, now, &params, &move |_| trust) {
            prop_assert!(est.confidence.is_finite());
            prop_assert!((0.0..=1.0).contains(&est.confidence));
            prop_assert!(est.occupancy_percentage <= MAX_PERCENTAGE);
            prop_assert_eq!(est.reporters, 1);
            for car in &est.cars {
                prop_assert!((0.0..=1.0).contains(&car.confidence));
            }
        }
    }
}

/// Three riders (devices 1 to 3, cars 1 to 3) who found the train empty
/// three minutes ago.
fn empty_three_minutes_ago() -> Vec<StoredReport> {
    (1..=3)
        .map(|d| {
            report(
                &format!("e{d}"),
                d,
                d as u32,
                Level::Empty,
                NOW - 3 * MINUTE,
            )
        })
        .collect()
}

#[test]
fn reports_from_before_the_latest_stop_count_little() {
    // Three riders found the train empty three minutes ago; since then it
    // called at a stop, where one rider found it crushed.
    let mut reports = empty_three_minutes_ago();
    let mut at_stop = report("s", 9, 1, Level::Crushed, NOW - MINUTE);
    at_stop.stop_id = "S2".into();
    reports.push(at_stop.clone());
    let (state, est) = run(&reports);
    assert_eq!(state.stops_seen.len(), 1);
    assert_eq!(level(&est.expect("an estimate")), Level::Crushed);
    // Without the stop, the three older reports outweigh the newer one.
    reports.pop();
    at_stop.stop_id.clear();
    reports.push(at_stop.clone());
    assert_eq!(level(&run(&reports).1.expect("an estimate")), Level::Empty);
    // A stop sighting that arrived late (a skewed clock) splits nothing.
    reports.pop();
    at_stop.stop_id = "S2".into();
    at_stop.received_at_ms = at_stop.observed_at_ms + 10 * MINUTE;
    reports.push(at_stop);
    assert!(run(&reports).0.stops_seen.is_empty());
}

#[test]
fn stops_seen_keep_the_earliest_sighting_whatever_the_order() {
    let mut a = report("a", 1, 1, Level::FewSeats, NOW - 2 * MINUTE);
    a.stop_id = "S1".into();
    let mut b = report("b", 2, 2, Level::FewSeats, NOW - MINUTE);
    b.stop_id = "S1".into();
    let mut c = report("c", 3, 3, Level::Crushed, NOW - MINUTE / 2);
    c.stop_id = "S2".into();
    let forward = run(&[a.clone(), b.clone(), c.clone()]);
    let backward = run(&[c, b, a]);
    assert_eq!(forward.0.stops_seen, backward.0.stops_seen);
    assert_eq!(forward.1, backward.1);
    let first = forward
        .0
        .stops_seen
        .iter()
        .find(|s| s.stop == stop_hash("S1"))
        .expect("S1 seen");
    assert_eq!(first.first_seen_ms, NOW - 2 * MINUTE);
}

#[test]
fn newcomers_naming_a_stop_cannot_silence_the_established_riders() {
    // Four established riders found the train with many seats two minutes
    // ago. Two fresh devices then claim it is full "at" a stop: were the
    // stop to split every report, the earlier ones would keep only
    // PAST_STOP_FACTOR of their weight, already aged, and the newcomers'
    // cap would be measured against almost nothing.
    let mut reports = four_riders_with_many_seats(NOW - 2 * MINUTE);
    for d in 100..102u64 {
        let mut r = report(&format!("s{d}"), d, 5 + d as u32 % 2, Level::Full, NOW);
        r.stop_id = "FAKE".into();
        reports.push(r);
    }
    let trust = Standing((0..4).collect());
    let est = estimate_with(&reports, &trust).expect("an estimate");
    assert_eq!(level(&est), Level::ManySeats);
    // Had the stop split everyone's reports, it would have handed them the
    // train.
    assert_eq!(
        level(&estimate_with(&reports, &UniformTrust).expect("an estimate")),
        Level::Full
    );
}

/// Three riders (1 to 3) found the train empty three minutes ago; one
/// minute ago, `witnesses` found it crushed at a stop.
fn empty_then_crushed_at_a_stop(witnesses: &[u64], trust: &impl Trust) -> Level {
    let mut reports = empty_three_minutes_ago();
    for w in witnesses {
        let mut at_stop = report(&format!("s{w}"), *w, 4, Level::Crushed, NOW - MINUTE);
        at_stop.stop_id = "S2".into();
        reports.push(at_stop);
    }
    level(&estimate_with(&reports, trust).expect("an estimate"))
}

#[test]
fn a_stop_seen_only_by_newcomers_splits_only_newcomers_reports() {
    let riders: std::collections::BTreeSet<u64> = (1..=3).collect();
    let with_nine = riders.iter().copied().chain([9]).collect();
    // A newcomer at the stop: the established riders' older reports keep
    // their weight.
    assert_eq!(
        empty_then_crushed_at_a_stop(&[9], &Standing(riders)),
        Level::Empty
    );
    // The same rider with standing: the stop splits the reports.
    assert_eq!(
        empty_then_crushed_at_a_stop(&[9], &Standing(with_nine)),
        Level::Crushed
    );
    // Nobody has standing yet: the newcomer's sighting splits the other
    // newcomers' reports.
    let nobody = Standing(std::collections::BTreeSet::new());
    assert_eq!(empty_then_crushed_at_a_stop(&[9], &nobody), Level::Crushed);
}
