//! Where a finished image goes: an OCI layout, an archive, a registry, a
//! Docker engine. Sinks see only the image model (and file and HTTP
//! helpers): nothing of specs, locks, builds or what the image holds.

pub mod archive;
pub mod docker;
mod http1;
pub mod layout;
pub mod registry;

use crate::model::Image;
use crate::progress::Reporter;
use anyhow::Result;
use serde::Serialize;

pub trait Sink {
    /// What the sink says it did (printed by the CLI, or as `--json`).
    type Report: Serialize;
    fn send(&mut self, image: &Image, reporter: &dyn Reporter) -> Result<Self::Report>;
}
