//! Layer compression as the image model knows it: its name and media type.
//! The encoders are in `layer::compress`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (default): every Docker engine and registry reads it.
    Gzip,
    /// zstd: smaller and faster; Docker 20.10 cannot load it.
    Zstd,
    /// Uncompressed tar.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(format!("unknown compression {s:?} (gzip, zstd or none)")),
        }
    }
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The level used when the spec names none: gzip 6 and zstd 3 are the
    /// defaults of gzip/pigz and zstd themselves.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}
