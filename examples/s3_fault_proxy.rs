//! The tests' S3 fault proxy (`tests/support/faults.rs`) as a program, for the benches:
//! every request delayed, a share of them faulted, counts written to a file.
//!
//!     cargo run --release --example s3_fault_proxy -- LISTEN_PORT TARGET_PORT LATENCY_MS \
//!         FAULT_RATE SEED COUNT_FILE [reads|all]
//!
//! FAULT_RATE is a fraction (0.01: one request in a hundred) of every request (`all`, the
//! default) or of GET/HEAD only (`reads`); the faults are those of the tests: 503 SlowDown,
//! 500, reset, answer lost after the request was applied, body cut short, 3 s stall.
//! COUNT_FILE always holds "<requests> <faults>". Loopback only; runs until killed.

#[path = "../tests/support/faults.rs"]
mod faults;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        eprintln!(
            "usage: s3_fault_proxy LISTEN_PORT TARGET_PORT LATENCY_MS FAULT_RATE SEED COUNT_FILE [reads|all]"
        );
        std::process::exit(2);
    }
    let num = |i: usize| -> f64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("not a number: {}", args[i]);
            std::process::exit(2)
        })
    };
    let (listen, target, latency, rate, seed) = (
        num(0) as u16,
        num(1) as u16,
        num(2) as u64,
        num(3),
        num(4) as u64,
    );
    let count_file = args[5].clone();
    let scope = match args.get(6).map(String::as_str) {
        Some("reads") => faults::Scope::Reads,
        _ => faults::Scope::All,
    };
    let proxy = faults::FaultProxy::start_on(listen, target, seed);
    proxy.set_latency(Duration::from_millis(latency));
    proxy.faults(rate, scope, &faults::Fault::ALL);
    loop {
        let c = proxy.counts();
        let line = format!("{} {}\n", c.total_requests(), c.total_faults());
        let tmp = format!("{count_file}.tmp");
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, &count_file);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
