//! The open-loop load driver.
