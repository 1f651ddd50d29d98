//! Property tests: everything the encoders produce decodes back to the
//! same values.

use proptest::prelude::*;
use udm_ioctl::*;

fn text(max_bytes: usize) -> impl Strategy<Value = String> {
    "[^\u{0}]{0,64}".prop_filter("fits", move |s| s.len() <= max_bytes)
}

fn header() -> impl Strategy<Value = DmIoctl> {
    (
        any::<[u32; 3]>(),
        any::<(u32, u32, u32, i32, u32, u32, u64)>(),
        text(127),
        text(128),
    )
        .prop_map(
            |(version, (ds, st, tc, oc, fl, ev, dev), name, uuid)| DmIoctl {
                version,
                data_size: ds,
                data_start: st,
                target_count: tc,
                open_count: oc,
                flags: fl,
                event_nr: ev,
                dev,
                name,
                uuid,
            },
        )
}

fn target_spec() -> impl Strategy<Value = TargetSpec> {
    (
        any::<u64>(),
        any::<u64>(),
        "[a-z][a-z0-9_-]{0,14}",
        text(200),
    )
        .prop_map(|(s, l, t, p)| TargetSpec {
            sector_start: s,
            length: l,
            status: 0,
            target_type: t,
            params: p,
        })
}

fn name_entry() -> impl Strategy<Value = NameListEntry> {
    (
        1u64..=u64::MAX,
        "[^\u{0}]{1,40}",
        any::<u32>(),
        proptest::option::of(text(128)),
    )
        .prop_map(|(dev, name, event_nr, uuid)| NameListEntry {
            dev,
            name,
            event_nr,
            uuid,
        })
}

proptest! {
    #[test]
    fn header_round_trips(h in header()) {
        let b = h.encode().unwrap();
        prop_assert_eq!(DmIoctl::decode(&b).unwrap(), h);
    }

    #[test]
    fn buffers_round_trip(h in header(), payload in proptest::collection::vec(any::<u8>(), 0..600), cap in 0usize..2048) {
        let req = request_buffer(&h, &payload, cap).unwrap();
        prop_assert_eq!(req.len(), cap.max(312 + payload.len()));
        let (hh, p) = split_buffer(&req).unwrap();
        prop_assert_eq!(&p[..payload.len()], &payload[..]);
        prop_assert!(p[payload.len()..].iter().all(|&b| b == 0));
        prop_assert_eq!((hh.name, hh.uuid, hh.flags), (h.name.clone(), h.uuid.clone(), h.flags));
        let rep = reply_buffer(&h, &payload).unwrap();
        let (hh, p) = split_buffer(&rep).unwrap();
        prop_assert_eq!(p, &payload[..]);
        prop_assert_eq!(hh.dev, h.dev);
    }

    #[test]
    fn table_load_round_trips(specs in proptest::collection::vec(target_spec(), 1..12)) {
        let b = encode_table_load(&specs).unwrap();
        prop_assert_eq!(decode_table_load(&b, specs.len() as u32).unwrap(), specs.clone());
        let mut h = DmIoctl::new();
        h.target_count = specs.len() as u32;
        let buf = request_buffer(&h, &b, 16 * 1024).unwrap();
        prop_assert_eq!(decode_table_load_request(&buf).unwrap().1, specs);
    }

    #[test]
    fn table_status_round_trips_and_truncates(specs in proptest::collection::vec(target_spec(), 0..12), cap in 0usize..3000) {
        let (all, full) = encode_table_status(&specs, usize::MAX / 2);
        prop_assert!(!full);
        prop_assert_eq!(decode_table_status(&all, specs.len() as u32).unwrap(), specs.clone());
        let (part, full) = encode_table_status(&specs, cap);
        prop_assert_eq!(&all[..part.len()], &part[..], "a prefix of the whole");
        prop_assert_eq!(full, part.len() < all.len());
        prop_assert!(part.len() < cap || part.is_empty());
    }

    #[test]
    fn name_list_round_trips(entries in proptest::collection::vec(name_entry(), 0..10), with_uuid in any::<bool>()) {
        let b = encode_name_list(&entries, with_uuid, 1 << 20).unwrap();
        let expect: Vec<_> = entries.iter().cloned().map(|mut e| {
            e.uuid = if with_uuid { e.uuid.filter(|u| !u.is_empty()) } else { None };
            e
        }).collect();
        prop_assert_eq!(decode_name_list(&b).unwrap(), expect);
        prop_assert!(encode_name_list(&entries, with_uuid, b.len().max(8)).is_some());
        if !b.is_empty() {
            prop_assert!(encode_name_list(&entries, with_uuid, b.len() - 1).is_none());
        }
    }

    #[test]
    fn versions_round_trip(v in proptest::collection::vec(("[^\u{0}]{1,30}", any::<[u32; 3]>()), 0..10)) {
        let v: Vec<_> = v.into_iter().map(|(name, version)| TargetVersion { name, version }).collect();
        let b = encode_versions(&v, 1 << 20).unwrap();
        prop_assert_eq!(decode_versions(&b).unwrap(), v);
    }

    #[test]
    fn deps_round_trip(devs in proptest::collection::vec(any::<u64>(), 0..40)) {
        let b = encode_deps(&devs, 1 << 20).unwrap();
        prop_assert_eq!(decode_deps(&b).unwrap(), devs.clone());
        prop_assert!(encode_deps(&devs, b.len() - 1).is_none());
    }

    #[test]
    fn msg_and_strings_round_trip(sector in any::<u64>(), msg in text(500)) {
        prop_assert_eq!(decode_target_msg(&encode_target_msg(sector, &msg)).unwrap(), (sector, msg.clone()));
        prop_assert_eq!(decode_string(&encode_string(&msg)).unwrap(), msg);
    }

    #[test]
    fn dev_round_trips(major in 0u32..4096, minor in 0u32..(1 << 20)) {
        prop_assert_eq!(decode_dev(encode_dev(major, minor)), (major, minor));
    }

    #[test]
    fn frames_round_trip(ioctl in any::<u32>(), buffer in proptest::collection::vec(any::<u8>(), 0..1024),
                         errno in 0i32..4096, detail in text(300), junk in proptest::collection::vec(any::<u8>(), 0..16)) {
        let r = RequestFrame { ioctl, buffer: buffer.clone() };
        let mut b = r.encode();
        let n = b.len();
        b.extend_from_slice(&junk);
        prop_assert_eq!(RequestFrame::decode(&b).unwrap(), Some((r, n)));
        prop_assert_eq!(RequestFrame::decode(&b[..n - 1]).unwrap(), None);
        let p = ReplyFrame { errno, buffer, detail };
        let mut b = p.encode();
        let n = b.len();
        b.extend_from_slice(&junk);
        prop_assert_eq!(ReplyFrame::decode(&b).unwrap(), Some((p, n)));
        prop_assert_eq!(ReplyFrame::decode(&b[..n - 1]).unwrap(), None);
    }

    #[test]
    fn commands_round_trip(nr in 0u32..18) {
        let c = Command::from_nr(nr).unwrap();
        prop_assert_eq!(c.nr(), nr);
        prop_assert_eq!(Command::from_ioctl_number(c.ioctl_number()).unwrap(), c);
    }
}
