//! Random bytes from a client never panic the server nor disturb other clients.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use common::*;
use proptest::prelude::*;
use udm_nbd::{Export, MemExport};

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

fn count_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn garbage_in_any_phase(
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        phase in 0u8..4,
        // Garbage that starts like a valid request or option is more interesting.
        prefix in any::<bool>(),
    ) {
        count_panics();
        let m = Arc::new(MemExport::new(1 << 20));
        let h = Harness::new(&[("disk", m as Arc<dyn Export>)]);
        let mut good = h.raw();
        good.go("disk", true, true);
        {
            let mut bad = h.raw();
            match phase {
                0 => {
                    bad.bytes(18);
                }
                1 => bad.greet(3),
                2 => {
                    bad.go("disk", false, false);
                }
                _ => {
                    bad.go("disk", true, true);
                }
            }
            let mut msg = Vec::new();
            if prefix {
                if phase < 2 {
                    msg.extend_from_slice(b"IHAVEOPT");
                } else {
                    msg.extend_from_slice(&0x2560_9513u32.to_be_bytes());
                }
            }
            msg.extend_from_slice(&garbage);
            // The server may close early; a failed send is fine.
            let _ = std::io::Write::write_all(&mut bad.s, &msg);
        }
        good.request_with(0, NBD_CMD_WRITE, 1, 512, 3, b"abc");
        prop_assert_eq!(good.simple_error(1), 0);
        good.request(0, NBD_CMD_READ, 2, 512, 3);
        match good.reply() {
            Reply::Chunk { typ: 1, cookie: 2, payload, .. } => prop_assert_eq!(&payload[8..], b"abc"),
            r => prop_assert!(false, "unexpected reply {:?}", r),
        }
        drop(h);
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    }
}
