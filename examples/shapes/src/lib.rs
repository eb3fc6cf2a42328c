//! A tiny geometry crate: the bundled example workspace for `pt`.
//! It has one deliberate compile error (in `report.rs`) for `pt run fix` to repair.

pub mod geometry;
pub mod report;

pub use geometry::{Circle, Rect, Shape};
