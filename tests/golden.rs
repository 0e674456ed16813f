//! Golden digests: the exact bytes of a small fixture image (every source
//! kind of the spec), in gzip and zstd, and of its oci-archive and
//! docker-archive exports. A change here means mpsi's output changed for
//! everybody; see `check_golden` for what to do when that is intended.

mod common;

use common::*;
use std::fs;

#[test]
fn golden_digests_of_the_fixture_image_and_its_archives() {
    let Assembled {
        tmp,
        src,
        store,
        layout,
        report,
    } = assembled_fixture();
    let mut archives = serde_json::Map::new();
    for format in ["oci-archive", "docker-archive"] {
        let file = tmp.path().join(format!("{format}.tar"));
        export(&store, &layout, format, &file);
        archives.insert(
            format.into(),
            format!("sha256:{}", sha256_hex(&fs::read(&file).unwrap())).into(),
        );
    }
    let zstd = json(&run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(fixture_spec(&src))
            .arg("-o")
            .arg(tmp.path().join("oci-zstd"))
            .args(["--compression", "zstd", "--json"]),
    ));
    check_golden(
        "fixture-image",
        &serde_json::json!({
            "gzip": image_digests(&report),
            "zstd": image_digests(&zstd),
            "archives": archives,
        }),
    );
}
