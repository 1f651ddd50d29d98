//! delay, flakey and dust over files, through the engine: tables as the kernel
//! reads them back, their status and messages, and what each does to data
//! (checked by reading the backing file directly).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use udm_core::{Bio, DevRef, Device, Engine, EngineConfig, Errno, Op, StatusType};

struct Env {
    _dir: tempfile::TempDir,
    file: PathBuf,
    e: Engine,
}

/// A 4 MiB file with each 512-byte sector stamped with its number.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk");
    let mut data = vec![0u8; 4 << 20];
    for (i, s) in data.chunks_mut(512).enumerate() {
        s.fill((i % 251) as u8);
        s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    std::fs::write(&file, &data).unwrap();
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    Env { _dir: dir, file, e }
}

impl Env {
    fn path(&self) -> String {
        self.file.display().to_string()
    }
    fn create(&self, name: &str, table: &str) -> Arc<Device> {
        let r = DevRef::name(name);
        self.e.create(name, None, None).unwrap();
        self.e.load_text(&r, table, false).unwrap();
        self.e.resume(&r, false).unwrap();
        self.e.device(&r).unwrap()
    }
    /// The error a table gets at load, on a fresh device.
    fn refused(&self, name: &str, table: &str) -> Errno {
        let r = DevRef::name(name);
        self.e.create(name, None, None).unwrap();
        let err = self.e.load_text(&r, table, false).unwrap_err();
        assert!(!self.e.info(&r, false).unwrap().inactive_present);
        self.e.remove(&r, false).unwrap();
        err.errno()
    }
    fn line(&self, name: &str, kind: StatusType) -> String {
        let (_, lines) = self.e.status(&DevRef::name(name), false, kind).unwrap();
        lines
            .iter()
            .map(|l| format!("{} {} {} {}", l.start, l.len, l.target_type, l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }
    fn file_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let f = std::fs::File::open(&self.file).unwrap();
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, offset).unwrap();
        b
    }
    fn message(&self, name: &str, msg: &str) -> Result<Option<String>, Errno> {
        self.e
            .message(&DevRef::name(name), 0, msg)
            .map(|m| m.reply)
            .map_err(|e| e.errno())
    }
}

// ----------------------------------------------------------------------------- delay

#[test]
fn delay_tables_read_back_as_given_and_bad_ones_are_refused() {
    let v = env();
    let p = v.path();
    v.create("d3", &format!("0 1024 delay {p} 0 10"));
    v.create("d6", &format!("0 1024 delay {p} 0 10 {p} 2048 0"));
    v.create(
        "d9",
        &format!("0 1024 delay {p} 0 10 {p} 2048 0 {p} 4096 7"),
    );
    assert_eq!(
        v.line("d3", StatusType::Table),
        format!("0 1024 delay {p} 0 10")
    );
    assert_eq!(
        v.line("d6", StatusType::Table),
        format!("0 1024 delay {p} 0 10 {p} 2048 0")
    );
    assert_eq!(
        v.line("d9", StatusType::Table),
        format!("0 1024 delay {p} 0 10 {p} 2048 0 {p} 4096 7")
    );
    assert_eq!(v.line("d9", StatusType::Info), "0 1024 delay 0 0 0");
    for bad in [
        format!("0 1024 delay {p} 0"),
        format!("0 1024 delay {p} 0 10 {p}"),
        format!("0 1024 delay {p} 0 x"),
        format!("0 1024 delay {p} -1 10"),
        format!("0 1024 delay {p} 0 4294967296"),
        format!("0 1024 delay {p} 8000 10"),
    ] {
        assert_eq!(v.refused("bad", &bad), Errno::EINVAL, "{bad}");
    }
}

#[test]
fn delay_holds_bios_without_threads_and_routes_each_class() {
    let v = env();
    let p = v.path();
    // reads 2 s from sector 0; writes at once to sector 2048.
    let dev = v.create("dw", &format!("0 1024 delay {p} 0 2000 {p} 2048 0"));
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    for i in 0..64u64 {
        let tx = tx.clone();
        dev.submit(Bio::with_buffer(
            Op::Read,
            i * 8,
            vec![0; 4096],
            move |r, b| {
                tx.send((i, r, b)).unwrap();
            },
        ));
    }
    // Every read was taken at once: the caller was never blocked on the delay.
    assert!(start.elapsed() < Duration::from_millis(2000));
    let held = v.line("dw", StatusType::Info);
    assert_eq!(held, "0 1024 delay 64 0 0");
    dev.write(0, &[9u8; 512], false).unwrap();
    assert_eq!(v.file_bytes(2048 * 512, 512), vec![9u8; 512], "write class");
    for _ in 0..64 {
        let (i, r, b) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(b, v.file_bytes(i * 8 * 512, 4096), "read class");
    }
    assert!(start.elapsed() >= Duration::from_millis(2000));
    assert_eq!(v.line("dw", StatusType::Info), "0 1024 delay 0 0 0");
}

#[test]
fn suspend_releases_every_held_bio_at_once_and_loses_none() {
    let v = env();
    let p = v.path();
    let r = DevRef::name("ds");
    let dev = v.create("ds", &format!("0 2048 delay {p} 0 60000"));
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..100u64 {
        let done = done.clone();
        let op = if i % 2 == 0 { Op::Read } else { Op::Write };
        dev.submit(Bio::with_buffer(
            op,
            i * 8,
            vec![i as u8; 4096],
            move |r, _| {
                assert_eq!(r, Ok(()));
                done.fetch_add(1, Ordering::SeqCst);
            },
        ));
    }
    assert_eq!(v.line("ds", StatusType::Info), "0 2048 delay 50 50 0");
    let start = Instant::now();
    v.e.suspend(&r, false).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "did not wait the 60 s delay"
    );
    assert_eq!(done.load(Ordering::SeqCst), 100, "every held bio completed");
    for i in (1..100u64).step_by(2) {
        assert_eq!(v.file_bytes(i * 8 * 512, 4096), vec![i as u8; 4096]);
    }
    // Not delaying while suspended-and-resumed? Delaying again after resume.
    v.e.resume(&r, false).unwrap();
    let (tx, rx) = mpsc::channel();
    dev.submit(Bio::with_buffer(Op::Read, 0, vec![0; 512], move |r, _| {
        tx.send(r).unwrap();
    }));
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(v.line("ds", StatusType::Info), "0 2048 delay 1 0 0");
    v.e.suspend(&r, false).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), Ok(()));
}

// ----------------------------------------------------------------------------- flakey

#[test]
fn flakey_tables_read_back_as_the_kernel_prints_them() {
    let v = env();
    let p = v.path();
    let cases = [
        ("0 1", "0 1 2 error_reads error_writes"),
        ("0 1 0", "0 1 2 error_reads error_writes"),
        ("1 0 1 drop_writes", "1 0 1 drop_writes"),
        ("4294967295 0 1 ERROR_WRITES", "4294967295 0 1 error_writes"),
        (
            "0 5 5 corrupt_bio_byte 32 R 1 0",
            "0 5 5 corrupt_bio_byte 32 r 1 0",
        ),
        (
            "0 5 7 error_reads corrupt_bio_byte 7 w 200 0 drop_writes",
            "",
        ),
        (
            "0 5 3 random_read_corrupt 100 drop_writes",
            "0 5 3 drop_writes random_read_corrupt 100",
        ),
        // 6.12 accepts these (newer kernels refuse them) and ignores extra words.
        (
            "0 5 3 error_reads random_read_corrupt 5",
            "0 5 3 error_reads random_read_corrupt 5",
        ),
        ("0 1 1 error_writes junk", "0 1 1 error_writes"),
        (
            "0 1 3 random_write_corrupt 5 error_writes",
            "0 1 3 error_writes random_write_corrupt 5",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let name = format!("f{i}");
        let table = format!("0 1024 flakey {p} 0 {args}");
        if want.is_empty() {
            assert_eq!(v.refused(&name, &table), Errno::EINVAL, "{table}");
            continue;
        }
        v.create(&name, &table);
        assert_eq!(
            v.line(&name, StatusType::Table),
            format!("0 1024 flakey {p} 0 {want}")
        );
        assert_eq!(v.line(&name, StatusType::Info), "0 1024 flakey ");
    }
    for bad in [
        "0 0",
        "4294967295 1",
        "0 1 1 frob",
        "0 1 2 drop_writes drop_writes",
        "0 1 2 drop_writes error_writes",
        "0 1 5 corrupt_bio_byte 0 r 1 0",
        "0 1 5 corrupt_bio_byte 1 x 1 0",
        "0 1 5 corrupt_bio_byte 1 r 256 0",
        "0 1 2 random_write_corrupt 1000000001",
        "0 1 3 error_reads",
        "0",
    ] {
        let table = format!("0 1024 flakey {p} 0 {bad}");
        assert_eq!(v.refused("bad", &table), Errno::EINVAL, "{table}");
    }
}

#[test]
fn flakey_down_does_what_each_feature_says_and_up_passes_through() {
    let v = env();
    let p = v.path();
    let orig = v.file_bytes(0, 8192);

    let up = v.create("up", &format!("0 1024 flakey {p} 0 1 0"));
    let mut b = vec![0u8; 8192];
    up.read(0, &mut b).unwrap();
    assert_eq!(b, orig);

    let all = v.create("all", &format!("0 1024 flakey {p} 0 0 1"));
    assert_eq!(all.read(0, &mut b), Err(Errno::EIO));
    assert_eq!(all.write(0, &[1; 512], false), Err(Errno::EIO));
    assert_eq!(v.file_bytes(0, 8192), orig);

    let drop = v.create("drop", &format!("0 1024 flakey {p} 0 0 1 1 drop_writes"));
    drop.write(0, &[1; 4096], false).unwrap();
    assert_eq!(
        v.file_bytes(0, 8192),
        orig,
        "a dropped write is not in the file"
    );
    drop.read(0, &mut b).unwrap();
    assert_eq!(b, orig, "reads pass while only writes are dropped");

    let ew = v.create("ew", &format!("0 1024 flakey {p} 0 0 1 1 error_writes"));
    assert_eq!(ew.write(0, &[1; 512], false), Err(Errno::EIO));
    ew.read(0, &mut b).unwrap();
    assert_eq!(b, orig);

    let er = v.create("er", &format!("0 1024 flakey {p} 0 0 1 1 error_reads"));
    assert_eq!(er.read(0, &mut b), Err(Errno::EIO));
    er.write(8, &[7; 512], false).unwrap();
    assert_eq!(
        v.file_bytes(4096, 512),
        vec![7; 512],
        "writes pass with error_reads"
    );

    let cr = v.create(
        "cr",
        &format!("0 1024 flakey {p} 0 0 1 5 corrupt_bio_byte 32 r 1 0"),
    );
    cr.read(0, &mut b).unwrap();
    let now = v.file_bytes(0, 8192);
    let diff: Vec<usize> = (0..8192).filter(|&i| b[i] != now[i]).collect();
    assert_eq!(diff, vec![31], "exactly byte 32 of the read changed");
    assert_eq!(b[31], 1);

    let cw = v.create(
        "cw",
        &format!("0 1024 flakey {p} 0 0 1 5 corrupt_bio_byte 2 w 200 0"),
    );
    let data = vec![5u8; 1024];
    cw.write(16, &data, false).unwrap();
    let mut want = data.clone();
    want[1] = 200;
    assert_eq!(v.file_bytes(16 * 512, 1024), want, "byte 2 written as 200");
    assert_eq!(data, vec![5u8; 1024], "the caller's buffer is untouched");
}

// ----------------------------------------------------------------------------- dust

#[test]
fn dust_messages_reply_as_the_kernel_does() {
    let v = env();
    let p = v.path();
    // 512-byte blocks from sector 8: block numbers count on the file (offset included).
    v.create("du", &format!("0 2048 dust {p} 8 512"));
    assert_eq!(
        v.line("du", StatusType::Table),
        format!("0 2048 dust {p} 8 512")
    );
    assert_eq!(
        v.line("du", StatusType::Info),
        format!("0 2048 dust {p} bypass verbose")
    );
    let m = |s: &str| v.message("du", s);
    assert_eq!(
        m("countbadblocks"),
        Ok(Some("countbadblocks: 0 badblock(s) found".into()))
    );
    assert_eq!(
        m("listbadblocks"),
        Ok(Some("No blocks in badblocklist".into()))
    );
    assert_eq!(m("addbadblock 67"), Ok(None));
    assert_eq!(m("AddBadBlock 60 2"), Ok(None));
    assert_eq!(m("addbadblock 60"), Err(Errno::EINVAL));
    assert_eq!(m("listbadblocks"), Ok(Some("60\n67\n".into())));
    assert_eq!(
        m("queryblock 60"),
        Ok(Some(
            "dust_query_block: block 60 found in badblocklist".into()
        ))
    );
    assert_eq!(
        m("queryblock 61"),
        Ok(Some(
            "dust_query_block: block 61 not found in badblocklist".into()
        ))
    );
    assert_eq!(
        m("countbadblocks"),
        Ok(Some("countbadblocks: 2 badblock(s) found".into()))
    );
    // The file has 8192 sectors: block 8192 is accepted, 8193 is not.
    assert_eq!(m("addbadblock 8192"), Ok(None));
    assert_eq!(m("addbadblock 8193"), Err(Errno::EINVAL));
    assert_eq!(m("removebadblock 8192"), Ok(None));
    assert_eq!(m("removebadblock 8192"), Err(Errno::EINVAL));
    for bad in [
        "addbadblock",
        "queryblock x",
        "addbadblock 5 256",
        "frob",
        "enable 1",
        "a b c d",
        "removebadblock 1 2",
    ] {
        assert_eq!(m(bad), Err(Errno::EINVAL), "{bad}");
    }
    assert_eq!(m("quiet"), Ok(None));
    assert_eq!(
        v.line("du", StatusType::Info),
        format!("0 2048 dust {p} bypass quiet")
    );
    assert_eq!(m("enable"), Ok(None));
    assert_eq!(
        v.line("du", StatusType::Info),
        format!("0 2048 dust {p} fail_read_on_bad_block quiet")
    );
    assert_eq!(
        m("clearbadblocks"),
        Ok(Some("dust_clear_badblocks: badblocks cleared".into()))
    );
    assert_eq!(
        m("clearbadblocks"),
        Ok(Some("dust_clear_badblocks: no badblocks found".into()))
    );
    for table in [
        format!("0 8 dust {p} 1 512 3"),
        format!("0 8 dust {p} 1"),
        format!("0 8 dust {p} 1 511"),
        format!("0 8 dust {p} 1 600"),
        format!("0 8 dust {p} x 512"),
        format!("0 4 dust {p} 1 4096"),
    ] {
        assert_eq!(v.refused("bad", &table), Errno::EINVAL, "{table}");
    }
}

#[test]
fn dust_fails_reads_of_bad_blocks_only_when_enabled_and_writes_clear_them() {
    let v = env();
    let p = v.path();
    let dev = v.create("dd", &format!("0 2048 dust {p} 0 4096"));
    let mut b = vec![0u8; 4096];
    v.message("dd", "addbadblock 3").unwrap();
    dev.read(24, &mut b).unwrap();
    assert_eq!(b, v.file_bytes(3 * 4096, 4096), "bypass: the read passes");
    v.message("dd", "enable").unwrap();
    assert_eq!(dev.read(24, &mut b), Err(Errno::EIO));
    // A larger read over the bad block fails too; its neighbours read fine.
    let mut big = vec![0u8; 16384];
    assert_eq!(dev.read(16, &mut big), Err(Errno::EIO));
    dev.read(32, &mut b).unwrap();
    // A write clears the block, and then the read succeeds.
    dev.write(24, &[0x33; 4096], false).unwrap();
    assert_eq!(
        v.message("dd", "queryblock 3"),
        Ok(Some(
            "dust_query_block: block 3 not found in badblocklist".into()
        ))
    );
    dev.read(24, &mut b).unwrap();
    assert_eq!(b, vec![0x33; 4096]);
    // A write fail count fails that many writes first.
    v.message("dd", "addbadblock 5 2").unwrap();
    assert_eq!(dev.write(40, &[1; 4096], false), Err(Errno::EIO));
    assert_eq!(dev.write(40, &[1; 4096], false), Err(Errno::EIO));
    dev.write(40, &[1; 4096], false).unwrap();
    assert_eq!(v.file_bytes(5 * 4096, 4096), vec![1; 4096]);
    v.message("dd", "disable").unwrap();
    v.message("dd", "addbadblock 6").unwrap();
    dev.write(48, &[2; 4096], false).unwrap();
    assert_eq!(
        v.message("dd", "countbadblocks"),
        Ok(Some("countbadblocks: 1 badblock(s) found".into())),
        "a write clears a bad block only while enabled"
    );
}

// ----------------------------------------------------------------------------- striped

#[test]
fn striped_discards_and_zeroes_once_per_stripe_exactly_where_the_chunks_are() {
    use udm_core::testdev::{FaultDev, RamDev};
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    let rams: Vec<_> = (0..4).map(|i| RamDev::new(4096, 40 + i)).collect();
    let devs: Vec<_> = rams.iter().map(|r| FaultDev::new(r.clone())).collect();
    for (i, d) in devs.iter().enumerate() {
        e.add_named_device(&format!("ram{i}"), d.clone());
        d.poke(0, &vec![0xee; 4096 * 512]);
    }
    let r = DevRef::name("st");
    e.create("st", None, None).unwrap();
    e.load_text(&r, "0 16384 striped 4 8 ram0 0 ram1 0 ram2 0 ram3 0", false)
        .unwrap();
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();
    let (start, len) = (13u64, 16000u64);
    dev.discard(start, len).unwrap();
    for d in &devs {
        assert_eq!(
            d.writes_done.load(Ordering::SeqCst),
            1,
            "one discard per stripe"
        );
    }
    // Model: target sector o lives on stripe (o/8)%4 at ((o/8)/4)*8 + o%8.
    let contents: Vec<_> = rams.iter().map(|r| r.contents()).collect();
    for o in 0..16384u64 {
        let (c, w) = (o / 8, o % 8);
        let (s, at) = ((c % 4) as usize, ((c / 4) * 8 + w) as usize * 512);
        let zero = o >= start && o < start + len;
        let sector = &contents[s][at..at + 512];
        assert!(
            sector.iter().all(|&b| b == if zero { 0 } else { 0xee }),
            "target sector {o} (stripe {s}) zeroed={zero}"
        );
    }
    dev.write_zeroes(0, 16384, false, false).unwrap();
    for d in &devs {
        assert_eq!(
            d.writes_done.load(Ordering::SeqCst),
            2,
            "one write-zeroes per stripe"
        );
    }
}

#[test]
fn read_ahead_and_hints_come_from_the_targets() {
    let v = env();
    let p = v.path();
    let hints = |name: &str, table: &str| {
        v.create(name, table);
        v.message(name, "@udm_io_hints").unwrap().unwrap()
    };
    // Twice io_opt in pages, never below 256 sectors; io_opt combined by lcm.
    assert_eq!(
        hints("h1", &format!("0 2048 striped 2 128 {p} 0 {p} 0")),
        "read_ahead 512 io_min 65536 io_opt 131072"
    );
    assert_eq!(
        hints("h2", &format!("0 1536 striped 2 24 {p} 0 {p} 0")),
        "read_ahead 256 io_min 12288 io_opt 24576"
    );
    assert_eq!(
        hints("h3", &format!("0 2048 linear {p} 0")),
        "read_ahead 256 io_min 0 io_opt 0"
    );
    assert_eq!(
        hints(
            "h4",
            &format!("0 4096 striped 4 256 {p} 0 {p} 0 {p} 0 {p} 0\n4096 1536 striped 3 128 {p} 0 {p} 0 {p} 0")
        ),
        "read_ahead 6144 io_min 131072 io_opt 1572864"
    );
}
