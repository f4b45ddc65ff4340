//! The per-volume daemon (`uvdo start` re-executes `uvdo` with the hidden `daemon`
//! subcommand): takes ownership of the device, runs a force rebuild if asked, opens the
//! volume (crash recovery runs inside open), serves it over NBD and answers the control
//! socket until told to stop or signalled (SIGINT, SIGTERM), then drains, closes the volume
//! cleanly and gives ownership up.
//!
//! Detached, it tells the `start` that launched it how it goes through its stdout pipe, one
//! line each: `LOG <text>`, `PROGRESS <phase> <done> <total>`, then `READY <uri>` or `FAIL
//! <exit code> <text>`; after that it writes only to its log file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};
use uvdo::{OpenOptions as VolumeOptions, Owner, RebuildProgress, Volume, WritePolicy};
use uvdo_format::BlockCount;
use uvdo_io::open::{OpenOptions as StoreOptions, open_store};
use uvdo_nbd::{Listener, ServeConfig, serve};

use crate::control::{Answer, LINE_BYTES_MAX, Request};
use crate::error::{CliError, CliResult, ExitStatus};
use crate::owner::{self, OwnerRecord};
use crate::registry::{RegistryFile, VolumeEntry};
use crate::size::format_size;
use crate::stats::StatsView;

/// How often the control thread looks at the stop flag while nobody connects.
const CONTROL_POLL: Duration = Duration::from_millis(100);

/// What the daemon is asked to do.
#[derive(Clone, Debug)]
pub struct DaemonArgs {
    /// The registry.
    pub registry: RegistryFile,
    /// The volume.
    pub name: String,
    /// Rebuild every reference count before opening.
    pub force_rebuild: bool,
    /// Take over from an owner that died.
    pub take_over: bool,
    /// Stay attached: print the URI on stdout and log to stderr.
    pub foreground: bool,
}

/// Where the daemon's messages go.
#[derive(Debug)]
pub struct Log {
    file: Mutex<Option<File>>,
    /// Detached and not ready yet: messages also go to `start` through stdout.
    pipe: AtomicBool,
    foreground: bool,
    name: String,
}

impl Log {
    fn new(path: &Path, name: &str, foreground: bool) -> Self {
        let file = OpenOptions::new().create(true).append(true).open(path).ok();
        Self {
            file: Mutex::new(file),
            pipe: AtomicBool::new(!foreground),
            foreground,
            name: name.to_owned(),
        }
    }

    /// Logs `text` to the file, and to stderr or the start pipe.
    pub fn info(&self, text: &str) {
        let line = format!(
            "{} uvdo[{}] {}: {text}\n",
            crate::time::rfc3339(crate::time::now_s()),
            std::process::id(),
            self.name
        );
        if let Ok(mut file) = self.file.lock()
            && let Some(file) = file.as_mut()
        {
            let _ = file.write_all(line.as_bytes());
        }
        if self.foreground {
            eprint!("{line}");
        }
        self.pipe(&format!("LOG {text}"));
    }

    fn pipe(&self, line: &str) {
        if self.pipe.load(Ordering::Acquire) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn ready(&self, uri: &str) {
        self.pipe(&format!("READY {uri}"));
        self.pipe.store(false, Ordering::Release);
    }

    /// Reports a failure to `start` (detached) and logs it.
    pub fn fail(&self, e: &CliError) {
        self.info(&format!("ERROR - {}", e.message));
        self.pipe(&format!("FAIL {} {}", e.status.code(), e.message));
        self.pipe.store(false, Ordering::Release);
    }
}

/// What the control thread tells the main thread.
enum Event {
    Stop(Option<UnixStream>),
}

/// Runs the daemon until it is stopped.
///
/// # Errors
///
/// Any failure before the volume is served (also reported through the start pipe), or a
/// failed close.
pub fn run(args: &DaemonArgs) -> CliResult<()> {
    let paths = args.registry.run_paths(&args.name);
    let log = Arc::new(Log::new(&paths.log, &args.name, args.foreground));
    let result = run_logged(args, &log);
    if let Err(e) = &result {
        log.fail(e);
    }
    result
}

fn run_logged(args: &DaemonArgs, log: &Arc<Log>) -> CliResult<()> {
    // Before any thread starts, so that every thread inherits the mask.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .map_err(|e| CliError::system(format!("blocking signals: {e}")))?;
    if !args.foreground {
        // Detach from the terminal's session; start already made us a child of its own.
        let _ = nix::unistd::setsid();
    }
    let registry = args.registry.load()?;
    let entry = registry.get(&args.name)?.clone();
    entry.check_no_incomplete_create()?;
    let paths = args.registry.run_paths(&args.name);
    let record = OwnerRecord {
        pid: std::process::id(),
        name: args.name.clone(),
        registry: args.registry.path().to_path_buf(),
        host: nix::unistd::gethostname()
            .map_or_else(|_| "localhost".into(), |h| h.to_string_lossy().into_owned()),
        since_s: crate::time::now_s(),
    };
    let (ownership, previous) = owner::claim(&entry.device, &record, args.take_over)?;
    if let Some(previous) = previous {
        log.info(&format!(
            "taking over from {}, which ended without stopping the volume",
            previous.describe()
        ));
    }
    let volume = Arc::new(open_volume(args, &entry, log)?);
    record_owner(&volume, &record, log);
    let listener = match entry.tcp_port {
        Some(port) => Listener::bind_tcp(port),
        None => Listener::bind_unix(&paths.nbd_socket),
    }
    .map_err(|e| CliError::system(format!("cannot listen for NBD clients: {e}")))?;
    let server = serve(Arc::clone(&volume), listener, ServeConfig::default())
        .map_err(|e| CliError::system(format!("cannot serve NBD: {e}")))?;
    let uri = server.uri().unwrap_or("nbd").to_owned();
    let control = bind_private(&paths.control_socket)?;
    std::fs::write(&paths.pid, format!("{}\n", std::process::id()))
        .map_err(|e| CliError::system(format!("cannot write {}: {e}", paths.pid.display())))?;
    let (events, inbox) = mpsc::channel();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let control_thread = {
        let ctx = Control {
            volume: Arc::clone(&volume),
            log: Arc::clone(log),
            uri: uri.clone(),
            device: entry.device.clone(),
            started_s: record.since_s,
        };
        let (stop_flag, events) = (Arc::clone(&stop_flag), events.clone());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || ctx.serve(&control, &stop_flag, &events))
            .map_err(|e| CliError::system(format!("cannot start the control thread: {e}")))?
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.wait().is_ok() {
                let _ = events.send(Event::Stop(None));
            }
        })
        .map_err(|e| CliError::system(format!("cannot start the signal thread: {e}")))?;
    log.info(&format!("serving at {uri}"));
    if args.foreground {
        println!("{uri}");
    }
    log.ready(&uri);
    let requester = match inbox.recv() {
        Ok(Event::Stop(requester)) => requester,
        Err(_) => None,
    };
    stop_flag.store(true, Ordering::Release);
    let _ = control_thread.join();
    log.info("stopping: draining NBD clients");
    server.shutdown();
    let volume = Arc::into_inner(volume)
        .ok_or_else(|| CliError::system("the volume is still shared after shutdown"))?;
    if volume.owner().is_some()
        && let Err(e) = volume.set_owner(None)
    {
        log.info(&format!(
            "cannot clear the owner record in the super block: {e}"
        ));
    }
    let closed = volume
        .close()
        .map_err(|e| CliError::volume("closing the volume", &e));
    let _ = std::fs::remove_file(&paths.control_socket);
    let _ = std::fs::remove_file(&paths.pid);
    let answer = match &closed {
        Ok(()) => {
            ownership.release()?;
            log.info("stopped cleanly");
            Answer::ok(json!("stopped"))
        }
        Err(e) => {
            log.info(&format!("ERROR - {e}"));
            Answer::err(e)
        }
    };
    if let Some(mut stream) = requester {
        let _ = writeln!(
            stream,
            "{}",
            serde_json::to_string(&answer).unwrap_or_default()
        );
    }
    closed
}

fn open_volume(args: &DaemonArgs, entry: &VolumeEntry, log: &Log) -> CliResult<Volume> {
    let device = &entry.device;
    let store = open_store(device, &StoreOptions::default())
        .map_err(|e| CliError::system(format!("cannot open {}: {e}", device.display())))?;
    let stored = crate::offline::read(device)?;
    if args.force_rebuild {
        log.info("force rebuild: recounting every reference from the block map");
        let mut last = None;
        let report = Volume::force_rebuild(Arc::clone(&store), &mut |p: RebuildProgress| {
            let step = (p.phase.name(), p.total, p.done * 20 / p.total.max(1));
            if last != Some(step) || p.done == p.total {
                last = Some(step);
                log.pipe(&format!(
                    "PROGRESS {} {} {}",
                    p.phase.name(),
                    p.done,
                    p.total
                ));
                if args.foreground {
                    eprintln!("{}: {}/{}", p.phase.name(), p.done, p.total);
                }
            }
        })
        .map_err(|e| CliError::volume("force rebuild", &e))?;
        log.info(&format!(
            "force rebuild done in {:.1} s: {} references counted, {} mappings dropped, {} \
             logical blocks lost, {} journal entries replayed",
            report.duration.as_secs_f64(),
            report.references_counted,
            report.mappings_dropped.total(),
            report.lbns_lost,
            report.journal_entries_replayed
        ));
    }
    log.info(&format!(
        "opening {} (state {}, mode {})",
        device.display(),
        stored.super_block.state,
        stored.super_block.mode
    ));
    // `modify --blockMapCacheSize` applies here; the volume keeps its own value otherwise.
    let cache_pages = crate::size::parse_size(&entry.block_map_cache_size, false)
        .ok()
        .and_then(|bytes| u32::try_from(bytes / uvdo_format::BLOCK_SIZE as u64).ok())
        .filter(|&pages| pages != stored.super_block.block_map_cache_pages && pages > 0);
    let options = VolumeOptions {
        block_map_cache_pages: cache_pages,
        ..VolumeOptions::default()
    };
    let volume =
        Volume::open(store, &options).map_err(|e| CliError::volume("opening the volume", &e))?;
    if let Some(r) = volume.last_recovery() {
        log.info(&format!(
            "recovered after an unclean shutdown: {} journal entries replayed (blocks {} to \
             {})",
            r.entries_replayed, r.journal_head, r.journal_end
        ));
    }
    let mode = volume.operating_mode();
    log.info(&format!("operating mode {mode}"));
    let wanted: WritePolicy = entry
        .write_policy
        .parse()
        .map_err(|e| CliError::user(format!("write policy in the registry: {e}")))?;
    if wanted != stored.super_block.write_policy && mode != uvdo::OperatingMode::ReadOnly {
        volume
            .set_write_policy(wanted, None)
            .map_err(|e| CliError::volume("setting the write policy", &e))?;
    }
    log.info(&format!("write policy {}", volume.write_policy().name()));
    if mode != uvdo::OperatingMode::ReadOnly {
        // `enable/disableDeduplication` and `...Compression` on a stopped volume apply here.
        let dedupe = entry.deduplication == "enabled";
        if dedupe != volume.deduplication_enabled() {
            volume
                .set_deduplication(dedupe)
                .map_err(|e| CliError::volume("setting deduplication", &e))?;
        }
        let compression = entry.compression == "enabled";
        if compression != volume.compression_enabled() {
            volume
                .set_compression(compression)
                .map_err(|e| CliError::volume("setting compression", &e))?;
        }
    }
    log.info(&format!(
        "deduplication {}",
        if volume.deduplication_enabled() {
            "enabled"
        } else {
            "disabled"
        }
    ));
    Ok(volume)
}

/// Records the daemon as the volume's owner in its super block too (the lock file beside the
/// device is what enforces exclusivity). A read-only volume writes nothing: logged, not fatal.
fn record_owner(volume: &Volume, record: &OwnerRecord, log: &Log) {
    use uvdo_format::super_block::{HOST_BYTES_MAX, truncated};
    let host = truncated(&record.host, HOST_BYTES_MAX);
    let owner = Owner {
        pid: record.pid,
        since_s: record.since_s,
        host: host.to_owned(),
    };
    if let Err(e) = volume.set_owner(Some(owner)) {
        log.info(&format!("owner not recorded in the super block: {e}"));
    }
}

/// The current size of the device at `path` in bytes (a regular file's length, a block
/// device's size): what `growPhysical` grows into.
fn device_bytes(path: &Path) -> CliResult<u64> {
    use std::io::{Seek, SeekFrom};
    let fail = |e: std::io::Error| {
        CliError::system(format!("cannot read the size of {}: {e}", path.display()))
    };
    let mut file = File::open(path).map_err(fail)?;
    file.seek(SeekFrom::End(0)).map_err(fail)
}

/// VDO's refusals of a grow from `old` to `new` bytes (exit 7).
fn check_growth(old: u64, new: u64) -> CliResult<()> {
    if new < old {
        return Err(CliError::user(format!(
            "Can't shrink a VDO volume (old size {})",
            format_size(old)
        )));
    }
    if new == old {
        return Err(CliError::user(
            "Can't grow a VDO volume by less than 4096 bytes",
        ));
    }
    Ok(())
}

/// Binds a Unix socket that is never reachable with wider permissions than 0600: bound in a
/// private directory, then renamed into place.
fn bind_private(path: &Path) -> CliResult<UnixListener> {
    let fail = |e: std::io::Error| {
        CliError::system(format!(
            "cannot bind the control socket {}: {e}",
            path.display()
        ))
    };
    let _ = std::fs::remove_file(path);
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let private: PathBuf = parent.join(format!(".uvdo-control-{}.d", std::process::id()));
    std::fs::create_dir(&private).map_err(fail)?;
    let staged = private.join("sock");
    let result = std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
        .and_then(|()| UnixListener::bind(&staged))
        .and_then(|l| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, path)?;
            l.set_nonblocking(true)?;
            Ok(l)
        });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result.map_err(fail)
}

/// The control thread's view of the daemon.
struct Control {
    volume: Arc<Volume>,
    log: Arc<Log>,
    uri: String,
    device: PathBuf,
    started_s: u64,
}

impl Control {
    fn serve(&self, listener: &UnixListener, stop: &AtomicBool, events: &mpsc::Sender<Event>) {
        while !stop.load(Ordering::Acquire) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(CONTROL_POLL);
                    continue;
                }
                Err(e) => {
                    self.log.info(&format!("control socket: {e}"));
                    std::thread::sleep(CONTROL_POLL);
                    continue;
                }
            };
            if self.session(stream, events) {
                return;
            }
        }
    }

    /// Answers one request; true when it was a stop (handed to the main thread).
    fn session(&self, stream: UnixStream, events: &mpsc::Sender<Event>) -> bool {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(crate::control::ANSWER_WAIT));
        let Ok(reader_stream) = stream.try_clone() else {
            return false;
        };
        let mut reader = BufReader::new(std::io::Read::take(reader_stream, LINE_BYTES_MAX));
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return false;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Stop) => {
                self.log.info("stop requested on the control socket");
                let _ = events.send(Event::Stop(Some(stream)));
                return true;
            }
            Ok(request) => self.handle(&request),
            Err(e) => Err(CliError::usage(format!("bad request: {e}"))),
        };
        let answer = answer.map_or_else(|e| Answer::err(&e), Answer::ok);
        let mut stream = stream;
        let _ = writeln!(
            stream,
            "{}",
            serde_json::to_string(&answer).unwrap_or_default()
        );
        false
    }

    fn handle(&self, request: &Request) -> CliResult<Value> {
        let v = &self.volume;
        match request {
            Request::Stats => Ok(json!(StatsView::from_volume(&v.stats()))),
            Request::Status => Ok(self.status()),
            Request::ChangeWritePolicy { policy } => {
                let policy: WritePolicy = policy
                    .parse()
                    .map_err(|e| CliError::usage(format!("--writePolicy: {e}")))?;
                v.set_write_policy(policy, None)
                    .map_err(|e| CliError::volume("changing the write policy", &e))?;
                self.log.info(&format!(
                    "write policy {policy} (in force: {})",
                    v.write_policy().name()
                ));
                Ok(json!(v.write_policy().name()))
            }
            Request::SetCompression { enabled } => {
                v.set_compression(*enabled)
                    .map_err(|e| CliError::volume("setting compression", &e))?;
                self.log
                    .info(&format!("compression setting stored: {enabled}"));
                Ok(json!(
                    "compression is not implemented yet: the setting is stored in the registry \
                     and the volume, and takes effect when the engine has a packer"
                ))
            }
            Request::SetDeduplication { enabled } => {
                v.set_deduplication(*enabled)
                    .map_err(|e| CliError::volume("setting deduplication", &e))?;
                self.log.info(&format!("deduplication {enabled}"));
                Ok(Value::Null)
            }
            Request::GrowLogical { bytes } => {
                let block = uvdo_format::BLOCK_SIZE as u64;
                let new = bytes / block * block;
                check_growth(v.logical_bytes(), new)?;
                v.grow_logical(BlockCount(new / block))
                    .map_err(|e| CliError::volume("growing the logical size", &e))?;
                self.log
                    .info(&format!("logical size grown to {}", format_size(new)));
                Ok(self.sizes())
            }
            Request::GrowPhysical => {
                let block = uvdo_format::BLOCK_SIZE as u64;
                let new = device_bytes(&self.device)? / block * block;
                check_growth(v.stats().physical_blocks * block, new)?;
                v.grow_physical(Some(BlockCount(new / block)))
                    .map_err(|e| CliError::volume("growing the physical size", &e))?;
                self.log
                    .info(&format!("physical size grown to {}", format_size(new)));
                Ok(self.sizes())
            }
            Request::Stop => Err(CliError::new(ExitStatus::Developer, "stop handled above")),
        }
    }

    /// The sizes a grow answers with, for the registry.
    fn sizes(&self) -> Value {
        let block = uvdo_format::BLOCK_SIZE as u64;
        json!({
            "logicalBytes": self.volume.logical_bytes(),
            "physicalBytes": self.volume.stats().physical_blocks * block,
        })
    }

    fn status(&self) -> Value {
        let v = &self.volume;
        let recovery = v.last_recovery().map(|r| {
            json!({
                "entries replayed": r.entries_replayed,
                "journal head": r.journal_head.0,
                "journal end": r.journal_end.0,
                "stale journal blocks": r.stale_journal_blocks,
                "unlanded journal blocks": r.unlanded_journal_blocks,
            })
        });
        json!({
            "pid": std::process::id(),
            "uri": self.uri,
            "device": self.device,
            "started": crate::time::rfc3339(self.started_s),
            "last recovery": recovery,
            "stats": StatsView::from_volume(&v.stats()),
        })
    }
}
