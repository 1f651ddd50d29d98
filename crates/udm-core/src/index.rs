//! Sector -> target lookup through a static B-tree whose keys are known up front:
//! nodes of eight keys (one cache line), stored level by level with implicit child
//! positions, so there are no pointers and a lookup touches one line per level.

/// Keys per node; the search in [`Index::lookup`] is written for eight.
const K: usize = 8;

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Node([u64; K]);

/// Index over the exclusive end sectors of the targets of a table.
#[derive(Debug)]
pub struct Index {
    /// All nodes, root level first, each level contiguous.
    nodes: Vec<Node>,
    /// Offset of each level's first node in `nodes`, root first.
    level_starts: Vec<usize>,
    len: usize,
}

impl Index {
    /// `ends` must be strictly increasing (each target's exclusive end sector).
    pub fn new(ends: &[u64]) -> Index {
        let mut levels: Vec<Vec<Node>> = Vec::new();
        let mut keys: Vec<u64> = ends.to_vec();
        loop {
            let mut nodes: Vec<Node> = keys
                .chunks(K)
                .map(|c| {
                    let mut n = [u64::MAX; K];
                    n[..c.len()].copy_from_slice(c);
                    Node(n)
                })
                .collect();
            if nodes.is_empty() {
                nodes.push(Node([u64::MAX; K]));
            }
            // Each node's key in the level above is the largest end below it.
            keys = nodes.iter().map(|n| n.0[K - 1]).collect();
            let done = nodes.len() == 1;
            levels.push(nodes);
            if done {
                break;
            }
        }
        levels.reverse();
        let mut level_starts = Vec::with_capacity(levels.len());
        let mut all = Vec::with_capacity(levels.iter().map(Vec::len).sum());
        for l in levels {
            level_starts.push(all.len());
            all.extend(l);
        }
        Index {
            nodes: all,
            level_starts,
            len: ends.len(),
        }
    }

    /// Index of the target containing `sector`, or `None` past the end.
    #[inline]
    pub fn lookup(&self, sector: u64) -> Option<usize> {
        let mut pos = 0usize;
        for &start in &self.level_starts {
            let n = &self.nodes.get(start + pos)?.0;
            // Count the keys <= sector (the children wholly before it) with a
            // branch-free binary search over the sorted node: four dependent compares
            // in one cache line. (Summing eight compares is slower on baseline x86-64,
            // which has no 64-bit vector compare.)
            let mut b = 4 * (n[3] <= sector) as usize;
            b += 2 * (n[b + 1] <= sector) as usize;
            b += (n[b] <= sector) as usize;
            let c = b + (n[b] <= sector) as usize;
            if c == K {
                return None;
            }
            pos = pos * K + c;
        }
        (pos < self.len).then_some(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear_lookup(ends: &[u64], s: u64) -> Option<usize> {
        ends.iter().position(|&e| e > s)
    }

    #[test]
    fn small_tables() {
        let idx = Index::new(&[10]);
        assert_eq!(idx.lookup(0), Some(0));
        assert_eq!(idx.lookup(9), Some(0));
        assert_eq!(idx.lookup(10), None);
        let ends: Vec<u64> = (1..=100).map(|i| i * 3).collect();
        let idx = Index::new(&ends);
        for s in 0..310 {
            assert_eq!(idx.lookup(s), linear_lookup(&ends, s), "sector {s}");
        }
    }

    proptest! {
        #[test]
        fn matches_linear_scan(lens in proptest::collection::vec(1u64..1000, 1..2000), probes in proptest::collection::vec(any::<u64>(), 1..50)) {
            let mut ends = Vec::new();
            let mut acc = 0u64;
            for l in lens { acc += l; ends.push(acc); }
            let idx = Index::new(&ends);
            for p in probes {
                let s = p % (acc + 10);
                prop_assert_eq!(idx.lookup(s), linear_lookup(&ends, s));
            }
        }
    }
}
