//! The command line: dmsetup's switches, accepted anywhere on the line
//! (getopt_long permutes too), plus udm's `--socket` and `--json`.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// Every switch udmsetup knows. Those without meaning for udm (udev, node
/// ownership, read-ahead) are accepted and ignored.
#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "udmsetup",
    disable_help_flag = true,
    disable_version_flag = true,
    infer_long_args = true
)]
pub struct Opts {
    /// The udmd control socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,

    #[arg(short = 'u', long, value_name = "UUID")]
    pub uuid: Option<String>,
    #[arg(short = 'j', long, value_name = "MAJOR", allow_negative_numbers = true)]
    pub major: Option<i64>,
    #[arg(short = 'm', long, value_name = "MINOR", allow_negative_numbers = true)]
    pub minor: Option<i64>,
    #[arg(short = 'r', long)]
    pub readonly: bool,
    #[arg(short = 'n', long)]
    pub notable: bool,
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    #[arg(long)]
    pub concise: bool,
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(long)]
    pub deferred: bool,
    #[arg(long)]
    pub retry: bool,
    #[arg(long)]
    pub noflush: bool,
    #[arg(long)]
    pub nolockfs: bool,
    #[arg(long)]
    pub inactive: bool,
    #[arg(long)]
    pub noopencount: bool,
    #[arg(long)]
    pub setuuid: bool,
    #[arg(long)]
    pub showkeys: bool,
    #[arg(long, value_name = "TYPE")]
    pub target: Option<String>,
    #[arg(long)]
    pub tree: bool,
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,

    #[arg(short = 'c', short_alias = 'C', long)]
    pub columns: bool,
    #[arg(short = 'o', long, value_name = "FIELDS")]
    pub options: Option<String>,
    #[arg(long)]
    pub noheadings: bool,
    #[arg(long, value_name = "SEP")]
    pub separator: Option<String>,

    #[arg(short = 'h', long)]
    pub help: bool,
    #[arg(long)]
    pub version: bool,

    // Meaningful in dmsetup, not supported here: refused with a message.
    #[arg(short = 'O', long, value_name = "KEYS")]
    pub sort: Option<String>,
    #[arg(short = 'S', long, value_name = "SELECTION")]
    pub select: Option<String>,
    #[arg(long, value_name = "COMMAND")]
    pub exec: Option<String>,
    #[arg(long, value_name = "N")]
    pub count: Option<String>,
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<String>,

    // Accepted and ignored: udev, device nodes, read-ahead, name mangling.
    #[arg(long)]
    pub noudevsync: bool,
    #[arg(long)]
    pub noudevrules: bool,
    #[arg(long)]
    pub verifyudev: bool,
    #[arg(long, value_name = "COOKIE")]
    pub udevcookie: Option<String>,
    #[arg(long)]
    pub checks: bool,
    #[arg(long, value_name = "SECTORS")]
    pub readahead: Option<String>,
    #[arg(long)]
    pub addnodeoncreate: bool,
    #[arg(long)]
    pub addnodeonresume: bool,
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[arg(short = 'U', long, value_name = "UID")]
    pub uid: Option<String>,
    #[arg(short = 'G', long, value_name = "GID")]
    pub gid: Option<String>,
    #[arg(short = 'M', long, value_name = "MODE")]
    pub mode: Option<String>,
    #[arg(long, value_name = "MODE")]
    pub manglename: Option<String>,
    #[arg(long)]
    pub unbuffered: bool,

    /// The command and its arguments.
    #[arg(num_args = 0.., value_name = "ARGS")]
    pub args: Vec<String>,
}

impl Opts {
    /// The device was given as `-u` or `-j/-m` rather than by name.
    pub fn device_by_option(&self) -> bool {
        self.uuid.is_some() || self.major.is_some()
    }

    /// The first switch udmsetup refuses, for the error message.
    pub fn unsupported(&self) -> Option<&'static str> {
        [
            (self.sort.is_some(), "-O/--sort"),
            (self.select.is_some(), "-S/--select"),
            (self.count.is_some(), "--count"),
            (self.interval.is_some(), "--interval"),
        ]
        .into_iter()
        .find(|(set, _)| *set)
        .map(|(_, name)| name)
    }
}
