//! A GTFS static feed of a simulated [`Network`]: the same routes, stations,
//! trip ids and times the simulator runs, so a server loaded with it
//! (`--gtfs`, even `--gtfs-strict`) knows every trip simulated riders report
//! on.
//!
//! The sample network's feed is committed as `loadgen/sample-gtfs/`
//! (`loadgen sample-gtfs --out DIR` writes it again; a test checks that the
//! committed files are what the export gives).

use std::fmt::Write as _;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};

use super::network::{Direction, Network};

/// First and last day of the single all-week service.
const SERVICE_START: &str = "20260101";
const SERVICE_END: &str = "20271231";
/// The service every trip runs on.
const SERVICE_ID: &str = "DAILY";

/// The feed's files, by name, in CSV as GTFS requires.
pub fn export(network: &Network) -> Vec<(&'static str, String)> {
    let mut agency = String::from("agency_id,agency_name,agency_url,agency_timezone,agency_lang\n");
    agency.push_str("CROWD,crowd sample network,https://example.org/crowd,Europe/Paris,fr\n");

    let mut routes =
        String::from("route_id,agency_id,route_short_name,route_long_name,route_type\n");
    let mut stops = String::from("stop_id,stop_name,stop_lat,stop_lon\n");
    let mut trips = String::from("route_id,service_id,trip_id,direction_id,shape_id\n");
    let mut stop_times =
        String::from("trip_id,arrival_time,departure_time,stop_id,stop_sequence\n");
    let mut shapes = String::from("shape_id,shape_pt_lat,shape_pt_lon,shape_pt_sequence\n");
    let calendar = format!(
        "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\n\
         {SERVICE_ID},1,1,1,1,1,1,1,{SERVICE_START},{SERVICE_END}\n"
    );
    // Times are relative to the service day; any date gives the same clock.
    let day = NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date");
    let midnight = day.and_hms_opt(0, 0, 0).expect("valid time");

    for line in &network.lines {
        let _ = writeln!(
            routes,
            "{},CROWD,{},{},2",
            csv(&line.id),
            csv(&line.id),
            csv(&line.name)
        );
        for station in &line.stations {
            let _ = writeln!(
                stops,
                "{},{},{:.4},{:.4}",
                csv(&station.id),
                csv(&station.name),
                station.lat,
                station.lon
            );
        }
        for direction in [Direction::Outbound, Direction::Inbound] {
            let shape_id = format!("{}-{}", line.id, direction.id());
            for (i, stop) in line.stops_in(direction).iter().enumerate() {
                let station = &line.stations[stop.station];
                let _ = writeln!(
                    shapes,
                    "{},{:.4},{:.4},{}",
                    csv(&shape_id),
                    station.lat,
                    station.lon,
                    i + 1
                );
            }
        }
        for departure in line.departures(day) {
            let shape_id = format!("{}-{}", line.id, departure.direction.id());
            let _ = writeln!(
                trips,
                "{},{SERVICE_ID},{},{},{}",
                csv(&line.id),
                csv(&departure.trip_id),
                departure.direction.id(),
                csv(&shape_id)
            );
            let calls = line.stops_in(departure.direction);
            let last = calls.len().saturating_sub(1);
            for (i, stop) in calls.iter().enumerate() {
                let arrival =
                    departure.at + TimeDelta::seconds((stop.minute * 60.0).round() as i64);
                let leaves = if i == last {
                    arrival
                } else {
                    arrival + line.dwell
                };
                let _ = writeln!(
                    stop_times,
                    "{},{},{},{},{}",
                    csv(&departure.trip_id),
                    gtfs_time(midnight, arrival),
                    gtfs_time(midnight, leaves),
                    csv(&line.stations[stop.station].id),
                    i + 1
                );
            }
        }
    }
    vec![
        ("agency.txt", agency),
        ("calendar.txt", calendar),
        ("routes.txt", routes),
        ("shapes.txt", shapes),
        ("stop_times.txt", stop_times),
        ("stops.txt", stops),
        ("trips.txt", trips),
    ]
}

/// Writes the feed's files into `dir` (created if needed).
pub fn write(network: &Network, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in export(network) {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// `HH:MM:SS` since the service day's midnight; past 24:00 for trips that
/// run after midnight, as GTFS wants.
fn gtfs_time(midnight: NaiveDateTime, t: NaiveDateTime) -> String {
    let secs = (t - midnight).num_seconds().max(0);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A CSV field, quoted when it needs to be.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_departure_is_a_trip_with_every_stop() {
        let network = Network::sample();
        let files = export(&network);
        let file = |name: &str| &files.iter().find(|(n, _)| *n == name).unwrap().1;
        let departures = network.lines[0].departures(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_eq!(file("trips.txt").lines().count(), departures.len() + 1);
        assert_eq!(
            file("stop_times.txt").lines().count(),
            departures.len() * 12 + 1
        );
        assert!(file("trips.txt").contains("\nB,DAILY,B-0-0700,0,B-0\n"));
        assert!(file("stop_times.txt").contains("\nB-0-0700,07:38:00,07:38:40,CHL,7\n"));
        assert_eq!(
            gtfs_time(
                NaiveDate::from_ymd_opt(2026, 1, 1)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap(),
                NaiveDate::from_ymd_opt(2026, 1, 2)
                    .unwrap()
                    .and_hms_opt(0, 35, 0)
                    .unwrap(),
            ),
            "24:35:00"
        );
        assert_eq!(csv("a,b"), "\"a,b\"");
    }

    #[test]
    fn the_committed_sample_feed_is_the_export_of_the_sample_network() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-gtfs");
        for (name, text) in export(&Network::sample()) {
            let committed = std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
            assert!(
                committed == text,
                "{name} differs from a fresh export; run `cargo run -p crowd-loadgen -- sample-gtfs --out loadgen/sample-gtfs`"
            );
        }
    }
}
