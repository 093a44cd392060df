//! In-process stacks.
