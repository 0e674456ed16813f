//! The image model every other part speaks: digests, references and the
//! image value. It imports nothing from spec, lock, build or fetch.

pub mod digest;
