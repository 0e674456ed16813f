//! Where a finished image goes: an OCI layout, an archive, a registry, a
//! Docker engine. Sinks see only the image model.

pub mod archive;
