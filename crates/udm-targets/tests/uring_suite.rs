//! data.rs, dynamic.rs and suspend.rs once more, every engine on io_uring: their
//! engines take `EngineConfig::default()`, whose I/O engine comes from
//! `UDM_IO_ENGINE`, set here before the tests start.

use udm_core::{Engine, EngineConfig, IoEngine};

#[path = "data.rs"]
mod data;
#[path = "dynamic.rs"]
mod dynamic;
#[path = "suspend.rs"]
mod suspend;

/// Runs before `main` (an ELF constructor), while the process has one thread.
#[used]
#[link_section = ".init_array"]
static ON_URING: extern "C" fn() = {
    extern "C" fn set() {
        std::env::set_var("UDM_IO_ENGINE", "uring");
    }
    set
};

#[test]
fn the_suite_runs_on_io_uring() {
    assert_eq!(EngineConfig::default().io_engine, IoEngine::Uring);
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    // Where the kernel refuses io_uring the suite runs on the fallback; here
    // (Linux with io_uring enabled) it must not.
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    if disabled {
        eprintln!("io_uring is disabled on this host: the suite ran on the sync fallback");
    } else {
        assert_eq!(e.io_engine(), IoEngine::Uring);
    }
}
