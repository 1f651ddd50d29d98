//! udmd as a process: start-up refusals (bad flags, an untrusted socket
//! directory), the demo banner's commands, and shutdown that completes and
//! cleans up whatever happened to its socket files and its stdout/stderr.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, is_fuse_mount};

/// Generous bound for anything the daemon does (the CI machine is busy).
const BOUND: Duration = Duration::from_secs(30);

/// A udmd we spawned; killed (and its mapper dir detached) if a test fails.
struct Udmd {
    child: Child,
    mapper: Option<PathBuf>,
}

impl Udmd {
    fn spawn(mut cmd: Command) -> Udmd {
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn udmd");
        Udmd {
            child,
            mapper: None,
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Wait (bounded) for the daemon to exit; None if it did not.
    fn wait(&mut self) -> Option<ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if t0.elapsed() > BOUND {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) for the daemon to exit, killing it if it does not, and
    /// return how it exited (None: it had to be killed) and its piped stderr.
    fn exit_and_stderr(&mut self) -> (Option<ExitStatus>, String) {
        let st = self.wait();
        if st.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mut err = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        (st, err)
    }

    /// Wait until `ready` holds, failing if the daemon exits or takes too long.
    fn wait_until(&mut self, what: &str, ready: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !ready() {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("udmd exited ({s}) before {what}");
            }
            assert!(t0.elapsed() < BOUND, "udmd: no {what} after {BOUND:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Udmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(m) = &self.mapper {
            if is_fuse_mount(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

fn udmd() -> Command {
    let mut c = Command::new(bin("udmd"));
    c.env_remove("UDM_SOCKET")
        .env_remove("UDM_LOG")
        .env_remove("XDG_RUNTIME_DIR");
    c
}

fn udmsetup(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("udmsetup"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run udmsetup")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A daemon on `dir/control` and `dir/nbd.sock`, logging at info.
fn plain(dir: &Path) -> Command {
    let mut c = udmd();
    c.arg("--socket")
        .arg(dir.join("control"))
        .arg("--nbd")
        .arg(format!("unix:{}", dir.join("nbd.sock").display()))
        .arg("--log")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Start the demo in `dir` with the given stdout/stderr.
fn demo(dir: &Path, out: Stdio, err: Stdio) -> Udmd {
    let mut c = udmd();
    c.arg("--demo").arg(dir).stdout(out).stderr(err);
    let mut d = Udmd::spawn(c);
    d.mapper = Some(dir.join("mapper"));
    d
}

/// The demo's devices exist (it prints its banner right after building them).
fn demo_built(dir: &Path) -> bool {
    let s = dir.join("control");
    s.exists() && text(&udmsetup(&s, &["ls"]).stdout).contains("demo-mixed")
}

fn assert_clean_exit(d: &mut Udmd, what: &str, sockets: &[PathBuf]) {
    let st = d.wait();
    assert_eq!(
        st.map(|s| s.code()),
        Some(Some(0)),
        "{what}: udmd must exit 0 within {BOUND:?} (got {st:?})"
    );
    for s in sockets {
        assert!(!s.exists(), "{what}: udmd left {}", s.display());
    }
}

// ---- #11.4: shutdown does not depend on the socket path ----

#[test]
fn sigterm_completes_when_the_control_socket_file_is_gone() {
    let t = tempfile::tempdir().unwrap();
    let ctl = t.path().join("control");
    let mut d = Udmd::spawn(plain(t.path()));
    d.wait_until("control socket", || ctl.exists());
    std::fs::remove_file(&ctl).unwrap();
    d.signal(libc::SIGTERM);
    assert_clean_exit(&mut d, "socket deleted", &[t.path().join("nbd.sock")]);
}

#[test]
fn sigterm_completes_and_spares_a_socket_that_replaced_ours() {
    let t = tempfile::tempdir().unwrap();
    let ctl = t.path().join("control");
    let mut d = Udmd::spawn(plain(t.path()));
    d.wait_until("control socket", || ctl.exists());
    std::fs::remove_file(&ctl).unwrap();
    // Another server now owns the path; udmd must neither need it nor delete it.
    let _theirs = UnixListener::bind(&ctl).unwrap();
    d.signal(libc::SIGTERM);
    assert_clean_exit(&mut d, "socket replaced", &[t.path().join("nbd.sock")]);
    let m = std::fs::symlink_metadata(&ctl);
    assert!(
        m.is_ok(),
        "udmd deleted {}, a socket that was no longer its own",
        ctl.display()
    );
}

// ---- #11.7: a closed stdout or stderr never kills udmd ----

#[test]
fn ctrl_c_after_the_log_pipe_closed_exits_cleanly() {
    // `udmd --demo 2>&1 | tee log`, then Ctrl-C: tee dies first.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let (r, w) = std::io::pipe().unwrap();
    let mut d = demo(&dir, w.try_clone().unwrap().into(), w.into());
    let mut banner = String::new();
    let mut r = BufReader::new(r);
    while !banner.contains("Ctrl-C") {
        let mut line = String::new();
        assert_ne!(r.read_line(&mut line).unwrap(), 0, "no banner: {banner}");
        banner.push_str(&line);
    }
    drop(r);
    d.signal(libc::SIGINT);
    assert_clean_exit(
        &mut d,
        "log pipe closed",
        &[dir.join("control"), dir.join("nbd.sock")],
    );
}

#[test]
fn a_stdout_closed_at_start_does_not_stop_the_demo() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    let mut d = demo(&dir, w.into(), Stdio::null());
    d.wait_until("demo devices", || demo_built(&dir));
    d.signal(libc::SIGTERM);
    assert_clean_exit(
        &mut d,
        "stdout closed",
        &[dir.join("control"), dir.join("nbd.sock")],
    );
}

#[test]
fn a_stderr_closed_before_shutdown_does_not_abort() {
    let t = tempfile::tempdir().unwrap();
    let (r, w) = std::io::pipe().unwrap();
    let mut c = plain(t.path());
    c.stdout(Stdio::null()).stderr(w);
    let mut d = Udmd::spawn(c);
    let (ctl, nbd) = (t.path().join("control"), t.path().join("nbd.sock"));
    d.wait_until("sockets", || ctl.exists() && nbd.exists());
    drop(r);
    d.signal(libc::SIGTERM);
    assert_clean_exit(&mut d, "stderr closed", &[ctl, nbd]);
}

// ---- #11.8: the default socket directory must be the user's own ----

/// udmd and udmsetup with the default socket under `runtime`/udm.
fn on_default_path(runtime: &Path, mut c: Command) -> Command {
    c.env("XDG_RUNTIME_DIR", runtime);
    c
}

fn refused(runtime: &Path, want: &str) {
    let mut c = on_default_path(runtime, udmd());
    c.args(["--log", "warn"]).stdout(Stdio::null());
    c.stderr(Stdio::piped());
    let mut d = Udmd::spawn(c);
    let (st, err) = d.exit_and_stderr();
    assert!(
        st.is_some_and(|s| s.code() == Some(1)),
        "udmd must refuse the socket dir ({want}), got {st:?}: {err}"
    );
    assert!(err.contains(want), "udmd: want {want:?} in {err}");
    assert!(!runtime.join("udm/control").exists());
    let o = on_default_path(runtime, Command::new(bin("udmsetup")))
        .env_remove("UDM_SOCKET")
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains(want), "udmsetup: want {want:?} in {e}");
}

#[test]
fn an_open_socket_dir_is_refused_by_both_binaries() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("udm");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(t.path(), &format!("{} has mode 0777", d.display()));
}

#[test]
fn a_symlinked_socket_dir_is_refused_by_both_binaries() {
    let t = tempfile::tempdir().unwrap();
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&theirs, t.path().join("udm")).unwrap();
    refused(
        t.path(),
        &format!(
            "{} is a symlink (to {})",
            t.path().join("udm").display(),
            theirs.display()
        ),
    );
}

#[test]
fn a_socket_dir_owned_by_another_user_is_refused_by_both_binaries() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0
        && !udm_testkit::unavailable("chown to another uid needs root")
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("udm");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    refused(t.path(), "is owned by uid 65534, not by you (uid 0)");
}

#[test]
fn a_missing_socket_dir_is_made_private_and_used_by_both_binaries() {
    let t = tempfile::tempdir().unwrap();
    let mut c = on_default_path(t.path(), udmd());
    c.args(["--log", "warn"]);
    let mut d = Udmd::spawn(c);
    let ctl = t.path().join("udm/control");
    d.wait_until("control socket", || ctl.exists());
    let m = std::fs::symlink_metadata(t.path().join("udm")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o700);
    let o = on_default_path(t.path(), Command::new(bin("udmsetup")))
        .env_remove("UDM_SOCKET")
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "No devices found\n", "{}", text(&o.stderr));
    d.signal(libc::SIGTERM);
    assert_clean_exit(&mut d, "default dir", &[ctl]);
}

// ---- #11.21: start-up refusals, log colours, .gitignore ----

fn refuses_to_start(args: &[&str], env: &[(&str, &str)], want: &str) {
    let t = tempfile::tempdir().unwrap();
    let mut c = udmd();
    c.arg("--socket").arg(t.path().join("control")).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut d = Udmd::spawn(c);
    let (st, err) = d.exit_and_stderr();
    assert!(
        st.is_some_and(|s| !s.success()),
        "udmd {args:?} {env:?} must refuse to start, got {st:?}: {err}"
    );
    assert!(
        err.contains(want),
        "udmd {args:?} {env:?}: want {want:?} in {err}"
    );
    assert!(!t.path().join("control").exists());
}

#[test]
fn a_major_the_kernel_cannot_have_is_refused() {
    for m in ["999999", "4096", "512", "0"] {
        refuses_to_start(&["--major", m], &[], "a block device major is 1 to 511");
    }
}

#[test]
fn a_major_in_range_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let ctl = t.path().join("control");
    let mut c = udmd();
    c.arg("--socket")
        .arg(&ctl)
        .args(["--major", "511", "--log", "warn"]);
    let mut d = Udmd::spawn(c);
    d.wait_until("control socket", || ctl.exists());
    assert!(udmsetup(&ctl, &["create", "m", "--notable"])
        .status
        .success());
    assert_eq!(text(&udmsetup(&ctl, &["ls"]).stdout), "m\t(511:0)\n");
}

#[test]
fn an_invalid_log_filter_is_refused() {
    refuses_to_start(&["--log", "frob==="], &[], "--log frob===: ");
    refuses_to_start(&[], &[("UDM_LOG", "frob===")], "--log frob===: ");
}

#[test]
fn logs_to_a_file_have_no_colours() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("log");
    let mut c = plain(t.path());
    c.stderr(std::fs::File::create(&log).unwrap());
    let mut d = Udmd::spawn(c);
    d.wait_until("control socket", || t.path().join("control").exists());
    d.signal(libc::SIGTERM);
    assert_clean_exit(&mut d, "log to file", &[]);
    let l = std::fs::read_to_string(&log).unwrap();
    assert!(l.contains("control socket listening"), "{l}");
    assert!(!l.contains('\x1b'), "escape sequences in a log file: {l:?}");
}

#[test]
fn the_demo_directory_is_ignored_by_git() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["check-ignore", "--no-index", "-v"])
        .arg(format!("{}/disk0.img", udmd::demo::DEFAULT_DIR))
        .output()
        .expect("git");
    assert!(
        o.status.success(),
        "git does not ignore the demo's files ({}/): {}",
        udmd::demo::DEFAULT_DIR,
        text(&o.stderr)
    );
}

// ---- #11.20: every command the demo banner prints works when pasted ----

#[test]
fn every_command_the_demo_banner_prints_works() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let mut c = udmd();
    // The banner's commands are run from the directory udmd was started in.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = std::fs::canonicalize(root).unwrap();
    c.current_dir(&root)
        .arg("--demo")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut d = Udmd::spawn(c);
    d.mapper = Some(dir.join("mapper"));
    let mut out = BufReader::new(d.child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Ctrl-C") {
        let mut line = String::new();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "no banner: {banner}");
        banner.push_str(&line);
    }
    let cmds: Vec<&str> = banner
        .lines()
        .skip_while(|l| !l.starts_with("In another terminal"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    let (export, cmds) = cmds.split_first().expect("banner commands");
    assert!(export.starts_with("export UDM_SOCKET="), "{banner}");
    let mut want: Vec<(&str, &str)> = vec![
        ("udmsetup ls", "demo-striped\t(253:0)"),
        ("udmsetup table", "demo-striped: 0 1228800 striped 3 128 "),
        ("udmsetup status demo-striped", "0 1228800 striped 3 "),
        ("nbdinfo ", "export-size: 629145600"),
    ];
    if std::path::Path::new("/dev/fuse").exists() {
        want.push(("ls -l ", "demo-striped"));
    }
    for (prefix, output) in &want {
        let Some(cmd) = cmds.iter().find(|c| c.contains(prefix)) else {
            panic!("the banner has no `{prefix}` command: {banner}");
        };
        if prefix.starts_with("nbdinfo") && !common::require("nbdinfo") {
            continue;
        }
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("{export}\n{cmd}"))
            .current_dir(&root)
            .env_remove("UDM_SOCKET")
            .output()
            .unwrap();
        assert!(
            o.status.success() && text(&o.stdout).contains(output),
            "`{cmd}` from the banner: want {output:?} in its output, got {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    d.signal(libc::SIGTERM);
    assert_clean_exit(&mut d, "demo", &[dir.join("control")]);
}
