//! Keeping the set of ublk devices in step with the mapped devices: which to add,
//! resize or delete, and the map file that tells users which `/dev/ublkbN` is which.

/// A device that should be exported: it exists and has a live table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Stable across renames (the udm minor).
    pub key: u64,
    /// Tells a re-created device from the one it replaces under the same key.
    pub generation: u64,
    pub size_bytes: u64,
}

/// A device that is exported, or whose export failed (it is not retried until the
/// device is re-created or changes size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exported {
    pub key: u64,
    pub generation: u64,
    pub size_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete the ublk device of `key` (its device is gone, lost its table, or was
    /// re-created).
    Remove(u64),
    /// The live table changed size: resize the ublk device, or re-add it.
    Resize { key: u64, size_bytes: u64 },
    /// Add a ublk device for `key`.
    Add(u64),
}

/// The actions that turn `exported` into `wanted`: removals first (so that a
/// re-created device can get its ublk id back), then resizes, then additions.
pub fn plan(wanted: &[Wanted], exported: &[Exported]) -> Vec<Action> {
    let find_wanted = |key| wanted.iter().find(|w| w.key == key);
    let find_exported = |key| exported.iter().find(|e| e.key == key);
    let mut out = Vec::new();
    for e in exported {
        match find_wanted(e.key) {
            Some(w) if w.generation == e.generation => {}
            _ => out.push(Action::Remove(e.key)),
        }
    }
    for e in exported {
        if let Some(w) = find_wanted(e.key) {
            if w.generation == e.generation && w.size_bytes != e.size_bytes {
                out.push(Action::Resize {
                    key: e.key,
                    size_bytes: w.size_bytes,
                });
            }
        }
    }
    for w in wanted {
        match find_exported(w.key) {
            Some(e) if e.generation == w.generation => {}
            _ => out.push(Action::Add(w.key)),
        }
    }
    out
}

/// One line of the map file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub ublk_id: u32,
    pub minor: u64,
    pub name: String,
}

/// The map file: `<ublk id> <udm minor> <device name>` per line, sorted by name (the
/// name is last because a device name may contain spaces). For example
/// `0 0 vol` says that `/dev/ublkb0` is udm device `vol` (minor 0).
pub fn map_text(entries: &[MapEntry]) -> String {
    let mut sorted: Vec<&MapEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .iter()
        .map(|e| format!("{} {} {}\n", e.ublk_id, e.minor, e.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: u64, generation: u64, size_bytes: u64) -> Wanted {
        Wanted {
            key,
            generation,
            size_bytes,
        }
    }
    fn e(key: u64, generation: u64, size_bytes: u64) -> Exported {
        Exported {
            key,
            generation,
            size_bytes,
        }
    }

    #[test]
    fn nothing_to_do_when_in_step() {
        assert!(plan(
            &[w(0, 1, 512), w(3, 2, 1024)],
            &[e(3, 2, 1024), e(0, 1, 512)]
        )
        .is_empty());
        assert!(plan(&[], &[]).is_empty());
    }

    #[test]
    fn adds_new_and_removes_gone_devices() {
        assert_eq!(
            plan(&[w(0, 1, 512), w(1, 5, 512)], &[e(0, 1, 512), e(2, 9, 512)]),
            [Action::Remove(2), Action::Add(1)]
        );
    }

    #[test]
    fn a_recreated_device_is_removed_then_added() {
        assert_eq!(
            plan(&[w(0, 2, 512)], &[e(0, 1, 512)]),
            [Action::Remove(0), Action::Add(0)]
        );
    }

    #[test]
    fn a_size_change_is_a_resize() {
        assert_eq!(
            plan(&[w(4, 1, 4096)], &[e(4, 1, 512)]),
            [Action::Resize {
                key: 4,
                size_bytes: 4096
            }]
        );
    }

    #[test]
    fn map_is_sorted_by_name_with_the_name_last() {
        let text = map_text(&[
            MapEntry {
                ublk_id: 7,
                minor: 7,
                name: "zeta".into(),
            },
            MapEntry {
                ublk_id: 2,
                minor: 0,
                name: "a name".into(),
            },
        ]);
        assert_eq!(text, "2 0 a name\n7 7 zeta\n");
    }
}
