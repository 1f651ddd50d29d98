//! Protocol conformance with a hand-written client: exact bytes for the handshake,
//! the options, both reply formats, and every malformed input.

mod common;

use std::sync::Arc;

use common::*;
use udm_nbd::{BlockSize, Errno, Export, MemExport, ServerConfig};

const MIB: usize = 1 << 20;

fn mem(size: usize) -> Arc<MemExport> {
    Arc::new(MemExport::new(size))
}

fn one_export() -> (Harness, Arc<MemExport>) {
    let m = mem(MIB);
    (Harness::new(&[("disk", m.clone() as Arc<dyn Export>)]), m)
}

#[test]
fn greeting_and_bad_option_magic() {
    let (h, _) = one_export();
    let mut c = h.raw();
    c.greet(3);
    let mut bad = b"IHAVEOPX".to_vec();
    bad.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 0]);
    c.send(&bad);
    c.expect_closed();
}

#[test]
fn unknown_client_flags_close_the_connection() {
    let (h, _) = one_export();
    let mut c = h.raw();
    c.greet(3 | 1 << 5);
    c.expect_closed();
}

#[test]
fn unknown_options_get_err_unsup_and_the_session_goes_on() {
    let (h, _) = one_export();
    let mut c = h.raw();
    c.greet(3);
    for opt in [99u32, NBD_OPT_STARTTLS, 4, 11] {
        c.option(opt, b"junk");
        let r = c.opt_reply();
        assert_eq!((r.option, r.typ), (opt, NBD_REP_ERR_UNSUP));
    }
    c.option(NBD_OPT_ABORT, &[]);
    let r = c.opt_reply();
    assert_eq!(
        (r.option, r.typ, r.data.len()),
        (NBD_OPT_ABORT, NBD_REP_ACK, 0)
    );
    c.expect_closed();
}

#[test]
fn list_shows_every_export() {
    let h = Harness::new(&[("a", mem(4096)), ("bb", mem(4096))]);
    let mut c = h.raw();
    c.greet(3);
    c.option(NBD_OPT_LIST, &[]);
    let mut names = Vec::new();
    loop {
        let r = c.opt_reply();
        if r.typ == NBD_REP_ACK {
            break;
        }
        assert_eq!((r.option, r.typ), (NBD_OPT_LIST, NBD_REP_SERVER));
        let n = u32::from_be_bytes(r.data[..4].try_into().unwrap()) as usize;
        let name = String::from_utf8(r.data[4..4 + n].to_vec()).unwrap();
        let desc = String::from_utf8(r.data[4 + n..].to_vec()).unwrap();
        assert_eq!(desc, format!("test export {name}"));
        names.push(name);
    }
    assert_eq!(names, ["a", "bb"]);
    c.option(NBD_OPT_LIST, b"x");
    assert_eq!(c.opt_reply().typ, NBD_REP_ERR_INVALID);
}

#[test]
fn info_reports_export_name_description_and_block_size() {
    let m = Arc::new(MemExport::new(MIB).with_block_size(BlockSize {
        min: 512,
        preferred: 4096,
        max: 1 << 30,
    }));
    let h = Harness::new(&[("disk", m as Arc<dyn Export>)]);
    let mut c = h.raw();
    c.greet(3);
    // The default export is the only one; INFO_NAME gives its canonical name.
    c.option(NBD_OPT_INFO, &Raw::info_data("", &[1, 2, 3]));
    let mut seen = Vec::new();
    loop {
        let r = c.opt_reply();
        assert_eq!(r.option, NBD_OPT_INFO);
        if r.typ == NBD_REP_ACK {
            break;
        }
        assert_eq!(r.typ, NBD_REP_INFO);
        let t = u16::from_be_bytes([r.data[0], r.data[1]]);
        let d = &r.data[2..];
        match t {
            0 => {
                assert_eq!(u64::from_be_bytes(d[..8].try_into().unwrap()), MIB as u64);
                // HAS_FLAGS FLUSH FUA TRIM WRITE_ZEROES MULTI_CONN CACHE FAST_ZERO; no DF
                // without structured replies.
                assert_eq!(u16::from_be_bytes([d[8], d[9]]), 0b1101_0110_1101);
            }
            1 => assert_eq!(d, b"disk"),
            2 => assert_eq!(d, b"test export disk"),
            3 => {
                let v: Vec<u32> = d
                    .chunks(4)
                    .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
                    .collect();
                assert_eq!(v, [512, 4096, 32 << 20], "max capped at max_request");
            }
            t => panic!("unexpected info {t}"),
        }
        seen.push(t);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);
    // Malformed: name length beyond the data.
    c.option(NBD_OPT_INFO, &[0, 0, 0, 9, b'a', 0, 0]);
    assert_eq!(c.opt_reply().typ, NBD_REP_ERR_INVALID);
}

#[test]
fn unknown_export_is_err_unknown_then_go_still_works() {
    let (h, m) = one_export();
    m.fill(0, b"hello").unwrap();
    let mut c = h.raw();
    c.greet(3);
    c.option(NBD_OPT_GO, &Raw::info_data("nope", &[]));
    let r = c.opt_reply();
    assert_eq!((r.option, r.typ), (NBD_OPT_GO, NBD_REP_ERR_UNKNOWN));
    c.option(NBD_OPT_GO, &Raw::info_data("disk", &[]));
    let r = c.opt_reply();
    assert_eq!(r.typ, NBD_REP_INFO);
    assert_eq!(&r.data[..2], &[0, 0]);
    assert_eq!(c.opt_reply().typ, NBD_REP_INFO); // block size
    assert_eq!(c.opt_reply().typ, NBD_REP_ACK);
    c.request(0, NBD_CMD_READ, 7, 0, 5);
    assert_eq!(c.simple_error(7), 0);
    assert_eq!(c.bytes(5), b"hello");
}

#[test]
fn default_export_is_ambiguous_with_two_exports() {
    let h = Harness::new(&[("a", mem(4096)), ("b", mem(4096))]);
    let mut c = h.raw();
    c.greet(3);
    c.option(NBD_OPT_GO, &Raw::info_data("", &[]));
    assert_eq!(c.opt_reply().typ, NBD_REP_ERR_UNKNOWN);
}

#[test]
fn export_name_option_with_and_without_zeroes() {
    let (h, _) = one_export();
    for (flags, tail) in [(3u32, 0usize), (1, 124)] {
        let mut c = h.raw();
        c.greet(flags);
        c.option(NBD_OPT_EXPORT_NAME, b"disk");
        assert_eq!(c.u64(), MIB as u64);
        assert_eq!(c.u16(), 0b1101_0110_1101);
        assert_eq!(c.bytes(tail), vec![0; tail]);
        c.request(0, NBD_CMD_FLUSH, 1, 0, 0);
        assert_eq!(c.simple_error(1), 0);
    }
    let mut c = h.raw();
    c.greet(3);
    c.option(NBD_OPT_EXPORT_NAME, b"missing");
    c.expect_closed();
}

#[test]
fn meta_contexts_need_structured_replies() {
    let (h, _) = one_export();
    let mut c = h.raw();
    c.greet(3);
    c.option(
        NBD_OPT_SET_META_CONTEXT,
        &Raw::meta_data("disk", &["base:allocation"]),
    );
    assert_eq!(c.opt_reply().typ, NBD_REP_ERR_INVALID);
    c.option(NBD_OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.opt_reply().typ, NBD_REP_ACK);
    // LIST with the wildcard and with no query both show base:allocation, id 0.
    for q in [&["base:"][..], &[][..]] {
        c.option(NBD_OPT_LIST_META_CONTEXT, &Raw::meta_data("disk", q));
        let r = c.opt_reply();
        assert_eq!(r.typ, NBD_REP_META_CONTEXT);
        assert_eq!(r.data, b"\0\0\0\0base:allocation");
        assert_eq!(c.opt_reply().typ, NBD_REP_ACK);
    }
    // Unknown namespaces select nothing.
    c.option(
        NBD_OPT_SET_META_CONTEXT,
        &Raw::meta_data("disk", &["x-foo:bar"]),
    );
    assert_eq!(c.opt_reply().typ, NBD_REP_ACK);
    c.option(
        NBD_OPT_SET_META_CONTEXT,
        &Raw::meta_data("disk", &["nocolon"]),
    );
    assert_eq!(c.opt_reply().typ, NBD_REP_ERR_INVALID);
    c.option(
        NBD_OPT_SET_META_CONTEXT,
        &Raw::meta_data("nope", &["base:allocation"]),
    );
    assert_eq!(c.opt_reply().typ, NBD_REP_ERR_UNKNOWN);
    let mut truncated = Raw::meta_data("disk", &["base:allocation"]);
    truncated.pop();
    c.option(NBD_OPT_SET_META_CONTEXT, &truncated);
    assert_eq!(c.opt_reply().typ, NBD_REP_ERR_INVALID);
}

#[test]
fn simple_replies_and_their_errors() {
    let m = mem(MIB);
    let ro = Arc::new(MemExport::new(MIB).with_read_only(true));
    let config = ServerConfig {
        threads_per_conn: 4,
        max_request: MIB as u32,
        ..ServerConfig::default()
    };
    let h = Harness::with_config(&[("disk", m.clone()), ("ro", ro)], config);
    let mut c = h.raw();
    let (size, flags) = c.go("disk", false, false);
    assert_eq!(size, MIB as u64);
    assert_eq!(flags & (1 << 7), 0, "no DF without structured replies");

    let data = random_bytes(8192, 1);
    c.request_with(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1, 4096, 8192, &data);
    assert_eq!(c.simple_error(1), 0);
    c.request(0, NBD_CMD_READ, 2, 4096, 8192);
    assert_eq!(c.simple_error(2), 0);
    assert_eq!(c.bytes(8192), data);
    assert_eq!(&m.contents()[4096..12288], &data[..]);

    // Beyond the end: reads EINVAL, writes ENOSPC (payload consumed, stream in sync).
    c.request(0, NBD_CMD_READ, 3, MIB as u64 - 512, 1024);
    assert_eq!(c.simple_error(3), EINVAL);
    c.request_with(0, NBD_CMD_WRITE, 4, MIB as u64, 16, &[1; 16]);
    assert_eq!(c.simple_error(4), ENOSPC);
    c.request(0, NBD_CMD_WRITE_ZEROES, 5, MIB as u64 - 1, 2);
    assert_eq!(c.simple_error(5), ENOSPC);
    c.request(0, NBD_CMD_TRIM, 6, u64::MAX - 1, 2);
    assert_eq!(c.simple_error(6), EINVAL);
    c.request(0, NBD_CMD_CACHE, 7, MIB as u64, 1);
    assert_eq!(c.simple_error(7), EINVAL);
    // A read larger than the maximum request.
    c.request(0, NBD_CMD_READ, 8, 0, MIB as u32 + 1);
    assert_eq!(c.simple_error(8), EINVAL);
    // Unknown command, unknown flag, a flag that does not belong to the command.
    c.request(0, 42, 9, 0, 0);
    assert_eq!(c.simple_error(9), EINVAL);
    c.request(1 << 9, NBD_CMD_FLUSH, 10, 0, 0);
    assert_eq!(c.simple_error(10), EINVAL);
    c.request(NBD_CMD_FLAG_REQ_ONE, NBD_CMD_READ, 11, 0, 512);
    assert_eq!(c.simple_error(11), EINVAL);
    c.request(NBD_CMD_FLAG_DF, NBD_CMD_READ, 12, 0, 512);
    assert_eq!(c.simple_error(12), EINVAL, "DF was not advertised");
    // Block status without a negotiated context.
    c.request(0, NBD_CMD_BLOCK_STATUS, 13, 0, 512);
    assert_eq!(c.simple_error(13), EINVAL);
    // Zero-length operations succeed without touching the export.
    c.request(0, NBD_CMD_READ, 14, 0, 0);
    assert_eq!(c.simple_error(14), 0);
    c.request(
        NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
        NBD_CMD_WRITE_ZEROES,
        15,
        4096,
        4096,
    );
    assert_eq!(c.simple_error(15), 0);
    c.request(0, NBD_CMD_TRIM, 16, 8192, 4096);
    assert_eq!(c.simple_error(16), 0);
    c.request(0, NBD_CMD_READ, 17, 4096, 8192);
    assert_eq!(c.simple_error(17), 0);
    assert_eq!(c.bytes(8192), vec![0; 8192]);
    // Still in sync: a normal read works.
    c.request(0, NBD_CMD_FLUSH, 18, 0, 0);
    assert_eq!(c.simple_error(18), 0);

    let mut r = h.raw();
    let (_, flags) = r.go("ro", false, false);
    assert_eq!(
        flags, 0b0101_0000_0111,
        "HAS_FLAGS READ_ONLY FLUSH MULTI_CONN CACHE"
    );
    r.request_with(0, NBD_CMD_WRITE, 1, 0, 4, b"abcd");
    assert_eq!(r.simple_error(1), EPERM);
    r.request(0, NBD_CMD_TRIM, 2, 0, 4096);
    assert_eq!(r.simple_error(2), EPERM);
    r.request(0, NBD_CMD_WRITE_ZEROES, 3, 0, 4096);
    assert_eq!(r.simple_error(3), EPERM);
    r.request(0, NBD_CMD_READ, 4, 0, 4);
    assert_eq!(r.simple_error(4), 0);
    assert_eq!(r.bytes(4), [0; 4]);
}

#[test]
fn structured_replies_and_block_status() {
    let m = Arc::new(MemExport::new(MIB).with_fast_zero(false));
    m.fill(8192, &[7; 4096]).unwrap();
    m.write_zeroes(65536, 65536, false, false, false).unwrap();
    let config = ServerConfig {
        threads_per_conn: 16,
        max_request: 65536,
        ..ServerConfig::default()
    };
    let h = Harness::with_config(&[("disk", m as Arc<dyn Export>)], config);
    let mut c = h.raw();
    let (_, flags) = c.go("disk", true, true);
    assert_ne!(flags & (1 << 7), 0, "DF with structured replies");

    c.request(NBD_CMD_FLAG_DF, NBD_CMD_READ, 1, 8190, 4);
    let mut payload = 8190u64.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 7, 7]);
    assert_eq!(
        c.reply(),
        Reply::Chunk {
            flags: 1,
            typ: 1,
            cookie: 1,
            payload
        }
    );
    c.request(0, NBD_CMD_READ, 2, 0, 0);
    assert_eq!(
        c.reply(),
        Reply::Chunk {
            flags: 1,
            typ: 0,
            cookie: 2,
            payload: vec![]
        }
    );
    c.request(0, NBD_CMD_READ, 3, MIB as u64, 512);
    assert_eq!(c.chunk_error(3), (EINVAL, "invalid argument".into()));
    c.request(0, NBD_CMD_READ, 4, 0, 65537);
    assert_eq!(c.chunk_error(4).0, EOVERFLOW);
    c.request(NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 5, 0, 4096);
    assert_eq!(c.chunk_error(5).0, ENOTSUP);

    let bs = |c: &mut Raw, cookie, flags, offset, len| -> Vec<(u32, u32)> {
        c.request(flags, NBD_CMD_BLOCK_STATUS, cookie, offset, len);
        match c.reply() {
            Reply::Chunk {
                flags: 1,
                typ: 5,
                cookie: k,
                payload,
            } if k == cookie => {
                assert_eq!(&payload[..4], &[0, 0, 0, 1], "context id");
                payload[4..]
                    .chunks(8)
                    .map(|d| {
                        (
                            u32::from_be_bytes(d[..4].try_into().unwrap()),
                            u32::from_be_bytes(d[4..].try_into().unwrap()),
                        )
                    })
                    .collect()
            }
            r => panic!("expected a block status chunk, got {r:?}"),
        }
    };
    assert_eq!(
        bs(&mut c, 10, 0, 0, MIB as u32),
        [
            (8192, 3),
            (4096, 0),
            (53248, 3),
            (65536, 2),
            (MIB as u32 - 131072, 3)
        ]
    );
    assert_eq!(
        bs(&mut c, 11, NBD_CMD_FLAG_REQ_ONE, 0, MIB as u32),
        [(8192, 3)]
    );
    assert_eq!(bs(&mut c, 12, 0, 9000, 100), [(100, 0)]);
    c.request(0, NBD_CMD_BLOCK_STATUS, 13, MIB as u64 - 512, 1024);
    assert_eq!(c.chunk_error(13).0, EINVAL);
    c.request(0, NBD_CMD_BLOCK_STATUS, 14, 0, 0);
    assert_eq!(c.chunk_error(14).0, EINVAL);
    // Errors of other commands also come as chunks; successes as simple replies.
    c.request(0, 42, 15, 0, 0);
    assert_eq!(c.chunk_error(15).0, EINVAL);
    c.request(0, NBD_CMD_FLUSH, 16, 0, 0);
    assert_eq!(c.simple_error(16), 0);
}

#[test]
fn bad_request_magic_disconnects() {
    let (h, _) = one_export();
    let mut c = h.raw();
    c.go("disk", false, false);
    let mut m = vec![0x25, 0x60, 0x95, 0x14];
    m.extend_from_slice(&[0; 24]);
    c.send(&m);
    c.expect_closed();
}

#[test]
fn oversized_write_is_answered_then_the_connection_closes() {
    let config = ServerConfig {
        threads_per_conn: 2,
        max_request: MIB as u32,
        ..ServerConfig::default()
    };
    let h = Harness::with_config(&[("disk", mem(4 * MIB))], config);
    let mut c = h.raw();
    c.go("disk", false, false);
    c.request(0, NBD_CMD_WRITE, 1, 0, 2 * MIB as u32);
    assert_eq!(c.simple_error(1), EINVAL);
    c.expect_closed();
}

#[test]
fn disconnect_answers_what_is_in_flight_first() {
    let (h, m) = one_export();
    let mut c = h.raw();
    c.go("disk", false, false);
    let mut msg = Vec::new();
    for (cookie, cmd, len, payload) in [
        (1u64, NBD_CMD_WRITE, 4u32, &b"wxyz"[..]),
        (2, NBD_CMD_DISC, 0, &[][..]),
    ] {
        msg.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        msg.extend_from_slice(&0u16.to_be_bytes());
        msg.extend_from_slice(&cmd.to_be_bytes());
        msg.extend_from_slice(&cookie.to_be_bytes());
        msg.extend_from_slice(&0u64.to_be_bytes());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(payload);
    }
    c.send(&msg);
    assert_eq!(c.simple_error(1), 0);
    c.expect_closed();
    assert_eq!(&m.contents()[..4], b"wxyz");
}

#[test]
fn close_export_answers_eshutdown_and_closes() {
    let t = Arc::new(TestExport::new(MemExport::new(MIB), Some(0)));
    let h = Harness::new(&[("a", t.clone() as Arc<dyn Export>), ("b", mem(MIB))]);
    let _open = ReleaseOnDrop(t.clone());
    let mut busy = h.raw();
    busy.go("a", true, false);
    let mut idle = h.raw();
    idle.go("a", false, false);
    let mut other = h.raw();
    other.go("b", false, false);
    let mut handshaking = h.raw();
    handshaking.greet(3);

    busy.request(0, NBD_CMD_READ, 1, 0, 512);
    t.wait_for_waiters(1);
    h.exports.remove("a");
    h.server.close_export("a");
    idle.expect_closed();
    // A new request on the busy connection is answered ESHUTDOWN...
    busy.request(0, NBD_CMD_FLUSH, 2, 0, 0);
    assert_eq!(
        busy.chunk_error(2),
        (ESHUTDOWN, "server is shutting down".into())
    );
    // ...and so is the one in flight, then the connection closes.
    t.release();
    assert_eq!(busy.chunk_error(1).0, ESHUTDOWN);
    busy.expect_closed();
    // The export is gone for new clients; others are unaffected.
    handshaking.option(NBD_OPT_GO, &Raw::info_data("a", &[]));
    assert_eq!(handshaking.opt_reply().typ, NBD_REP_ERR_UNKNOWN);
    other.request(0, NBD_CMD_READ, 3, 0, 4);
    assert_eq!(other.simple_error(3), 0);
    assert_eq!(other.bytes(4), [0; 4]);
}

#[test]
fn eshutdown_from_the_export_closes_the_connection() {
    let t = Arc::new(TestExport::new(MemExport::new(MIB), None));
    let h = Harness::new(&[("a", t.clone() as Arc<dyn Export>)]);
    let mut c = h.raw();
    c.go("a", false, false);
    t.fail_reads(Some(Errno(libc::ESHUTDOWN)));
    c.request(0, NBD_CMD_READ, 1, 0, 512);
    assert_eq!(c.simple_error(1), ESHUTDOWN);
    c.expect_closed();
    // Other errors keep the connection: EIO stays EIO, unknown errnos become EINVAL.
    let mut c = h.raw();
    c.go("a", true, false);
    t.fail_reads(Some(Errno(libc::EIO)));
    c.request(0, NBD_CMD_READ, 2, 0, 512);
    assert_eq!(c.chunk_error(2), (EIO, "input/output error".into()));
    t.fail_reads(Some(Errno(libc::EBUSY)));
    c.request(0, NBD_CMD_READ, 3, 0, 512);
    assert_eq!(c.chunk_error(3).0, EINVAL);
}

#[test]
fn a_misbehaving_connection_does_not_affect_another() {
    let (h, _) = one_export();
    let mut good = h.raw();
    good.go("disk", false, false);
    let http = b"GET / HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
    for garbage in [&http[..], &[0xff; 100][..]] {
        let mut bad = h.raw();
        bad.bytes(18);
        bad.send(garbage);
        bad.expect_closed();
        let mut bad = h.raw();
        bad.go("disk", false, false);
        bad.send(garbage);
        bad.expect_closed();
    }
    // One that vanishes mid-request.
    let mut gone = h.raw();
    gone.go("disk", false, false);
    gone.request(0, NBD_CMD_WRITE, 1, 0, 4096);
    drop(gone);
    good.request_with(0, NBD_CMD_WRITE, 1, 0, 3, b"abc");
    assert_eq!(good.simple_error(1), 0);
    good.request(0, NBD_CMD_READ, 2, 0, 3);
    assert_eq!(good.simple_error(2), 0);
    assert_eq!(good.bytes(3), b"abc");
}

#[test]
fn unaligned_requests_are_refused_when_the_export_has_a_minimum_block() {
    let m = Arc::new(MemExport::new(MIB).with_block_size(BlockSize {
        min: 512,
        preferred: 4096,
        max: MIB as u32,
    }));
    let h = Harness::new(&[("disk", m as Arc<dyn Export>)]);
    let mut c = h.raw();
    c.go("disk", false, false);
    c.request(0, NBD_CMD_READ, 1, 100, 512);
    assert_eq!(c.simple_error(1), EINVAL);
    c.request_with(0, NBD_CMD_WRITE, 2, 0, 100, &[0; 100]);
    assert_eq!(c.simple_error(2), EINVAL);
    c.request(0, NBD_CMD_READ, 3, 512, 512);
    assert_eq!(c.simple_error(3), 0);
    assert_eq!(c.bytes(512), [0; 512]);
}

#[test]
fn shutdown_closes_everything_and_removes_the_socket() {
    let (h, _) = one_export();
    let mut a = h.raw();
    a.go("disk", false, false);
    let mut b = h.raw();
    b.greet(3);
    let tcp = h.server.listen_tcp("127.0.0.1:0").unwrap();
    let t = std::net::TcpStream::connect(tcp).unwrap();
    h.server.shutdown();
    a.expect_closed();
    b.expect_closed();
    // Accepted or not, the TCP client sees the end of the stream, not a hang.
    let mut t = t;
    t.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    use std::io::Read;
    if let Err(e) = t.read_to_end(&mut buf) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(!h.sock.exists());
    assert_eq!(h.server.connection_count(), 0);
}
