//! #11.19: regular files appear in deps as `0:N` (udmd's FILE_MAJOR);
//! `-o devname` and `--json` name them by path, taken from the table
//! (udmd prints a file in a table by its absolute path), with no change
//! to the dm-ioctl wire format.

mod common;

use common::*;

/// base (zero), and f1 over /srv/a.img, base, /srv/b.img and /srv/a.img
/// again: deps (most recently first-referenced first) are
/// 0:2 (b.img), 254:0 (base), 0:1 (a.img).
fn files() -> FakeDaemon {
    let (d, k) = FakeDaemon::kernel();
    let mut k = k.lock().unwrap();
    k.files = vec!["/srv/a.img".into(), "/srv/b.img".into()];
    k.add("base", "", Some(vec![spec(0, 100, "zero", "")]));
    k.add(
        "f1",
        "",
        Some(vec![
            spec(0, 8, "linear", "/srv/a.img 0"),
            spec(8, 8, "linear", "254:0 0"),
            spec(16, 8, "striped", "2 8 /srv/b.img 0 /srv/a.img 8"),
        ]),
    );
    drop(k);
    d
}

#[test]
fn deps_and_tree_name_files_by_path() {
    let d = files();
    ok(
        &d.run(&["deps", "f1"]),
        "3 dependencies\t: (0, 2) (254, 0) (0, 1)\n",
    );
    ok(
        &d.run(&["deps", "-o", "devname", "f1"]),
        "3 dependencies\t: (/srv/b.img) (base) (/srv/a.img)\n",
    );
    ok(
        &d.run(&["deps", "-o", "blkdevname", "f1"]),
        "3 dependencies\t: (/srv/b.img) (dm-0) (/srv/a.img)\n",
    );
    ok(
        &d.run(&["ls", "--tree", "-o", "ascii"]),
        "f1 (254:1)\n |- (0:2)\n |-base (254:0)\n `- (0:1)\n",
    );
    ok(
        &d.run(&["ls", "--tree", "-o", "ascii,devname"]),
        "f1 (254:1)\n |-/srv/b.img (0:2)\n |-base (254:0)\n `-/srv/a.img (0:1)\n",
    );
    ok(
        &d.run(&["ls", "--tree", "-o", "ascii,blkdevname"]),
        "f1 <dm-1> (254:1)\n |- </srv/b.img> (0:2)\n |-base <dm-0> (254:0)\n `- </srv/a.img> (0:1)\n",
    );
}

#[test]
fn blkdevs_used_shows_the_path() {
    let d = files();
    ok(
        &d.run(&["info", "-c", "-o", "name,devnos_used,blkdevs_used", "f1"]),
        "Name             DevNosUsed       BlkDevNamesUsed           \n\
         f1               0:2,254:0,0:1    /srv/b.img,dm-0,/srv/a.img\n",
    );
}

#[test]
fn json_carries_the_path() {
    let d = files();
    let o = d.run(&["deps", "--json", "f1"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    let devs = &v[0]["devices"];
    assert_eq!(devs[0]["path"], "/srv/b.img", "{o:?}");
    assert_eq!(devs[1].get("path"), None, "{o:?}");
    assert_eq!(devs[2]["path"], "/srv/a.img", "{o:?}");
    let o = d.run(&["ls", "--tree", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    let f1 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "f1")
        .unwrap();
    let paths: Vec<_> = f1["uses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].clone())
        .collect();
    assert_eq!(
        paths,
        [
            serde_json::json!("/srv/b.img"),
            serde_json::Value::Null,
            serde_json::json!("/srv/a.img")
        ]
    );
}
