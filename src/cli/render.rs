//! Text output of commands for humans (`--json` prints the reports instead).

use crate::assemble::Report;
use crate::assemble::dry_run::DryRun;

pub fn dry_run(d: &DryRun) {
    println!(
        "dry run of {} (SOURCE_DATE_EPOCH {}): nothing is changed",
        d.spec.display(),
        d.source_date_epoch
    );
    for b in &d.builds {
        if b.cached {
            println!("  build  {:<16} reuse {}", b.name, &b.key[..16]);
            continue;
        }
        println!("  build  {:<16} BUILD {}", b.name, &b.key[..16]);
        if let Some(old) = &b.compared_with {
            println!("         because, since build {}:", &old[..16]);
        }
        for why in &b.because {
            println!("           {why}");
        }
        if let Some(f) = &b.fetch {
            println!("         and first fetch {f}");
        }
    }
    for l in &d.layers {
        match (&l.because, l.cached) {
            (_, true) => println!("  layer  {:<16} reuse", l.name),
            (Some(why), false) => println!("  layer  {:<16} WRITE: {why}", l.name),
            (None, false) => println!("  layer  {:<16} WRITE", l.name),
        }
    }
}

pub fn assembled(report: &Report) {
    println!("assembled {} ({})", report.image, report.manifest_digest);
    println!("  layout  {}", report.layout.display());
    println!(
        "  sbom    {} (artifact {})",
        report.sbom.display(),
        report.sbom_artifact
    );
    println!("  elf     {}", report.elf_check);
    for c in &report.permissions.changed {
        println!(
            "  mode    {} {} -> {}: dropped {} ({}, layer {})",
            c.path, c.from, c.to, c.dropped, c.source, c.layer
        );
    }
    for k in &report.permissions.kept {
        println!(
            "  mode    {} {} kept: {} (layer {})",
            k.path, k.mode, k.reason, k.layer
        );
    }
    for b in &report.builds {
        println!(
            "  build   {:<20} {}{}{}",
            b.name,
            &b.key[..16],
            if b.cached {
                "  (cached)".to_string()
            } else {
                format!("  built in {:.0} s", b.seconds)
            },
            if b.hermetic {
                ""
            } else {
                "  NON-HERMETIC (network allowed)"
            }
        );
    }
    for l in &report.layers {
        println!(
            "  layer   {:<20} {} {:>10} bytes {:>6} entries{}",
            l.name,
            l.blob.digest,
            l.blob.size,
            l.blob.entries,
            if l.cached { "  (cached)" } else { "" }
        );
    }
}
