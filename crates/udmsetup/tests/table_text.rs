//! #11.21 (table text): a malformed line keeps dmsetup's first line and
//! adds udm's precise reason. dmsetup 1.02.185 on Linux 6.12 (kernel VM)
//! printed the first lines used here:
//!   create t --table 'zero 0 8'  -> Invalid format on line 1 of table .
//!   create t --table '0 -8 zero' -> device-mapper: reload ioctl on t (254:0) failed: Invalid argument
//!   create t --table '-1 8 zero' -> device-mapper: reload ioctl on t (254:0) failed: Invalid argument

mod common;

use common::*;

#[test]
fn fields_in_the_wrong_order_name_the_field() {
    let (d, _) = FakeDaemon::kernel();
    fails(
        &d.run(&["create", "t", "--table", "zero 0 8"]),
        "Invalid format on line 1 of table .\n\
         udm: line 1: start sector 'zero' is not a number\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "t", "--table", "0 x zero"]),
        "Invalid format on line 1 of table .\n\
         udm: line 1: length 'x' is not a number\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "t", "--table", "0 8"]),
        "Invalid format on line 1 of table .\n\
         udm: line 1: target type is missing\nCommand failed.\n",
    );
    fails(
        &d.run_stdin(&["create", "t"], "0 8 zero\n\n8\n"),
        "Invalid format on line 3 of table on stdin.\n\
         udm: line 3: length is missing\nCommand failed.\n",
    );
    assert!(d.seen().is_empty(), "nothing was sent");
}

#[test]
fn negative_numbers_are_named_not_too_large() {
    let (d, k) = FakeDaemon::kernel();
    fails(
        &d.run(&["create", "t", "--table", "0 -8 zero"]),
        "device-mapper: reload ioctl on t (254:0) failed: Invalid argument\n\
         udm: line 1: length '-8' is not a number\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "t", "--table", "# x\n-1 8 zero"]),
        "device-mapper: reload ioctl on t (254:1) failed: Invalid argument\n\
         udm: line 2: start sector '-1' is not a number\nCommand failed.\n",
    );
    assert!(
        k.lock().unwrap().devs.is_empty(),
        "both creates were undone"
    );
}
