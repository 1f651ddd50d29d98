//! udmd: the udm daemon. Serves the device-mapper control socket and exports
//! every device over NBD and in a FUSE mapper directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use udm_core::{Engine, EngineConfig, IoEngine};
use udmd::exports;
use udmd::server::ControlServer;

#[cfg(feature = "ublk")]
mod ublk;

#[derive(Parser, Debug)]
#[command(
    name = "udmd",
    version,
    about = "udm: the Linux device-mapper in user space"
)]
struct Args {
    /// Control socket path [default: $UDM_SOCKET, $XDG_RUNTIME_DIR/udm/control or /tmp/udm-$UID/control]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Serve NBD on `unix:PATH`, `tcp:PORT` (loopback), or `tcp:HOST:PORT`; repeatable.
    #[arg(long = "nbd", value_name = "ADDR")]
    nbd: Vec<String>,
    /// Most NBD connections served at once; more are closed at once, unanswered.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    nbd_max_connections: u32,
    /// Seconds an NBD client may take to choose an export before it is dropped (0: no limit).
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    nbd_handshake_timeout: u64,
    /// MiB of request buffers one NBD connection may hold [default: the least that
    /// serves a 32 MiB request: 74]; larger requests wait for room.
    #[arg(long, value_name = "MIB")]
    nbd_buffer_budget: Option<usize>,
    /// Mount a FUSE directory where each device is a file.
    #[arg(long, value_name = "DIR")]
    mapper_dir: Option<PathBuf>,
    /// Run the demo stack on files under DIR (socket, NBD and mapper dir go there too unless given).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = udmd::demo::DEFAULT_DIR)]
    demo: Option<PathBuf>,
    /// Export each device with a live table as /dev/ublkbN (N = its minor when free;
    /// `<socket dir>/ublk-map` lists them). Needs ublk_drv and a build with `--features ublk`.
    #[arg(long)]
    ublk: bool,
    /// Major number reported for udm devices (1 to 511, as the kernel allows a block major).
    #[arg(long, default_value_t = 253, value_parser = parse_major)]
    major: u32,
    /// Open underlying files and block devices with O_DIRECT.
    #[arg(long)]
    direct_io: bool,
    /// How underlying files and block devices are read and written: `sync`
    /// (pread/pwrite) or `uring` (io_uring; sync, with a warning, where the kernel
    /// refuses it).
    #[arg(long, value_name = "ENGINE", env = "UDM_IO_ENGINE", default_value_t = IoEngine::Sync)]
    io_engine: IoEngine,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `udm_core=debug`.
    #[arg(long, env = "UDM_LOG", default_value = "info")]
    log: String,
}

/// The kernel's register_blkdev takes a block major in 1..BLKDEV_MAJOR_MAX (512);
/// dm asks for a dynamic one, in practice 253 or 254. Major 0 is the "unnamed"
/// major under which udm lists plain files, so it would make devices look like files.
fn parse_major(s: &str) -> Result<u32, String> {
    const RANGE: &str = "a block device major is 1 to 511 (the kernel's register_blkdev \
                         refuses 512 and above; 0 is the unnamed major udm uses for files; \
                         dm's own is usually 253)";
    match s.parse::<u32>() {
        Ok(m) if (1..512).contains(&m) => Ok(m),
        _ => Err(format!("{s}: {RANGE}")),
    }
}

/// Block the termination signals in every thread; the main thread waits for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, zero-initialised set; pthread_sigmask
    // on the calling thread before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is a valid, initialised signal set and `sig` a valid out-pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    udmd::stdio::init_log(udmd::stdio::log_filter(&args.log)?);
    let sigs = block_signals();

    let demo_dir = args
        .demo
        .as_ref()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    // A path the user names is used as given; the default directory is checked.
    let socket = match args
        .socket
        .clone()
        .or_else(|| demo_dir.as_ref().map(|d| d.join("control")))
    {
        Some(p) => p,
        None => udm_ioctl::rundir::server_socket_path()?,
    };
    let mut nbd = args.nbd.clone();
    if nbd.is_empty() {
        if let Some(d) = &demo_dir {
            nbd.push(format!("unix:{}", d.join("nbd.sock").display()));
        }
    }
    let mapper_dir = args.mapper_dir.clone().or_else(|| {
        demo_dir
            .as_ref()
            .filter(|_| Path::new("/dev/fuse").exists())
            .map(|d| d.join("mapper"))
    });

    let config = EngineConfig {
        major: args.major,
        direct_io: args.direct_io,
        mapper_dir: mapper_dir.clone(),
        io_engine: args.io_engine,
    };
    let engine = Engine::new(udm_targets::registry(), config);
    tracing::info!(io_engine = %engine.io_engine(), "underlying I/O engine");
    #[cfg(feature = "ublk")]
    let ublk_exports = if args.ublk {
        Some(ublk::start(&engine, ublk::map_path(&socket)).context("--ublk")?)
    } else {
        None
    };
    #[cfg(not(feature = "ublk"))]
    if args.ublk {
        anyhow::bail!(
            "--ublk: this udmd was built without ublk support (cargo build --features ublk)"
        );
    }

    let control = ControlServer::start(engine.clone(), &socket)
        .with_context(|| format!("cannot serve the control socket {}", socket.display()))?;

    let server = if nbd.is_empty() {
        None
    } else {
        Some(exports::start_nbd(
            &engine,
            udm_nbd::ServerConfig {
                max_connections: args.nbd_max_connections as usize,
                handshake_timeout: std::time::Duration::from_secs(args.nbd_handshake_timeout),
                buffer_budget: args.nbd_buffer_budget.unwrap_or(0).saturating_mul(1 << 20),
                ..udm_nbd::ServerConfig::default()
            },
        ))
    };
    if let Some(server) = &server {
        for addr in &nbd {
            if let Some(path) = addr.strip_prefix("unix:") {
                server
                    .listen_unix(Path::new(path))
                    .with_context(|| format!("cannot listen on {addr}"))?;
                tracing::info!(socket = path, "NBD listening");
            } else if let Some(hp) = addr.strip_prefix("tcp:") {
                let hp = if hp.contains(':') {
                    hp.to_string()
                } else {
                    format!("127.0.0.1:{hp}")
                };
                let bound = server
                    .listen_tcp(&hp)
                    .with_context(|| format!("cannot listen on {addr}"))?;
                tracing::info!(%bound, "NBD listening");
            } else {
                anyhow::bail!("--nbd {addr}: expected unix:PATH, tcp:PORT or tcp:HOST:PORT");
            }
        }
    }

    let mount = match &mapper_dir {
        Some(dir) => {
            let source = std::sync::Arc::new(exports::FuseSource::new(engine.clone()));
            let mounted = udm_fuse::create_mount_point(dir)
                .and_then(|()| udm_fuse::mount(dir, source, udm_fuse::MountOptions::default()));
            match mounted {
                Ok(m) => {
                    tracing::info!(dir = %dir.display(), "mapper directory mounted");
                    Some(m)
                }
                // The demo's mapper directory is a convenience: without FUSE access
                // (e.g. not root) the demo runs with NBD only.
                Err(e) if args.mapper_dir.is_none() => {
                    tracing::warn!(dir = %dir.display(), "no mapper directory for the demo: {e}");
                    None
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot mount the mapper directory {}",
                        dir.display()
                    )))
                }
            }
        }
        None => None,
    };

    if let Some(dir) = &demo_dir {
        let made = udmd::demo::build(&engine, dir)?;
        let nbd_unix = nbd
            .iter()
            .find_map(|a| a.strip_prefix("unix:"))
            .map(Path::new);
        udmd::stdio::say(&udmd::demo::banner(&udmd::demo::Reach {
            dir,
            devices: &made,
            socket: &socket,
            nbd_unix,
            mapper_dir: mapper_dir.as_deref().filter(|_| mount.is_some()),
        }));
    }

    let sig = wait_for_signal(&sigs);
    tracing::info!(signal = sig, "shutting down");
    // Held I/O of suspended devices fails now, so that every export can close.
    engine.shutdown();
    #[cfg(feature = "ublk")]
    drop(ublk_exports);
    drop(mount);
    if let Some(s) = server {
        s.shutdown();
    }
    drop(control);
    Ok(())
}
