//! How a train's state is stored in Redis (`crowd:{k}:state:<trip>`).
//!
//! In memory the estimator works on [`TrainState`], one message per
//! observation and per fix. Stored that way, every observation carries its
//! field tags and a 9-byte device and a 6-byte time, and the state of a
//! busy train (rewritten on every batch that touches it) runs to several
//! kilobytes. [`encode`] writes the same fields as a [`PackedTrainState`]:
//! columns of packed numbers, times as differences from the previous one,
//! level and car in one small number, discounts only where there are any.
//! That takes about 13 bytes an observation instead of 23 to 29.
//!
//! Everything round-trips exactly except the fixes' coordinates, which are
//! kept to 1e-4 degree: the precision reports are stored with, so a fix
//! taken from a stored report round-trips exactly too. [`decode`] also
//! reads a state written in the older one-message-each layout.

use prost::Message;

use crowd_proto::pb::store::{Fix, Observation, PackedTrainState, StopSeen, TrainState};

/// [`PackedTrainState::layout`] of this layout.
const PACKED_LAYOUT: u32 = 2;
/// Fix coordinates are kept in units of 1e-4 degree.
const COORDINATE_UNITS: f64 = 1e4;
/// Levels take the low 3 bits of `observation_car_level` (levels are 1..=7).
const LEVEL_BITS: u32 = 3;

/// The stored bytes of `state`.
///
/// An observation whose level does not fit the layout (levels are 1..=7;
/// the estimator keeps no other) is left out.
pub fn encode(state: &TrainState) -> Vec<u8> {
    let mut packed = PackedTrainState {
        trip_id: state.trip_id.clone(),
        start_date: state.start_date.clone(),
        route_id: state.route_id.clone(),
        last_position: state.last_position,
        last_position_at_ms: state.last_position_at_ms,
        reports_counted: state.reports_counted,
        layout: PACKED_LAYOUT,
        recent_report_ids: state.recent_report_ids.clone(),
        shown: state.shown,
        ..PackedTrainState::default()
    };
    let n = state.observations.len();
    packed.observation_device.reserve(n);
    packed.observation_time_delta_ms.reserve(n);
    packed.observation_car_level.reserve(n);
    packed.observation_percentage.reserve(n);
    let mut previous_ms = 0i64;
    for o in &state.observations {
        let Some(car_level) = car_level(o.carriage_sequence, o.level) else {
            continue;
        };
        if o.discount != 0.0 {
            packed
                .discounted
                .push(packed.observation_device.len() as u32);
            packed.discount.push(o.discount);
        }
        packed.observation_device.push(o.device);
        packed
            .observation_time_delta_ms
            .push(o.observed_at_ms.wrapping_sub(previous_ms));
        previous_ms = o.observed_at_ms;
        packed.observation_car_level.push(car_level);
        packed
            .observation_percentage
            .push(o.occupancy_percentage.map_or(0, |p| p.saturating_add(1)));
    }

    let mut previous_ms = 0i64;
    for seen in &state.stops_seen {
        packed.stop_seen.push(seen.stop);
        packed
            .stop_seen_time_delta_ms
            .push(seen.first_seen_ms.wrapping_sub(previous_ms));
        previous_ms = seen.first_seen_ms;
        packed
            .stop_witness_count
            .push(u32::try_from(seen.witnesses.len()).unwrap_or(u32::MAX));
        packed.stop_witness.extend_from_slice(&seen.witnesses);
    }

    let (mut previous_ms, mut previous_lat, mut previous_lon) = (0i64, 0i64, 0i64);
    for fix in &state.recent_fixes {
        let (lat, lon) = (units(fix.latitude), units(fix.longitude));
        packed.fix_device.push(fix.device);
        packed
            .fix_time_delta_ms
            .push(fix.observed_at_ms.wrapping_sub(previous_ms));
        packed
            .fix_latitude_delta
            .push(lat.wrapping_sub(previous_lat));
        packed
            .fix_longitude_delta
            .push(lon.wrapping_sub(previous_lon));
        (previous_ms, previous_lat, previous_lon) = (fix.observed_at_ms, lat, lon);
    }
    packed.encode_to_vec()
}

/// The state stored as `bytes`, in either layout.
///
/// Columns of unequal length (a corrupt value) are read as far as all of
/// them go.
pub fn decode(bytes: &[u8]) -> Result<TrainState, prost::DecodeError> {
    let packed = PackedTrainState::decode(bytes)?;
    if packed.layout != PACKED_LAYOUT {
        return TrainState::decode(bytes);
    }

    let mut observations = Vec::with_capacity(packed.observation_device.len());
    let mut observed_at_ms = 0i64;
    for (((device, delta), car_level), percentage) in packed
        .observation_device
        .iter()
        .zip(&packed.observation_time_delta_ms)
        .zip(&packed.observation_car_level)
        .zip(&packed.observation_percentage)
    {
        observed_at_ms = observed_at_ms.wrapping_add(*delta);
        observations.push(Observation {
            device: *device,
            carriage_sequence: car_level >> LEVEL_BITS,
            level: car_level & ((1 << LEVEL_BITS) - 1),
            occupancy_percentage: percentage.checked_sub(1),
            observed_at_ms,
            discount: 0.0,
        });
    }
    for (at, discount) in packed.discounted.iter().zip(&packed.discount) {
        if let Some(o) = observations.get_mut(*at as usize) {
            o.discount = *discount;
        }
    }

    let mut recent_fixes = Vec::with_capacity(packed.fix_device.len());
    let (mut observed_at_ms, mut lat, mut lon) = (0i64, 0i64, 0i64);
    for (((device, delta), lat_delta), lon_delta) in packed
        .fix_device
        .iter()
        .zip(&packed.fix_time_delta_ms)
        .zip(&packed.fix_latitude_delta)
        .zip(&packed.fix_longitude_delta)
    {
        observed_at_ms = observed_at_ms.wrapping_add(*delta);
        lat = lat.wrapping_add(*lat_delta);
        lon = lon.wrapping_add(*lon_delta);
        recent_fixes.push(Fix {
            device: *device,
            latitude: lat as f64 / COORDINATE_UNITS,
            longitude: lon as f64 / COORDINATE_UNITS,
            observed_at_ms,
        });
    }

    let mut stops_seen = Vec::with_capacity(packed.stop_seen.len());
    let mut first_seen_ms = 0i64;
    let mut witnesses = packed.stop_witness.as_slice();
    for (i, (stop, delta)) in packed
        .stop_seen
        .iter()
        .zip(&packed.stop_seen_time_delta_ms)
        .enumerate()
    {
        first_seen_ms = first_seen_ms.wrapping_add(*delta);
        let count = packed.stop_witness_count.get(i).copied().unwrap_or(0) as usize;
        let (these, rest) = witnesses.split_at(count.min(witnesses.len()));
        witnesses = rest;
        stops_seen.push(StopSeen {
            stop: *stop,
            first_seen_ms,
            witnesses: these.to_vec(),
        });
    }

    Ok(TrainState {
        trip_id: packed.trip_id,
        start_date: packed.start_date,
        route_id: packed.route_id,
        observations,
        recent_report_ids: packed.recent_report_ids,
        last_position: packed.last_position,
        last_position_at_ms: packed.last_position_at_ms,
        reports_counted: packed.reports_counted,
        recent_fixes,
        stops_seen,
        shown: packed.shown,
    })
}

/// `carriage_sequence` and `level` in one number, if the level fits.
fn car_level(carriage_sequence: u32, level: u32) -> Option<u32> {
    let fits = level < (1 << LEVEL_BITS) && carriage_sequence < (u32::MAX >> LEVEL_BITS);
    fits.then_some((carriage_sequence << LEVEL_BITS) | level)
}

/// A coordinate in units of 1e-4 degree (0 for what is not a number).
fn units(degrees: f64) -> i64 {
    // `as` saturates, and maps NaN to 0.
    (degrees * COORDINATE_UNITS).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::store::{Position, Shown};
    use proptest::prelude::*;

    fn observation(device: u64, car: u32, level: u32, at: i64) -> Observation {
        Observation {
            device,
            carriage_sequence: car,
            level,
            occupancy_percentage: None,
            observed_at_ms: at,
            discount: 0.0,
        }
    }

    /// A busy train: `n` riders on 8 cars over the last 15 minutes, a few
    /// with a percentage or a discount, 16 fixes, 128 report ids.
    fn busy(n: u64) -> TrainState {
        let now = 1_795_000_000_000i64;
        TrainState {
            trip_id: "RER-A-0712".into(),
            start_date: "20261126".into(),
            route_id: "A".into(),
            observations: (0..n)
                .map(|i| {
                    let mut o = observation(
                        i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                        (i % 8) as u32 + 1,
                        (i % 7) as u32 + 1,
                        now - (i as i64 * 7_919) % 900_000,
                    );
                    if i % 3 == 0 {
                        o.occupancy_percentage = Some(40 + (i % 60) as u32);
                    }
                    if i % 10 == 0 {
                        o.discount = 0.9;
                    }
                    o
                })
                .collect(),
            recent_report_ids: (0..128).map(|i: u64| i.wrapping_mul(0xff51_afd7)).collect(),
            last_position: Some(Position {
                latitude: 48.8566,
                longitude: 2.3522,
                accuracy_m: 12.0,
            }),
            last_position_at_ms: now,
            reports_counted: 12_345,
            recent_fixes: (0..16)
                .map(|i| Fix {
                    device: i * 31,
                    latitude: 48.8566 + f64::from(i as u32) * 1e-3,
                    longitude: 2.3522 - f64::from(i as u32) * 2e-4,
                    observed_at_ms: now - i as i64 * 3_000,
                })
                .collect(),
            stops_seen: (0..4)
                .map(|i: u32| StopSeen {
                    stop: i.wrapping_mul(0x9e37_79b9),
                    first_seen_ms: now - i64::from(i) * 150_000,
                    witnesses: (0..u64::from(i % 3)).map(|w| w * 7 + 1).collect(),
                })
                .collect(),
            shown: Some(Shown {
                level: 4,
                holding_since_ms: now - 5_000,
            }),
        }
    }

    fn assert_same(decoded: &TrainState, state: &TrainState) {
        let mut expected = state.clone();
        for fix in &mut expected.recent_fixes {
            fix.latitude = units(fix.latitude) as f64 / COORDINATE_UNITS;
            fix.longitude = units(fix.longitude) as f64 / COORDINATE_UNITS;
        }
        assert_eq!(decoded, &expected);
    }

    #[test]
    fn a_busy_train_round_trips_with_observations_in_13_bytes_each() {
        let state = busy(200);
        let packed = encode(&state);
        assert_same(&decode(&packed).expect("decodes"), &state);

        let without_observations = TrainState {
            observations: Vec::new(),
            ..state.clone()
        };
        let per_observation = |bytes: usize, none: usize| (bytes - none) as f64 / 200.0;
        let packed_each = per_observation(packed.len(), encode(&without_observations).len());
        let plain_each = per_observation(
            state.encode_to_vec().len(),
            without_observations.encode_to_vec().len(),
        );
        // The 8-byte device is most of it.
        assert!(
            packed_each <= 13.0 && packed_each <= 0.6 * plain_each,
            "an observation takes {packed_each} B packed, {plain_each} B one message each"
        );
    }

    #[test]
    fn fixes_taken_from_stored_reports_round_trip_exactly() {
        let mut state = busy(3);
        for fix in &mut state.recent_fixes {
            fix.latitude = (fix.latitude * 1e4).round() / 1e4;
            fix.longitude = (fix.longitude * 1e4).round() / 1e4;
        }
        assert_eq!(decode(&encode(&state)).expect("decodes"), state);
    }

    #[test]
    fn a_state_in_the_older_layout_still_decodes() {
        let state = busy(40);
        assert_eq!(
            decode(&state.encode_to_vec()).expect("decodes"),
            state,
            "one message each"
        );
        assert_eq!(
            decode(&TrainState::default().encode_to_vec()).expect("decodes"),
            TrainState::default()
        );
    }

    #[test]
    fn an_observation_whose_level_does_not_fit_is_left_out() {
        let mut state = busy(2);
        state.observations[0].level = 9;
        let decoded = decode(&encode(&state)).expect("decodes");
        assert_eq!(decoded.observations, state.observations[1..]);
    }

    #[test]
    fn columns_of_unequal_length_decode_as_far_as_they_all_go() {
        let mut packed = PackedTrainState::decode(encode(&busy(5)).as_slice()).expect("decodes");
        packed.observation_percentage.truncate(3);
        packed.discounted.push(40);
        packed.discount.push(0.5);
        let decoded = decode(&packed.encode_to_vec()).expect("decodes");
        assert_eq!(decoded.observations.len(), 3);
    }

    proptest! {
        #[test]
        fn any_observations_round_trip(
            rows in proptest::collection::vec(
                (any::<u64>(), 0u32..64, 1u32..=7, proptest::option::of(any::<u32>()), any::<i64>(), 0f32..=1.0),
                0..40,
            ),
        ) {
            let state = TrainState {
                observations: rows
                    .into_iter()
                    .map(|(device, car, level, percentage, at, discount)| Observation {
                        device,
                        carriage_sequence: car,
                        level,
                        occupancy_percentage: percentage.map(|p| p.min(u32::MAX - 1)),
                        observed_at_ms: at,
                        discount,
                    })
                    .collect(),
                ..TrainState::default()
            };
            prop_assert_eq!(decode(&encode(&state)).expect("decodes"), state);
        }
    }
}
