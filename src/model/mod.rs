//! The image model every other part speaks: digests, names and the image
//! value. It imports nothing from spec, lock, build or fetch.

pub mod compression;
pub mod digest;
pub mod image;
pub mod name;
pub mod reference;

pub use image::{Artifact, ArtifactLayer, Image, Layer, LayerBlob};
