//! #11.16: `splitname` and the name-component report fields (subsystem,
//! vg_name, lv_name, lv_layer). Expected texts: dmsetup 1.02.185
//! (`splitname` on the host; `info -c` in the kernel VM).

mod common;

use common::*;

fn run(args: &[&str]) -> Outcome {
    // splitname needs no daemon: a socket path that does not exist.
    let mut argv: Vec<std::ffi::OsString> = vec![
        "udmsetup".into(),
        "--socket".into(),
        "/nonexistent/udm".into(),
    ];
    argv.extend(args.iter().map(|a| a.into()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = udmsetup::run(argv, &mut out, &mut err, &mut &b""[..]);
    Outcome {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

#[test]
fn splitname_splits_as_dmsetup() {
    let head = "VG   LV   LVLayer\n";
    for (name, row) in [
        ("vg-lv", "vg   lv          "),
        ("a-b-c-d", "a    b    c      "),
        ("vg--x-lv--y-real", "vg-x lv-y real   "),
        ("novg", "novg             "),
        ("-lv", "     lv          "),
        ("vg-", "vg-              "),
        ("a--", "a-               "),
        ("a---b", "a-   b           "),
        ("vg-lv-", "vg   lv-         "),
        ("a b-c", "a b  c           "),
    ] {
        ok(&run(&["splitname", "--", name]), &format!("{head}{row}\n"));
    }
    ok(
        &run(&["splitname", "a-b", "CRYPT"]),
        &format!("{head}                 \n"),
    );
    ok(
        &run(&[
            "splitname",
            "-o",
            "subsystem,vg_name,lv_name,lv_layer",
            "vg-lv",
        ]),
        "Subsys VG   LV   LVLayer\nLVM    vg   lv          \n",
    );
    ok(
        &run(&["splitname", "-o", "splitname_all", "vg-lv"]),
        "Subsys VG   LV   LVLayer\nLVM    vg   lv          \n",
    );
    ok(&run(&["splitname", "--noheadings", "vg-lv"]), "vg:lv:\n");
    ok(
        &run(&["splitname", "--separator", ",", "vg-lv-x"]),
        "VG,LV,LVLayer\nvg,lv,x\n",
    );
    let o = run(&["splitname", "-o", "name", "vg-lv"]);
    assert_eq!(
        (o.code, o.err.as_str(), o.out.as_str()),
        (
            1,
            "_do_report_object: no data assigned to field name\nCommand failed.\n",
            ""
        )
    );
    let o = run(&["help", "-c"]);
    assert!(
        o.err.contains(
            "Mapped Device Name Components Fields\n------------------------------------\n  \
             splitname_all         - All fields in this section.\n  \
             subsystem             - Userspace subsystem responsible for this device.\n  \
             vg_name               - LVM Volume Group name.\n  \
             lv_name               - LVM Logical Volume name.\n  \
             lv_layer              - LVM device layer.\n \n"
        ),
        "{}",
        o.err
    );
}

#[test]
fn info_columns_show_name_components() {
    let (d, k) = FakeDaemon::kernel();
    {
        let mut k = k.lock().unwrap();
        let z = || Some(vec![spec(0, 8, "zero", "")]);
        k.add("c2", "U2", z());
        k.add("cr", "CRYPT-xyz", z());
        k.add("vg--x-lv--y-real", "LVM-xyz", z());
        k.add("vg-lv-tpool", "", z());
    }
    ok(
        &d.run(&[
            "info",
            "-c",
            "-o",
            "name,subsystem,vg_name,lv_name,lv_layer",
        ]),
        "Name             Subsys VG   LV   LVLayer\n\
         c2                                       \n\
         cr               CRYPT                   \n\
         vg--x-lv--y-real LVM    vg-x lv-y real   \n\
         vg-lv-tpool                              \n",
    );
    ok(
        &d.run(&[
            "info",
            "-c",
            "-o",
            "splitname_all",
            "cr",
            "vg--x-lv--y-real",
        ]),
        "Subsys VG   LV   LVLayer\nCRYPT                   \nLVM    vg-x lv-y real   \n",
    );
}
