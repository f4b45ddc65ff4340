//! Real NBD clients from Debian against the server: qemu-img, nbdcopy, nbdinfo, nbdsh (Python
//! libnbd), fio, nbdfuse + loop + ext4, socket activation, and a crash of the server binary.
//! A test whose client is missing prints `SKIPPED: <tool> not installed` and passes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{Raw, file_volume, have, have_python_nbd, pattern, run, start};
use uvdo::Volume;
use uvdo_nbd::proto::request::Command as Cmd;
use uvdo_nbd::{ServeConfig, ServerHandle};

const MIB: u64 = 1 << 20;

struct Fixture {
    dir: tempfile::TempDir,
    volume: Arc<Volume>,
    server: ServerHandle,
    uri: String,
}

impl Fixture {
    fn new(physical: u64, logical: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let volume = file_volume(dir.path(), physical, logical);
        let (server, _) = start(&volume, dir.path(), ServeConfig::default());
        let uri = server.uri().unwrap().to_owned();
        Self {
            dir,
            volume,
            server,
            uri,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stops the server, closes the volume cleanly and reopens it.
    fn reopen(self) -> (tempfile::TempDir, Volume) {
        self.server.shutdown();
        Arc::into_inner(self.volume).unwrap().close().unwrap();
        let volume = common::reopen(self.dir.path());
        (self.dir, volume)
    }
}

/// A sparse raw image: random data at 0 and 20 MiB, zeros written at 8 MiB, holes elsewhere.
fn source_image(path: &Path, size: u64) -> Vec<u8> {
    let mut image = vec![0; usize::try_from(size).unwrap()];
    image[..4 << 20].copy_from_slice(&pattern(1, 4 << 20));
    image[20 << 20..26 << 20].copy_from_slice(&pattern(2, 6 << 20));
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&image[..4 << 20], 0).unwrap();
    f.write_all_at(&vec![0; 1 << 20], 8 << 20).unwrap();
    f.write_all_at(&image[20 << 20..26 << 20], 20 << 20)
        .unwrap();
    image
}

fn prefix(path: &Path, len: usize) -> Vec<u8> {
    let mut all = std::fs::read(path).unwrap();
    all.truncate(len);
    all
}

#[test]
fn qemu_img_info_convert_compare() {
    if !have("qemu-img") {
        return;
    }
    let fx = Fixture::new(128 * MIB, 256 * MIB);
    let src = fx.path("src.img");
    let image = source_image(&src, 32 * MIB);
    let info = run(Command::new("qemu-img").args(["info", "-f", "raw", &fx.uri]));
    assert!(info.contains("256 MiB"), "{info}");
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&fx.uri));
    let out = fx.path("out.img");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &fx.uri])
        .arg(&out));
    assert_eq!(prefix(&out, image.len()), image);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&fx.uri));
}

#[test]
fn nbdcopy_both_ways_and_nbdinfo_map() {
    if !have("nbdcopy") || !have("nbdinfo") {
        return;
    }
    let fx = Fixture::new(128 * MIB, 256 * MIB);
    let src = fx.path("src.img");
    let image = source_image(&src, 32 * MIB);
    run(Command::new("nbdcopy")
        .args(["--connections=4", "--flush"])
        .arg(&src)
        .arg(&fx.uri));
    assert!(fx.server.connections_accepted() >= 2, "multi-conn is used");
    let out = fx.path("out.img");
    run(Command::new("nbdcopy")
        .arg("--connections=4")
        .arg(&fx.uri)
        .arg(&out));
    assert_eq!(prefix(&out, image.len()), image);
    fx.volume.write(24 << 20, &vec![0; 1 << 20], false).unwrap();
    let map = run(Command::new("nbdinfo").args(["--map", &fx.uri]));
    let extents: Vec<(u64, u64, u32)> = map
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let kind_at = |at: u64| {
        extents
            .iter()
            .find(|(o, l, _)| (*o..o + l).contains(&at))
            .map(|e| e.2)
    };
    assert_eq!(kind_at(0), Some(0), "{map}");
    assert_eq!(kind_at(8 << 20), Some(3), "zeros written are a hole: {map}");
    assert_eq!(kind_at(12 << 20), Some(3), "never written: {map}");
    assert_eq!(kind_at(21 << 20), Some(0), "{map}");
    assert_eq!(
        kind_at(24 << 20),
        Some(3),
        "zeroed through the engine: {map}"
    );
    assert_eq!(kind_at(200 << 20), Some(3), "{map}");
}

const NBDSH_SCRIPT: &str = r#"
import sys, nbd
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.set_request_block_size(True)
h.connect_uri(sys.argv[1])
assert [h.get_block_size(x) for x in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED,
        nbd.SIZE_MAXIMUM)] == [512, 4096, 32 << 20]
for can in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_df",
            "can_cache", "can_multi_conn"):
    assert getattr(h, can)(), can
assert not h.is_read_only()
buf = bytes(range(256)) * 256
h.pwrite(buf, 0)
h.pwrite(buf, 65536, nbd.CMD_FLAG_FUA)
assert h.pread(131072, 0) == buf * 2
df = []
h.pread_structured(131072, 0, lambda b, o, s, e: df.append((bytes(b), o, s)), nbd.CMD_FLAG_DF)
assert df == [(buf * 2, 0, nbd.READ_DATA)], [x[1:] for x in df]
h.zero(1 << 20, 1 << 20)
h.zero(1 << 20, 2 << 20, nbd.CMD_FLAG_NO_HOLE)
h.zero(1 << 20, 3 << 20, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_FUA)
assert h.pread(1 << 20, 1 << 20) == bytes(1 << 20)
h.trim(65536, 65536)
h.trim(4096, 8 << 20, nbd.CMD_FLAG_FUA)
h.cache(4096, 0)
h.flush()
h.pwrite(buf, 0)
ext = []
h.block_status(8 << 20, 0, lambda c, o, e, err: ext.append((c, o, list(e))))
assert ext == [("base:allocation", 0, [65536, 0, (8 << 20) - 65536, 3])], ext
one = []
h.block_status(8 << 20, 0, lambda c, o, e, err: one.append(list(e)), nbd.CMD_FLAG_REQ_ONE)
assert one == [[65536, 0]], one
chunks = []
h.pread_structured(1 << 20, 0, lambda b, o, s, e: chunks.append((o, s)))
assert (0, nbd.READ_DATA) in chunks and (65536, nbd.READ_HOLE) in chunks, chunks

h.set_strict_mode(0)
size = h.get_size()
def expect(what, call, err):
    try:
        call()
    except nbd.Error as e:
        assert e.errno == err, (what, e.errno, e)
    else:
        raise AssertionError(what + " succeeded")
    assert h.pread(512, 0) == buf[:512], what
E = "EINVAL"  # nbd.Error.errno is the name
expect("read past end", lambda: h.pread(512, size), E)
expect("read across end", lambda: h.pread(1024, size - 512), E)
expect("write past end", lambda: h.pwrite(bytes(512), size), E)
expect("trim past end", lambda: h.trim(4096, size), E)
expect("zero past end", lambda: h.zero(4096, size), E)
expect("cache past end", lambda: h.cache(4096, size), E)
expect("misaligned read", lambda: h.pread(100, 3), E)
expect("misaligned write", lambda: h.pwrite(bytes(100), 3), E)
expect("unknown flag", lambda: h.pread(512, 0, 1 << 6), E)
expect("DF on write", lambda: h.pwrite(bytes(512), 0, nbd.CMD_FLAG_DF), E)
expect("huge offset", lambda: h.pread(512, (1 << 63) + (1 << 62)), E)
expect("block status past end", lambda: h.block_status(4096, size, lambda *a: 0), E)
h.shutdown()
print("OK")
"#;

#[test]
fn nbdsh_every_command_and_negative_cases() {
    if !have_python_nbd() {
        return;
    }
    let fx = Fixture::new(128 * MIB, 256 * MIB);
    let script = fx.path("t.py");
    std::fs::write(&script, NBDSH_SCRIPT).unwrap();
    let out = run(Command::new("/usr/bin/python3").arg(&script).arg(&fx.uri));
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn fio_verify_and_dedupe() {
    if !have("fio") {
        return;
    }
    let fx = Fixture::new(256 * MIB, 512 * MIB);
    let uri = format!("--uri={}", fx.uri);
    let common_args = [
        "--ioengine=nbd",
        "--bs=4k",
        "--iodepth=16",
        "--group_reporting",
    ];
    run(Command::new("fio")
        .args([
            "--name=verify",
            "--rw=randwrite",
            "--size=32m",
            "--verify=crc32c",
        ])
        .args(["--verify_fatal=1", "--do_verify=1", "--fsync=64"])
        // fio would otherwise leave its verify state file in the working directory.
        .arg("--verify_state_save=0")
        .args(common_args)
        .arg(&uri));
    let before = fx.volume.stats();
    run(Command::new("fio")
        .args(["--name=dedupe", "--rw=write", "--size=64m", "--offset=128m"])
        .args(["--dedupe_percentage=50", "--refill_buffers", "--fsync=256"])
        .args(common_args)
        .arg(&uri));
    let (_dir, volume) = fx.reopen();
    let after = volume.stats();
    let logical = after.logical_blocks_used - before.logical_blocks_used;
    let data = after.data_blocks_used - before.data_blocks_used;
    println!("dedupe job: {logical} logical blocks, {data} data blocks");
    assert_eq!(logical, 16384);
    // fio draws duplicates at random: about half the blocks are stored.
    assert!(
        (6554..=9830).contains(&data),
        "{data} data blocks for {logical}"
    );
    assert!(volume.audit().unwrap().is_clean());
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Undoes the nbdfuse test's mounts whatever happens.
struct Mounted {
    fuse_dir: PathBuf,
    ext4_dir: PathBuf,
    loop_dev: Option<String>,
    nbdfuse: Option<std::process::Child>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.ext4_dir).status();
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        let _ = Command::new("umount").arg(&self.fuse_dir).status();
        if let Some(mut child) = self.nbdfuse.take() {
            let _ = child.wait();
        }
    }
}

fn file_hashes(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                all.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    all.sort();
    all
}

#[test]
fn nbdfuse_loop_ext4_copy_twice() {
    for tool in [
        "nbdfuse",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
    ] {
        if !have(tool) {
            return;
        }
    }
    if !is_root() || !Path::new("/dev/fuse").exists() || !Path::new("/dev/loop-control").exists() {
        println!("SKIPPED: nbdfuse test needs root, /dev/fuse and /dev/loop-control");
        return;
    }
    let fx = Fixture::new(256 * MIB, 512 * MIB);
    let tree = fx.path("tree");
    let mut tree_blocks = 0;
    for d in 0..4 {
        std::fs::create_dir_all(tree.join(format!("d{d}/sub"))).unwrap();
        for f in 0..8_u64 {
            let len = 4096 * (4 + (f * 7 + d) % 29);
            tree_blocks += len / 4096;
            let at = tree.join(format!("d{d}/sub/f{f}"));
            std::fs::write(at, pattern(d * 100 + f, usize::try_from(len).unwrap())).unwrap();
        }
    }
    let mut m = Mounted {
        fuse_dir: fx.path("fuse"),
        ext4_dir: fx.path("ext4"),
        loop_dev: None,
        nbdfuse: None,
    };
    std::fs::create_dir_all(&m.fuse_dir).unwrap();
    std::fs::create_dir_all(&m.ext4_dir).unwrap();
    let pid = fx.path("fuse.pid");
    let disk = m.fuse_dir.join("disk");
    m.nbdfuse = Some(
        Command::new("nbdfuse")
            .arg("-P")
            .arg(&pid)
            .arg(&disk)
            .arg(&fx.uri)
            .spawn()
            .unwrap(),
    );
    // nbdfuse writes its pid file once the mount is up; give it a minute on a loaded machine.
    for _ in 0..600 {
        if pid.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(pid.exists(), "nbdfuse did not come up");
    let dev = run(Command::new("losetup").arg("-f").arg("--show").arg(&disk));
    m.loop_dev = Some(dev.trim().to_owned());
    let dev = dev.trim().to_owned();
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", &dev]));
    run(Command::new("mount").arg(&dev).arg(&m.ext4_dir));
    for copy in ["a", "b"] {
        run(Command::new("cp")
            .arg("-a")
            .arg(&tree)
            .arg(m.ext4_dir.join(copy)));
        run(&mut Command::new("sync"));
    }
    run(Command::new("umount").arg(&m.ext4_dir));
    run(Command::new("e2fsck").args(["-f", "-n", &dev]));
    run(Command::new("mount").arg(&dev).arg(&m.ext4_dir));
    let want = file_hashes(&tree);
    assert_eq!(file_hashes(&m.ext4_dir.join("a")), want);
    assert_eq!(file_hashes(&m.ext4_dir.join("b")), want);
    drop(m);
    let (_dir, volume) = fx.reopen();
    let stats = volume.stats();
    println!(
        "ext4: {} logical, {} data blocks for two copies of a {tree_blocks}-block tree",
        stats.logical_blocks_used, stats.data_blocks_used
    );
    // Two copies of the tree in ext4 (plus its metadata) take about one copy's data.
    assert!(
        stats.data_blocks_used < tree_blocks * 3 / 2,
        "the second copy deduplicates"
    );
    assert!(volume.audit().unwrap().is_clean());
}

fn server_binary() -> &'static str {
    env!("CARGO_BIN_EXE_uvdo-nbd-serve")
}

#[test]
fn socket_activation_with_nbdinfo() {
    if !have("nbdinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.img");
    let size = run(Command::new("nbdinfo")
        .args(["--size", "--", "[", server_binary(), "--store"])
        .arg(&store)
        .args([
            "--format",
            "--size",
            "268435456",
            "--logical",
            "536870912",
            "]",
        ]));
    assert_eq!(size.trim(), "536870912");
    // The server closed the volume cleanly when nbdinfo stopped it: it opens without recovery.
    let volume = common::reopen(dir.path());
    assert!(volume.last_recovery().is_none());
}

#[test]
fn crash_of_the_server_keeps_everything_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.img");
    let sock = dir.path().join("s.sock");
    let mut child = Command::new(server_binary())
        .arg("--store")
        .arg(&store)
        .args(["--format", "--size", "268435456", "--logical", "536870912"])
        .args(["--policy", "async", "--socket"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("nbd+unix:///?socket={}", sock.display())
    );
    let mut c = Raw::connect_go(&sock, true, true);
    let flushed: u64 = 300;
    for i in 0..flushed {
        assert_eq!(c.write(i * 4096, &pattern(i, 4096), 0), 0);
    }
    c.send(Cmd::Flush, 0, 0, 0, &[]);
    assert_eq!(c.error_of(), 0);
    // More writes after the flush: acknowledged, not yet durable; they may or may not survive.
    for i in flushed..flushed + 100 {
        assert_eq!(c.write(i * 4096, &pattern(i, 4096), 0), 0);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let volume = common::reopen(dir.path());
    for i in 0..flushed {
        let mut back = vec![0; 4096];
        volume.read(i * 4096, &mut back).unwrap();
        assert_eq!(back, pattern(i, 4096), "flushed block {i} lost");
    }
    for i in flushed..flushed + 100 {
        let mut back = vec![0; 4096];
        volume.read(i * 4096, &mut back).unwrap();
        assert!(
            back == pattern(i, 4096) || back == vec![0; 4096],
            "block {i} is torn"
        );
    }
    assert!(volume.audit().unwrap().is_clean());
    let _ = std::io::stdout().flush();
}
