//! Crowding levels and their relation to occupancy percentages.
//!
//! The seven levels are GTFS-Realtime's `OccupancyStatus` (EMPTY ..
//! NOT_ACCEPTING_PASSENGERS); the wire enum adds one because proto3 needs an
//! UNSPECIFIED zero. Percentages follow GTFS-RT `occupancy_percentage`:
//! 100 means the vehicle's nominal capacity, and crush loads go above it.

use crate::pb::v1::CrowdingLevel;

/// A crowding level, ordered from empty to not accepting passengers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    Empty = 1,
    ManySeats = 2,
    FewSeats = 3,
    StandingRoom = 4,
    Crushed = 5,
    Full = 6,
    NotAccepting = 7,
}

impl Level {
    /// All levels, emptiest first.
    pub const ALL: [Level; 7] = [
        Level::Empty,
        Level::ManySeats,
        Level::FewSeats,
        Level::StandingRoom,
        Level::Crushed,
        Level::Full,
        Level::NotAccepting,
    ];

    /// From the wire number (1..=7); `None` for UNSPECIFIED or unknown.
    pub fn from_number(n: i32) -> Option<Level> {
        match n {
            1..=7 => Some(Level::ALL[(n - 1) as usize]),
            _ => None,
        }
    }

    /// The wire number, 1..=7.
    pub fn number(self) -> i32 {
        self as i32
    }

    /// GTFS-RT `OccupancyStatus` value (0..=6).
    pub fn gtfs_rt_status(self) -> i32 {
        self as i32 - 1
    }

    /// The generated enum.
    pub fn to_pb(self) -> CrowdingLevel {
        CrowdingLevel::try_from(self.number()).unwrap_or(CrowdingLevel::Unspecified)
    }

    /// Steps between two levels (always >= 0).
    pub fn distance(self, other: Level) -> u8 {
        (self as u8).abs_diff(other as u8)
    }

    /// A short human label, for logs, tables and pages.
    pub fn label(self) -> &'static str {
        match self {
            Level::Empty => "empty",
            Level::ManySeats => "many seats",
            Level::FewSeats => "few seats",
            Level::StandingRoom => "standing",
            Level::Crushed => "crushed",
            Level::Full => "full",
            Level::NotAccepting => "not boarding",
        }
    }

    /// The typical occupancy percentage of this level: the middle of its band.
    pub fn typical_percentage(self) -> u32 {
        match self {
            Level::Empty => 5,
            Level::ManySeats => 25,
            Level::FewSeats => 55,
            Level::StandingRoom => 85,
            Level::Crushed => 115,
            Level::Full => 140,
            Level::NotAccepting => 160,
        }
    }

    /// The level whose band contains `percentage`.
    ///
    /// Bands: [0,10) empty, [10,40) many seats, [40,70) few seats,
    /// [70,100) standing, [100,130) crushed, [130,150) full, 150+ not boarding.
    pub fn from_percentage(percentage: u32) -> Level {
        match percentage {
            0..10 => Level::Empty,
            10..40 => Level::ManySeats,
            40..70 => Level::FewSeats,
            70..100 => Level::StandingRoom,
            100..130 => Level::Crushed,
            130..150 => Level::Full,
            _ => Level::NotAccepting,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip_and_reject_unspecified() {
        for level in Level::ALL {
            assert_eq!(Level::from_number(level.number()), Some(level));
            assert_eq!(level.to_pb() as i32, level.number());
        }
        assert_eq!(Level::from_number(0), None);
        assert_eq!(Level::from_number(8), None);
        assert_eq!(Level::from_number(-1), None);
    }

    #[test]
    fn typical_percentage_falls_in_its_own_band() {
        for level in Level::ALL {
            assert_eq!(Level::from_percentage(level.typical_percentage()), level);
        }
    }

    #[test]
    fn gtfs_rt_status_is_one_less() {
        assert_eq!(Level::Empty.gtfs_rt_status(), 0);
        assert_eq!(Level::NotAccepting.gtfs_rt_status(), 6);
    }
}
