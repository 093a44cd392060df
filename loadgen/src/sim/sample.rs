//! The built-in sample network: one suburban line through a city hub.
//!
//! Line "B" runs from the south-western suburbs of Paris through its central
//! hub (Châtelet-Les Halles) to the airport in the north-east, 12 stations,
//! 8-car trains. Suburban stations are mostly homes, the central stations
//! mostly jobs, so in the morning rush loads build up towards the hub and
//! drop there, and the evening is the mirror image. Suburban platforms have
//! their entrance at the Paris end, so the cars at that end fill first.

use chrono::{NaiveTime, TimeDelta};

use super::network::{Headway, Line, Network, Station, Stop};

/// (id, name, lat, lon, homes/min, jobs/min, entrance, minute from the first stop)
type Row = (&'static str, &'static str, f64, f64, f64, f64, f64, f64);

#[rustfmt::skip]
const STATIONS: [Row; 12] = [
    ("SRC", "Saint-Rémy-lès-Chevreuse", 48.7054, 2.0714, 60.0, 3.0, 0.9, 0.0),
    ("ORS", "Orsay-Ville", 48.6978, 2.1873, 75.0, 12.0, 0.8, 9.0),
    ("MAS", "Massy-Palaiseau", 48.7258, 2.2577, 125.0, 20.0, 0.8, 16.0),
    ("ANT", "Antony", 48.7545, 2.3011, 125.0, 10.0, 0.9, 21.0),
    ("BLR", "Bourg-la-Reine", 48.7800, 2.3167, 110.0, 8.0, 0.8, 25.0),
    ("DEN", "Denfert-Rochereau", 48.8337, 2.3325, 20.0, 70.0, 0.5, 32.0),
    ("CHL", "Châtelet-Les Halles", 48.8618, 2.3469, 25.0, 260.0, 0.3, 38.0),
    ("GDN", "Gare du Nord", 48.8809, 2.3553, 20.0, 140.0, 0.5, 42.0),
    ("LPS", "La Plaine-Stade de France", 48.9180, 2.3620, 15.0, 70.0, 0.2, 46.0),
    ("LBG", "Le Bourget", 48.9310, 2.4260, 90.0, 12.0, 0.2, 51.0),
    ("AUL", "Aulnay-sous-Bois", 48.9383, 2.4940, 120.0, 10.0, 0.1, 56.0),
    ("CDG", "Aéroport Charles de Gaulle 1", 49.0040, 2.5710, 20.0, 45.0, 0.5, 65.0),
];

/// The hub of the sample line, where the morning rush peaks.
pub const SAMPLE_HUB: &str = "CHL";

impl Network {
    /// The built-in sample network (line "B"), used when no network file is given.
    pub fn sample() -> Network {
        let hm = |h: u32, m: u32| NaiveTime::from_hms_opt(h, m, 0).expect("valid time");
        let stations = STATIONS
            .iter()
            .map(|&(id, name, lat, lon, homes, jobs, entrance, _)| Station {
                id: id.into(),
                name: name.into(),
                lat,
                lon,
                homes,
                jobs,
                entrance,
            })
            .collect();
        let stops = STATIONS
            .iter()
            .enumerate()
            .map(|(station, row)| Stop {
                station,
                minute: row.7,
            })
            .collect();
        let headway = |h, m, minutes| Headway {
            from: hm(h, m),
            minutes,
        };
        Network {
            lines: vec![Line {
                id: "B".into(),
                name: "Line B".into(),
                cars: 8,
                car_capacity: 200,
                crush_percentage: 160,
                stations,
                stops,
                dwell: TimeDelta::seconds(40),
                first_departure: hm(5, 0),
                last_departure: hm(23, 30),
                headways: vec![
                    headway(5, 0, 10),
                    headway(6, 30, 6),
                    headway(7, 0, 4),
                    headway(9, 30, 6),
                    headway(10, 0, 8),
                    headway(16, 30, 5),
                    headway(19, 30, 8),
                    headway(21, 0, 15),
                ],
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_a_hub_inside_the_line_and_increasing_times() {
        let net = Network::sample();
        let line = &net.lines[0];
        let hub = line
            .stations
            .iter()
            .position(|s| s.id == SAMPLE_HUB)
            .unwrap();
        assert!(hub > 0 && hub + 1 < line.stations.len());
        assert!(line.stops.windows(2).all(|w| w[0].minute < w[1].minute));
        assert!(line.headways.windows(2).all(|w| w[0].from < w[1].from));
    }
}
