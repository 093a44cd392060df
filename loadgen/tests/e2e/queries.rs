//! queries tests.
