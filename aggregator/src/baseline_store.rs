//! Where route baselines live, and how each estimate is told against them.
//!
//! A route's baseline is the hash `crowd:baseline:<route>` (field: hour of
//! the week, value: an encoded `BaselineCell`), shared by every aggregator
//! because a route's trains are spread over all partitions. It is soft
//! state: read when a route is first needed, updated in memory, and its
//! changed cells written back every [`FLUSH_INTERVAL`]; the route is then
//! read again on next use, so each aggregator picks up the others' samples.
//! Two aggregators recording into the same route and hour within one flush
//! interval keep only one of their updates of that cell: a few samples of a
//! moving average, which the next ones make up for.
//!
//! Each train remembers the comparison it showed last (hysteresis) and the
//! hour of the week it was last recorded in, so a train counts once per
//! hour however often it is reported on ([`TrainMemo`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crowd_proto::connection::Connection;
use crowd_proto::layout;
use crowd_proto::pb::store::BaselineCell;
use crowd_proto::pb::v1::{OccupancyEstimate, UsualComparison};
use prost::Message;

use crate::baseline::{Comparison, MIN_CONFIDENCE, MIN_SAMPLES, RouteBaseline, hour_of_week};

/// How often changed cells are written back (and routes re-read).
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// What a train remembers between its estimates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TrainMemo {
    /// The comparison published last, for hysteresis.
    shown: Option<Comparison>,
    /// The hour of the week this train was last recorded in.
    recorded_hour: Option<u32>,
}

/// The baselines of the routes this aggregator publishes.
#[derive(Debug)]
pub(crate) struct Baselines {
    routes: HashMap<String, RouteBaseline>,
    /// (route, hour of the week) cells changed since the last flush.
    dirty: BTreeSet<(String, u32)>,
    utc_offset_secs: i32,
}

impl Baselines {
    /// Hours of the week are taken in local time, `utc_offset_secs` ahead of UTC.
    pub(crate) fn new(utc_offset_secs: i32) -> Baselines {
        Baselines {
            routes: HashMap::new(),
            dirty: BTreeSet::new(),
            utc_offset_secs,
        }
    }

    /// Reads the routes not in memory. A route that cannot be read stays
    /// unknown (its estimates say nothing about the usual, and nothing is
    /// recorded for it, so that an empty baseline never overwrites a real one).
    pub(crate) async fn load<'a>(
        &mut self,
        con: &mut Connection,
        routes: impl IntoIterator<Item = &'a str>,
    ) -> redis::RedisResult<()> {
        let missing: BTreeSet<&str> = routes
            .into_iter()
            .filter(|r| !r.is_empty() && !self.routes.contains_key(*r))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for route in &missing {
            pipe.cmd("HGETALL").arg(layout::baseline(route));
        }
        let stored: Vec<HashMap<u32, Vec<u8>>> = pipe.query_async(con).await?;
        for (route, cells) in missing.into_iter().zip(stored) {
            self.routes
                .insert(route.to_owned(), decode_route(route, cells));
        }
        Ok(())
    }

    /// How `estimate` compares with the usual for its route now, recording
    /// it into the baseline when it is the train's first confident estimate
    /// of this hour of the week.
    pub(crate) fn judge(
        &mut self,
        estimate: &OccupancyEstimate,
        now_ms: i64,
        memo: &mut TrainMemo,
    ) -> UsualComparison {
        let Some(route_id) = estimate.trip.as_ref().map(|t| t.route_id.as_str()) else {
            return UsualComparison::Unspecified;
        };
        let Some(baseline) = self.routes.get_mut(route_id) else {
            return UsualComparison::Unspecified;
        };
        let hour = hour_of_week(now_ms, self.utc_offset_secs);
        let percentage = f64::from(estimate.occupancy_percentage);
        let known = baseline
            .cell(hour)
            .is_some_and(|c| c.samples >= MIN_SAMPLES);
        let comparison = known.then(|| baseline.compare(hour, percentage, memo.shown));
        memo.shown = comparison;
        if estimate.confidence >= MIN_CONFIDENCE && memo.recorded_hour != Some(hour) {
            baseline.record(hour, percentage);
            memo.recorded_hour = Some(hour);
            self.dirty.insert((route_id.to_owned(), hour));
        }
        match comparison {
            None => UsualComparison::Unspecified,
            Some(Comparison::Usual) => UsualComparison::Usual,
            Some(Comparison::Busier) => UsualComparison::Busier,
            Some(Comparison::Quieter) => UsualComparison::Quieter,
        }
    }

    /// Writes the changed cells back and forgets their routes, so they are
    /// read again (with the other aggregators' samples) on next use.
    pub(crate) async fn flush(&mut self, con: &mut Connection) -> redis::RedisResult<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let dirty = std::mem::take(&mut self.dirty);
        let mut pipe = redis::pipe();
        for (route, hour) in &dirty {
            if let Some(cell) = self.routes.get(route).and_then(|b| b.cell(*hour)) {
                pipe.cmd("HSET")
                    .arg(layout::baseline(route))
                    .arg(*hour)
                    .arg(cell.to_stored(*hour).encode_to_vec())
                    .ignore();
            }
        }
        let written: redis::RedisResult<()> = pipe.query_async(con).await;
        for (route, _) in &dirty {
            self.routes.remove(route);
        }
        written
    }
}

/// A route's baseline from its hash; undecodable or out-of-range cells are
/// dropped (relearnt rather than trusted).
fn decode_route(route: &str, cells: HashMap<u32, Vec<u8>>) -> RouteBaseline {
    RouteBaseline::from_stored(crowd_proto::pb::store::RouteBaseline {
        route_id: route.to_owned(),
        cells: cells
            .into_iter()
            .filter_map(|(hour, bytes)| {
                let cell = BaselineCell::decode(bytes.as_slice()).ok()?;
                (cell.hour_of_week == hour).then_some(cell)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Cell;
    use crowd_proto::pb::v1::TripRef;

    fn estimate(route: &str, pct: u32, confidence: f32) -> OccupancyEstimate {
        OccupancyEstimate {
            trip: Some(TripRef {
                trip_id: "T".into(),
                start_date: "20261126".into(),
                route_id: route.into(),
            }),
            occupancy_percentage: pct,
            confidence,
            ..Default::default()
        }
    }

    const HOUR_MS: i64 = 3_600_000;

    fn with_route(route: &str) -> Baselines {
        let mut b = Baselines::new(0);
        b.routes.insert(route.into(), RouteBaseline::new(route));
        b
    }

    #[test]
    fn an_unknown_route_or_a_young_cell_says_nothing() {
        let mut b = Baselines::new(0);
        let mut memo = TrainMemo::default();
        assert_eq!(
            b.judge(&estimate("B", 50, 0.9), 0, &mut memo),
            UsualComparison::Unspecified
        );
        let mut b = with_route("B");
        assert_eq!(
            b.judge(&estimate("B", 50, 0.9), 0, &mut memo),
            UsualComparison::Unspecified
        );
        assert_eq!(b.dirty.len(), 1, "recorded all the same");
    }

    #[test]
    fn each_train_records_once_per_hour_and_a_crush_reads_busier() {
        let mut b = with_route("B");
        // Five trains at 40 % in the same hour make the usual.
        for _ in 0..5 {
            let mut memo = TrainMemo::default();
            for _ in 0..3 {
                b.judge(&estimate("B", 40, 0.9), 10 * HOUR_MS, &mut memo);
            }
        }
        let hour = hour_of_week(10 * HOUR_MS, 0);
        assert_eq!(b.routes["B"].cell(hour).unwrap().samples, 5);
        let mut memo = TrainMemo::default();
        assert_eq!(
            b.judge(&estimate("B", 90, 0.9), 10 * HOUR_MS, &mut memo),
            UsualComparison::Busier
        );
        let mut memo = TrainMemo::default();
        assert_eq!(
            b.judge(&estimate("B", 42, 0.3), 10 * HOUR_MS, &mut memo),
            UsualComparison::Usual
        );
        assert_eq!(
            b.routes["B"].cell(hour).unwrap().samples,
            6,
            "an unconfident estimate is not recorded"
        );
    }

    #[test]
    fn cells_round_trip_and_bad_ones_are_dropped() {
        let mut cell = Cell::default();
        cell.record(30.0);
        cell.record(50.0);
        let cells = HashMap::from([
            (7, cell.to_stored(7).encode_to_vec()),
            (8, cell.to_stored(9).encode_to_vec()),
            (9, vec![0xff, 0xff]),
            (500, cell.to_stored(500).encode_to_vec()),
        ]);
        let route = decode_route("B", cells);
        assert_eq!(route.cell(7), Some(&cell));
        assert_eq!(route.cell(8), None);
        assert_eq!(route.cell(9), None);
    }
}
