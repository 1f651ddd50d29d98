//! `ls --tree`: the dependency graph of all devices, built and drawn the
//! way libdm's deptree and dmsetup's tree printer do it (top-level devices
//! in list order, children in TABLE_DEPS order, a shared device shown
//! under every user, the line cut at the terminal width).

use super::DeviceInfo;

/// One device in the graph: a udm device (with `info`) or an underlying
/// device that is not one (`info` = None, empty name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub major: u32,
    pub minor: u32,
    pub info: Option<DeviceInfo>,
    /// The kernel-style block device name (`dm-3`, `loop0`), if known;
    /// for a regular file, its path.
    pub blkdevname: Option<String>,
    /// A regular file's path (udm lists files as `0:N`).
    pub path: Option<String>,
    uses: Vec<Link>,
    used_by: Vec<Link>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Root,
    Node(usize),
}

/// The whole graph, with the root's two lists: top-level devices (used by
/// nobody) and bottom-level ones (using nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DepGraph {
    pub nodes: Vec<Node>,
    root_uses: Vec<Link>,
    root_used_by: Vec<Link>,
}

/// What the graph builder needs to know about a device number.
#[derive(Clone, Debug)]
pub struct DevFacts {
    /// Set for udm devices.
    pub info: Option<DeviceInfo>,
    pub deps: Vec<(u32, u32)>,
    pub blkdevname: Option<String>,
    /// A regular file's path.
    pub path: Option<String>,
}

impl DepGraph {
    fn uses(&self, l: Link) -> &Vec<Link> {
        match l {
            Link::Root => &self.root_uses,
            Link::Node(i) => &self.nodes[i].uses,
        }
    }
    fn uses_mut(&mut self, l: Link) -> &mut Vec<Link> {
        match l {
            Link::Root => &mut self.root_uses,
            Link::Node(i) => &mut self.nodes[i].uses,
        }
    }
    fn used_by_mut(&mut self, l: Link) -> &mut Vec<Link> {
        match l {
            Link::Root => &mut self.root_used_by,
            Link::Node(i) => &mut self.nodes[i].used_by,
        }
    }
    fn used_by(&self, l: Link) -> &Vec<Link> {
        match l {
            Link::Root => &self.root_used_by,
            Link::Node(i) => &self.nodes[i].used_by,
        }
    }
    fn linked(&self, parent: Link, child: Link) -> bool {
        self.uses(parent).contains(&child)
    }
    fn link(&mut self, parent: Link, child: Link) {
        if !self.linked(parent, child) {
            self.uses_mut(parent).push(child);
            self.used_by_mut(child).push(parent);
        }
    }
    fn unlink(&mut self, parent: Link, child: Link) {
        if self.linked(parent, child) {
            let u = self.uses_mut(parent);
            if let Some(p) = u.iter().position(|&x| x == child) {
                u.remove(p);
            }
            let b = self.used_by_mut(child);
            if let Some(p) = b.iter().position(|&x| x == parent) {
                b.remove(p);
            }
        }
    }

    /// Children of a node: none for a node linked to the root on that side.
    fn num_children(&self, l: Link, inverted: bool) -> usize {
        if inverted {
            if self.linked(Link::Root, l) {
                return 0;
            }
            self.used_by(l).len()
        } else {
            if self.linked(l, Link::Root) {
                return 0;
            }
            self.uses(l).len()
        }
    }

    fn link_tree_nodes(&mut self, parent: Link, child: Link) {
        if parent == Link::Root {
            if self.num_children(child, true) > 0 {
                return;
            }
        } else {
            self.unlink(Link::Root, child);
        }
        if child != Link::Root {
            self.unlink(parent, Link::Root);
        }
        self.link(parent, child);
    }

    fn add_dev(&mut self, parent: Link, dev: (u32, u32), facts: &dyn Fn(u32, u32) -> DevFacts) {
        let found = self.nodes.iter().position(|n| (n.major, n.minor) == dev);
        let (idx, new_deps) = match found {
            Some(i) => (i, None),
            None => {
                let f = facts(dev.0, dev.1);
                self.nodes.push(Node {
                    name: f.info.as_ref().map(|i| i.name.clone()).unwrap_or_default(),
                    major: dev.0,
                    minor: dev.1,
                    info: f.info,
                    blkdevname: f.blkdevname,
                    path: f.path,
                    uses: Vec::new(),
                    used_by: Vec::new(),
                });
                (self.nodes.len() - 1, Some(f.deps))
            }
        };
        let node = Link::Node(idx);
        self.link_tree_nodes(parent, node);
        let Some(deps) = new_deps else { return };
        if self.nodes[idx].info.is_none() || deps.is_empty() {
            self.link(node, Link::Root);
            return;
        }
        for d in deps {
            self.add_dev(node, d, facts);
        }
    }

    /// Build the graph from the devices in LIST_DEVICES order; `facts`
    /// describes any device number (udm device or not).
    pub fn build(devices: &[(u32, u32)], facts: &dyn Fn(u32, u32) -> DevFacts) -> Self {
        let mut g = DepGraph::default();
        for &d in devices {
            g.add_dev(Link::Root, d, facts);
        }
        g
    }

    fn index_of(&self, dev: (u32, u32)) -> Option<usize> {
        self.nodes.iter().position(|n| (n.major, n.minor) == dev)
    }

    /// The udm devices that use `dev` (in link order), for the report.
    pub fn users(&self, dev: (u32, u32)) -> Vec<&Node> {
        let Some(i) = self.index_of(dev) else {
            return Vec::new();
        };
        self.nodes[i]
            .used_by
            .iter()
            .filter_map(|l| match l {
                Link::Node(j) => Some(&self.nodes[*j]),
                Link::Root => None,
            })
            .collect()
    }

    /// Every device `dev` uses, in TABLE_DEPS order.
    pub fn children(&self, dev: (u32, u32)) -> Vec<&Node> {
        let Some(i) = self.index_of(dev) else {
            return Vec::new();
        };
        self.nodes[i]
            .uses
            .iter()
            .filter_map(|l| match l {
                Link::Node(j) => Some(&self.nodes[*j]),
                Link::Root => None,
            })
            .collect()
    }

    /// The udm devices `dev` uses (in TABLE_DEPS order), for the report.
    pub fn used(&self, dev: (u32, u32)) -> Vec<&Node> {
        let mut v = self.children(dev);
        v.retain(|n| n.info.is_some());
        v
    }
}

/// Line-drawing symbols: empty, branch, vertical, last, single, first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbols([&'static str; 6]);

pub const ASCII: Symbols = Symbols(["  ", "|-", "| ", "`-", "---", "-+-"]);
pub const UTF: Symbols = Symbols([
    "  ",
    "\u{251c}\u{2500}",
    "\u{2502} ",
    "\u{2514}\u{2500}",
    "\u{2500}\u{2500}\u{2500}",
    "\u{2500}\u{252c}\u{2500}",
]);
pub const VT100: Symbols = Symbols([
    "  ",
    "\x1b(0\x0ftq\x1b(B",
    "\x1b(0\x0fx\x1b(B ",
    "\x1b(0\x0fmq\x1b(B",
    "\x1b(0\x0fqqq\x1b(B",
    "\x1b(0\x0fqwq\x1b(B",
]);

/// `ls --tree -o <options>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeOptions {
    pub device: bool,
    pub blkdevname: bool,
    /// udm's `devname`: name every device that is not a udm device (a
    /// file by its path, a block device by its kernel name). dmsetup has
    /// no such tree option.
    pub devname: bool,
    pub active: bool,
    pub rw: bool,
    pub open: bool,
    pub uuid: bool,
    pub compact: bool,
    pub inverted: bool,
    pub truncate: bool,
    /// Output width; dmsetup uses 80, or the terminal's width minus 3.
    pub width: usize,
    pub symbols: Symbols,
}

impl TreeOptions {
    /// Parse the comma-separated options; `utf8` picks the default
    /// symbols (dmsetup checks the locale's codeset).
    pub fn parse(options: Option<&str>, utf8: bool, width: usize) -> Result<Self, String> {
        let mut t = TreeOptions {
            device: true,
            blkdevname: false,
            devname: false,
            active: false,
            rw: false,
            open: false,
            uuid: false,
            compact: false,
            inverted: false,
            truncate: true,
            width,
            symbols: if utf8 { UTF } else { ASCII },
        };
        for o in options.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
            match o {
                "active" => t.active = true,
                "ascii" => t.symbols = ASCII,
                "blkdevname" => t.blkdevname = true,
                "compact" => t.compact = true,
                "device" => t.device = true,
                "devname" => t.devname = true,
                "inverted" => t.inverted = true,
                "nodevice" => t.device = false,
                "notrunc" => t.truncate = false,
                "open" => t.open = true,
                "rw" => t.rw = true,
                "utf" => t.symbols = UTF,
                "uuid" => t.uuid = true,
                "vt100" => t.symbols = VT100,
                _ => return Err(format!("Tree options not recognised: {o}.")),
            }
        }
        Ok(t)
    }

    fn attributes(&self) -> bool {
        self.active || self.rw || self.open || self.uuid
    }

    fn compact_layout(&self) -> bool {
        self.compact && !self.attributes()
    }
}

const MAX_DEPTH: usize = 100;

/// The tree printer's output state: the column count and the truncation
/// at the width ("..." replaces what does not fit).
struct Out<'a> {
    buf: Vec<u8>,
    x: usize,
    last: u8,
    opts: &'a TreeOptions,
    width: [usize; MAX_DEPTH],
    more: [bool; MAX_DEPTH],
}

impl Out<'_> {
    fn byte(&mut self, c: u8) {
        let starts_char = c & 0xc0 != 0x80;
        if starts_char {
            self.x += 1;
        }
        if !self.opts.truncate {
            self.buf.push(c);
            return;
        }
        if self.x <= self.opts.width {
            self.buf.push(c);
        }
        if self.x == self.opts.width + 1 && starts_char {
            if self.last != 0 || c & 0x80 != 0 {
                self.buf.extend_from_slice(b"...");
            } else {
                self.last = c;
                self.x -= 1;
            }
        }
    }
    fn str(&mut self, s: &str) {
        for &b in s.as_bytes() {
            self.byte(b);
        }
    }
    fn newline(&mut self) {
        if self.last != 0 && self.x == self.opts.width {
            self.buf.push(self.last);
        }
        self.last = 0;
        self.buf.push(b'\n');
        self.x = 1;
    }
    fn prefix(&mut self, depth: usize) {
        let s = self.opts.symbols.0;
        for d in 0..depth {
            for _ in 0..self.width[d] + 1 {
                self.byte(b' ');
            }
            let sym = if d == depth - 1 {
                if self.more[depth] {
                    s[1]
                } else {
                    s[3]
                }
            } else if self.more[d + 1] {
                s[2]
            } else {
                s[0]
            };
            self.str(sym);
        }
    }
}

fn display_node(out: &mut Out, n: &Node, depth: usize, last: bool, has_children: bool) {
    let opts = out.opts;
    let name = match (&n.info, opts.devname) {
        (None, true) => n.blkdevname.clone().unwrap_or_default(),
        _ => n.name.clone(),
    };
    if depth + 2 > MAX_DEPTH || (name.is_empty() && !opts.device && !opts.blkdevname) {
        return;
    }
    let compact = opts.compact_layout();
    out.more[depth] = !last;
    out.width[depth] = 0;
    let first_on_line = out.x == 1;
    if !compact || first_on_line {
        out.prefix(depth);
    }
    let offset = out.x;
    if compact && !first_on_line {
        let s = opts.symbols.0;
        out.str(if out.more[depth] { s[5] } else { s[4] });
    }
    out.str(&name);
    if opts.blkdevname {
        if let Some(b) = &n.blkdevname {
            out.str(&format!(" <{b}>"));
        }
    }
    if opts.device {
        out.str(&format!(" ({}:{})", n.major, n.minor));
    }
    if let Some(info) = n.info.as_ref().filter(|_| opts.attributes()) {
        let mut items = Vec::new();
        if opts.active {
            items.push(
                if info.suspended {
                    "SUSPENDED"
                } else {
                    "ACTIVE"
                }
                .to_string(),
            );
        }
        if opts.rw {
            items.push(if info.read_only { "RO" } else { "RW" }.to_string());
        }
        if opts.open {
            items.push(info.open_count.max(0).to_string());
        }
        if opts.uuid {
            items.push(info.uuid.clone());
        }
        out.str(&format!(" [{}]", items.join(", ")));
    }
    if compact {
        out.width[depth] = out.x - offset;
    }
    if !compact || !has_children {
        out.newline();
    }
}

fn walk(out: &mut Out, g: &DepGraph, node: Link, depth: usize) {
    if depth >= MAX_DEPTH {
        return;
    }
    let inverted = out.opts.inverted;
    let children = if inverted {
        g.used_by(node)
    } else {
        g.uses(node)
    };
    let kids: Vec<usize> = children
        .iter()
        .filter_map(|l| match l {
            Link::Node(i) => Some(*i),
            Link::Root => None,
        })
        .collect();
    for (k, &i) in kids.iter().enumerate() {
        let has_children = g.num_children(Link::Node(i), inverted) > 0;
        display_node(out, &g.nodes[i], depth, k + 1 == kids.len(), has_children);
        if has_children {
            walk(out, g, Link::Node(i), depth + 1);
        }
    }
}

/// Draw the whole tree.
pub fn render(g: &DepGraph, opts: &TreeOptions) -> String {
    let mut out = Out {
        buf: Vec::new(),
        x: 1,
        last: 0,
        opts,
        width: [0; MAX_DEPTH],
        more: [false; MAX_DEPTH],
    };
    walk(&mut out, g, Link::Root, 0);
    String::from_utf8_lossy(&out.buf).into_owned()
}
