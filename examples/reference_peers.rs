//! Runs the reference Page Server and Safekeeper on 127.0.0.1 for manual
//! tests and benchmarks of the patched server:
//!
//!   cargo run --example reference_peers -- [PAGE_SERVER_PORT [SAFEKEEPER_PORT [SECONDS]]]
//!
//! Defaults: 8081, 8082, and it stops by itself after 3600 seconds.

#[path = "../tests/peers/mod.rs"]
mod peers;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = |i: usize, d: u16| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let seconds = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3600u64);
    let ps = peers::Peer::start_on(peers::Role::PageServer, port(0, 8081), None)?;
    let sk = peers::Peer::start_on(
        peers::Role::Safekeeper,
        port(1, 8082),
        std::env::var("SAFEKEEPER_API_KEY").ok().as_deref(),
    )?;
    eprintln!(
        "page server on 127.0.0.1:{}, safekeeper on 127.0.0.1:{}, for {seconds} s",
        ps.port(),
        sk.port()
    );
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    let w = sk.state().wal();
    eprintln!(
        "safekeeper: {:?}..{:?}, {} gaps; page server: {} images",
        w.start,
        w.end(),
        w.gaps.len(),
        ps.state().images()
    );
    Ok(())
}
