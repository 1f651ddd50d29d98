//! `udmsetup measure` (DM_IMA_MEASUREMENT_FLAG, STATUSTYPE_IMA) against what
//! Linux 6.12's `dmsetup measure` printed (#11.14).
//!
//! KERNEL_MEASURE is the output of `dmsetup measure` in
//! /work/shared/tools/kernel-vm (Debian 6.12.117, dm 4.48.0) for the same
//! tables over /dev/vda (252:0) and /dev/vdb (252:16), `stack` being a
//! linear over `lin` (254:0). udm names an underlying file by its path and a
//! udm device by its `major:minor`, as its `table` does; the comparison
//! substitutes those names for the VM's device numbers.

mod common;

use common::Daemon;

const KERNEL_MEASURE: &str = "\
err: 0 100 error 
inact: 
lin: 0 2048 linear target_name=linear,target_version=1.4.0,device_name=252:0,start=16;
lin2: 0 1024 linear target_name=linear,target_version=1.4.0,device_name=252:0,start=0;
lin2: 1024 1024 linear target_name=linear,target_version=1.4.0,device_name=252:16,start=8;
notab: 
stack: 0 1024 linear target_name=linear,target_version=1.4.0,device_name=254:0,start=0;
str: 0 4096 striped target_name=striped,target_version=1.6.0,stripes=2,chunk_size=128,stripe_0_device_name=252:0,stripe_0_physical_start=0,stripe_0_status=A,stripe_1_device_name=252:16,stripe_1_physical_start=64,stripe_1_status=A;
zer: 0 100 zero 
";

#[test]
fn measure_prints_the_kernels_ima_lines() {
    let d = Daemon::start();
    let a = d.file("a.img", 1 << 17);
    let b = d.file("b.img", 1 << 17);
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let create = |name: &str, table: &str| {
        d.ok(&["create", name, "--table", table]);
    };
    create("lin", &format!("0 2048 linear {a} 16"));
    create(
        "lin2",
        &format!("0 1024 linear {a} 0\n1024 1024 linear {b} 8"),
    );
    create("str", &format!("0 4096 striped 2 128 {a} 0 {b} 64"));
    create("err", "0 100 error");
    create("zer", "0 100 zero");
    d.ok(&["create", "notab", "--notable"]);
    d.ok(&["create", "inact", "--notable"]);
    d.ok(&["load", "inact", "--table", "0 8 zero"]);
    // `lin` as a udm device number, as udm's table shows it.
    let info = d.ok(&["info", "-c", "--noheadings", "-o", "major,minor", "lin"]);
    let lin_dev = info.trim().to_string();
    assert!(
        lin_dev.split(':').count() == 2,
        "unexpected major:minor {lin_dev:?}"
    );
    create("stack", &format!("0 1024 linear {lin_dev} 0"));
    assert_eq!(
        d.ok(&["table", "stack"]),
        format!("0 1024 linear {lin_dev} 0\n")
    );

    let expected = KERNEL_MEASURE
        .replace("252:16", &b)
        .replace("252:0", &a)
        .replace("254:0", &lin_dev);
    assert_eq!(d.ok(&["measure"]), expected);

    // One device: no prefix. No table: one empty line. --inactive.
    let line = |n: &str| {
        expected
            .lines()
            .filter(|l| l.starts_with(&format!("{n}: ")))
            .map(|l| format!("{}\n", &l[n.len() + 2..]))
            .collect::<String>()
    };
    for n in ["lin", "lin2", "str", "err", "zer", "stack"] {
        assert_eq!(d.ok(&["measure", n]), line(n), "measure {n}");
        assert_eq!(
            d.ok(&["measure", "--inactive", n]),
            "\n",
            "measure --inactive {n}"
        );
    }
    assert_eq!(d.ok(&["measure", "notab"]), "\n");
    assert_eq!(d.ok(&["measure", "inact"]), "\n");
    assert_eq!(d.ok(&["measure", "--inactive", "inact"]), "0 8 zero \n");
    // status and table are unchanged by it.
    assert_eq!(d.ok(&["status", "lin"]), "0 2048 linear \n");
    assert_eq!(d.ok(&["table", "lin"]), format!("0 2048 linear {a} 16\n"));
}
