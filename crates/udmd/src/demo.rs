//! The demo volume stack: three sparse backing files under a local directory,
//! a striped device over them, a linear device on the rest of one file, and a
//! stacked device mixing linear-on-striped with zero and error ranges.

use std::path::Path;

use udm_core::{DevRef, Engine};

pub const FILE_MIB: u64 = 256;
const STRIPE_SECTORS: u64 = 200 << 11; // 200 MiB of each file go to the stripes

/// Create the backing files (if missing) and the demo devices.
pub fn build(engine: &Engine, dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for i in 0..3 {
        let p = dir.join(format!("disk{i}.img"));
        if !p.exists() {
            std::fs::File::create(&p)?.set_len(FILE_MIB << 20)?;
        }
        files.push(std::fs::canonicalize(&p)?);
    }
    let f = |i: usize| files[i].display().to_string();
    let striped = format!(
        "0 {} striped 3 128 {} 0 {} 0 {} 0",
        STRIPE_SECTORS * 3,
        f(0),
        f(1),
        f(2)
    );
    let rest = (FILE_MIB << 11) - STRIPE_SECTORS;
    let linear = format!("0 {rest} linear {} {STRIPE_SECTORS}", f(0));
    let mut made = Vec::new();
    for (name, table) in [("demo-striped", striped), ("demo-linear", linear)] {
        engine.create(name, None, None)?;
        engine.load_text(&DevRef::name(name), &table, false)?;
        engine.resume(&DevRef::name(name), false)?;
        made.push(name.to_string());
    }
    let striped_dev = engine.info(&DevRef::name("demo-striped"), false)?.dev;
    let mixed = format!("0 409600 linear {striped_dev} 0\n409600 2048 zero\n411648 2048 error\n");
    engine.create("demo-mixed", None, None)?;
    engine.load_text(&DevRef::name("demo-mixed"), &mixed, false)?;
    engine.resume(&DevRef::name("demo-mixed"), false)?;
    made.push("demo-mixed".to_string());
    Ok(made)
}
