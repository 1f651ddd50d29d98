//! A device may not map onto itself through its own file in the FUSE mapper
//! directory, however the path reaches it (issue #11.2): through a symlink or
//! `mapper/../mapper/self` the load fails with EINVAL and the table is unchanged.

mod common;

use common::{Daemon, Opts};

#[test]
fn self_map_through_the_mapper_mount_is_refused() {
    if !udm_testkit::have_device("/dev/fuse") {
        return;
    }
    let d = Daemon::with(Opts {
        mapper: true,
        ..Opts::default()
    });
    let m = d.mapper.clone().unwrap();
    d.ok(&["create", "self", "--table", "0 8 zero"]);
    let link = d.dir.path().join("link");
    std::os::unix::fs::symlink(m.join("self"), &link).unwrap();
    let dotdot = m.join("..").join(m.file_name().unwrap()).join("self");
    for spec in [link, dotdot] {
        let e = d.fails(&[
            "load",
            "self",
            "--table",
            &format!("0 8 linear {} 0", spec.display()),
        ]);
        assert!(e.contains("Invalid argument"), "{}: {e}", spec.display());
        assert_eq!(d.ok(&["table", "self"]), "0 8 zero \n");
        assert_eq!(d.ok(&["table", "--inactive", "self"]), "\n");
    }
    // The mapper file of another device is that device, stacked.
    d.ok(&["create", "other", "--table", "0 8 zero"]);
    let other = m.join("..").join(m.file_name().unwrap()).join("other");
    d.ok(&[
        "load",
        "self",
        "--table",
        &format!("0 8 linear {} 0", other.display()),
    ]);
    d.ok(&["resume", "self"]);
    assert_eq!(d.ok(&["table", "self"]), "0 8 linear 253:1 0\n");
}
