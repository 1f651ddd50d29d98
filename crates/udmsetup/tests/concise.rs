//! #11.16: `create --concise`. Expected texts: dmsetup 1.02.185 on Linux
//! 6.12 (kernel VM) for the same lists.

mod common;

use common::*;

#[test]
fn concise_lists_create_every_device() {
    let (d, _) = FakeDaemon::kernel();
    ok(
        &d.run(&[
            "create",
            "--concise",
            "c1,,,ro,0 8 zero;c2,U2,,,0 8 zero,8 8 error",
        ]),
        "",
    );
    ok(
        // dmsetup's `info -c` less the Event column (the fake counts events
        // its own way).
        &d.run(&[
            "info",
            "-c",
            "-o",
            "name,major,minor,attr,open,segments,uuid",
        ]),
        "Name             Maj Min Stat Open Targ UUID                            \n\
         c1               254   0 L--r    0    1                                 \n\
         c2               254   1 L--w    0    2 U2                              \n",
    );
    ok(
        &d.run(&["table", "--concise"]),
        "c1,,0,ro,0 8 zero ;c2,U2,1,rw,0 8 zero ,8 8 error \n",
    );
    ok(&d.run(&["create", "--concise", "c3,,250,rw,0 8 zero"]), "");
    ok(&d.run(&["create", "--concise", "c\\,9,,,,0 8 zero"]), "");
    ok(&d.run(&["create", "--concise", "c10,,,,0 8 zero;"]), "");
    ok(&d.run(&["create", "--concise", ""]), "");
    ok(
        &d.run_stdin(
            &["create", "--concise"],
            "c12,,,,0 8 zero;c13,,,,0 8 zero\n",
        ),
        "",
    );
    ok(&d.run(&["create", "--concise", "q 5,,,,0 8 zero"]), "");
    ok(
        &d.run(&["create", "--concise", "q8,,,,0 8 zero,,8 8 zero"]),
        "",
    );
    ok(
        &d.run(&["ls"]),
        // Sorted by the stored (mangled) name, as the kernel lists them.
        "c1\t(254:0)\nc10\t(254:4)\nc12\t(254:5)\nc13\t(254:6)\nc2\t(254:1)\nc3\t(254:2)\n\
         c,9\t(254:3)\nq8\t(254:8)\nq 5\t(254:7)\n",
    );
    ok(
        &d.run(&["table", "--concise", "c3", "q8"]),
        "c3,,2,rw,0 8 zero ;q8,,8,rw,0 8 zero ,8 8 zero \n",
    );
    let o = d.run(&["create", "--concise", "q9,,,rw,0 8 zero", "-v"]);
    assert_eq!(o.code, 0);
    assert!(
        o.out
            .starts_with("Name:              q9\nState:             ACTIVE\n"),
        "{o:?}"
    );
}

#[test]
fn concise_errors_as_dmsetup_prints_them() {
    let (d, k) = FakeDaemon::kernel();
    let incomplete = "Incomplete entry: five comma-separated fields are required for each device\n";
    fails(
        &d.run(&["create", "--concise", "c4,,,,0 8 zero,"]),
        &format!("{incomplete}Parsed 5 fields: name: c4 uuid:  minor:  flags:  table: 0 8 zero\n\nCommand failed.\n"),
    );
    fails(
        &d.run(&["create", "--concise", "c7,,"]),
        &format!("{incomplete}Parsed 3 fields: name: c7 uuid:  minor:  flags: (null) table: (null)\nCommand failed.\n"),
    );
    fails(
        &d.run(&["create", "--concise", "c8,,,,"]),
        &format!("{incomplete}Parsed 5 fields: name: c8 uuid:  minor:  flags:  table: \nCommand failed.\n"),
    );
    fails(
        &d.run(&["create", "--concise", "c6"]),
        "Five comma-separated fields are required for each device\n\
         Parsed 1 fields: name: c6 uuid: (null) minor: (null) flags: (null) table: (null)\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "--concise", ";"]),
        "Five comma-separated fields are required for each device\n\
         Parsed 1 fields: name:  uuid: (null) minor: (null) flags: (null) table: (null)\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "--concise", "c5,,,xx,0 8 zero"]),
        "Invalid flags parameter 'xx' must be 'ro' or 'rw' or empty.\nCommand failed.\n",
    );
    let incompatible = "--concise is incompatible with --[no]table, --minor, --uuid and --inactive.\nCommand failed.\n";
    fails(
        &d.run(&["create", "--concise", "q,,,,0 8 zero", "-u", "foo"]),
        incompatible,
    );
    fails(
        &d.run(&[
            "create",
            "--concise",
            "q,,,,0 8 zero",
            "--table",
            "0 8 zero",
        ]),
        incompatible,
    );
    fails(
        &d.run(&["create", "--concise", "q,,,,0 8 zero", "extra"]),
        "udmsetup create --concise takes at most one argument\nCommand failed.\n",
    );
    assert!(k.lock().unwrap().devs.is_empty(), "nothing was created");
    // The first device is created, the second's table is refused.
    fails(
        &d.run(&["create", "--concise", "q1,,,,0 8 zero;q2,,,,bogus"]),
        "Invalid format on line 1 of table .\nudm: line 1: start sector 'bogus' is not a number\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "--concise", "q3,,,,0 8 zero;;q4,,,,0 8 zero"]),
        "Five comma-separated fields are required for each device\n\
         Parsed 1 fields: name:  uuid: (null) minor: (null) flags: (null) table: (null)\nCommand failed.\n",
    );
    let names: Vec<String> = k.lock().unwrap().devs.keys().cloned().collect();
    assert_eq!(names, ["q1", "q3"]);
}
