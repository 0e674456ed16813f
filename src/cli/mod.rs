//! The command line: argument types, rendering, progress drawing.

pub mod inspect;
pub mod progress;
pub mod render;
