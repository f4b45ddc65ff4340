//! Write-cache detection: on fake sysfs trees (partitions, loop chains, stacked devices,
//! cycles) and on this machine, through a real loop device where we may make one.

mod loop_device;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use uvdo_io::write_cache::{
    DEPTH_MAX, DevNumber, PathNode, WriteCache, detect_write_cache, detect_write_cache_with,
    stat_node,
};

/// A fake `/sys` laid out like the real one: device directories under `devices/`, and
/// `dev/block/MAJ:MIN` symlinks to them.
struct FakeSys {
    root: tempfile::TempDir,
    nodes: HashMap<PathBuf, PathNode>,
}

fn dev(major: u64, minor: u64) -> DevNumber {
    DevNumber { major, minor }
}

impl FakeSys {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("dev/block")).unwrap();
        fs::create_dir_all(root.path().join("devices/virtual/block")).unwrap();
        Self {
            root,
            nodes: HashMap::new(),
        }
    }

    fn link(&self, dir: &Path, number: DevNumber) {
        let link = self
            .root
            .path()
            .join(format!("dev/block/{}:{}", number.major, number.minor));
        symlink(dir, link).unwrap();
    }

    /// A whole disk; `cache` is its `queue/write_cache`, absent if `None`.
    fn disk(&self, name: &str, number: DevNumber, cache: Option<&str>) -> PathBuf {
        let dir = self.root.path().join("devices/virtual/block").join(name);
        fs::create_dir_all(dir.join("queue")).unwrap();
        fs::create_dir_all(dir.join("slaves")).unwrap();
        if let Some(cache) = cache {
            fs::write(dir.join("queue/write_cache"), format!("{cache}\n")).unwrap();
        }
        self.link(&dir, number);
        dir
    }

    fn partition(&self, disk: &Path, name: &str, number: DevNumber) -> PathBuf {
        let dir = disk.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("partition"), "1\n").unwrap();
        self.link(&dir, number);
        dir
    }

    /// A loop device whose own queue claims write-through, so following it is visible.
    fn loop_device(&self, name: &str, number: DevNumber, backing: &str) -> PathBuf {
        let dir = self.disk(name, number, Some("write through"));
        fs::create_dir_all(dir.join("loop")).unwrap();
        fs::write(dir.join("loop/backing_file"), format!("{backing}\n")).unwrap();
        dir
    }

    fn stacked(&self, name: &str, number: DevNumber, slaves: &[&Path]) -> PathBuf {
        let dir = self.disk(name, number, Some("write through"));
        for slave in slaves {
            symlink(slave, dir.join("slaves").join(slave.file_name().unwrap())).unwrap();
        }
        dir
    }

    fn file_on(&mut self, path: &str, number: DevNumber) {
        self.nodes
            .insert(PathBuf::from(path), PathNode::OnFilesystem(number));
    }

    fn device_node(&mut self, path: &str, number: DevNumber) {
        self.nodes
            .insert(PathBuf::from(path), PathNode::BlockDevice(number));
    }

    fn detect(&self, path: &str) -> WriteCache {
        let stat = |p: &Path| {
            self.nodes
                .get(p)
                .copied()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        detect_write_cache_with(self.root.path(), Path::new(path), &stat)
    }
}

fn assert_unknown(answer: &WriteCache, needle: &str) {
    match answer {
        WriteCache::Unknown(reason) => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected Unknown({needle}..), got {other:?}"),
    }
}

#[test]
fn files_and_devices_answer_with_their_disk() {
    let mut sys = FakeSys::new();
    sys.disk("vda", dev(254, 0), Some("write back"));
    sys.disk("sda", dev(8, 0), Some("write through"));
    sys.disk("sdb", dev(8, 16), Some("something new"));
    sys.file_on("/data/volume.img", dev(254, 0));
    sys.file_on("/safe/volume.img", dev(8, 0));
    sys.device_node("/dev/sda", dev(8, 0));
    sys.device_node("/dev/sdb", dev(8, 16));
    assert_eq!(sys.detect("/data/volume.img"), WriteCache::WriteBack);
    assert_eq!(sys.detect("/safe/volume.img"), WriteCache::WriteThrough);
    assert_eq!(sys.detect("/dev/sda"), WriteCache::WriteThrough);
    assert_unknown(&sys.detect("/dev/sdb"), "something new");
}

#[test]
fn a_partition_answers_with_its_parent_disk() {
    let mut sys = FakeSys::new();
    let sda = sys.disk("sda", dev(8, 0), Some("write back"));
    sys.partition(&sda, "sda1", dev(8, 1));
    let sdb = sys.disk("sdb", dev(8, 16), Some("write through"));
    sys.partition(&sdb, "sdb2", dev(8, 18));
    sys.device_node("/dev/sda1", dev(8, 1));
    sys.file_on("/mnt/file", dev(8, 18));
    assert_eq!(sys.detect("/dev/sda1"), WriteCache::WriteBack);
    assert_eq!(sys.detect("/mnt/file"), WriteCache::WriteThrough);
}

#[test]
fn a_loop_chain_answers_with_the_disk_under_the_last_backing_file() {
    let mut sys = FakeSys::new();
    sys.disk("vda", dev(254, 0), Some("write back"));
    sys.loop_device("loop1", dev(7, 1), "/images/outer.img");
    sys.loop_device("loop0", dev(7, 0), "/mnt/loop1fs/inner.img");
    sys.file_on("/images/outer.img", dev(254, 0));
    sys.file_on("/mnt/loop1fs/inner.img", dev(7, 1));
    sys.device_node("/dev/loop0", dev(7, 0));
    sys.file_on("/mnt/loop0fs/volume", dev(7, 0));
    // A loop over a block device follows the device.
    sys.disk("sdc", dev(8, 32), Some("write through"));
    sys.device_node("/dev/sdc", dev(8, 32));
    sys.loop_device("loop2", dev(7, 2), "/dev/sdc");
    sys.device_node("/dev/loop2", dev(7, 2));
    assert_eq!(sys.detect("/dev/loop0"), WriteCache::WriteBack);
    assert_eq!(sys.detect("/mnt/loop0fs/volume"), WriteCache::WriteBack);
    assert_eq!(sys.detect("/dev/loop2"), WriteCache::WriteThrough);
}

#[test]
fn loops_that_would_recurse_forever_are_unknown() {
    let mut sys = FakeSys::new();
    // loop0's backing file lives on loop0's own filesystem.
    sys.loop_device("loop0", dev(7, 0), "/mnt/self/img");
    sys.file_on("/mnt/self/img", dev(7, 0));
    sys.device_node("/dev/loop0", dev(7, 0));
    // loop3 -> loop4 -> loop3.
    sys.loop_device("loop3", dev(7, 3), "/mnt/four/img");
    sys.loop_device("loop4", dev(7, 4), "/mnt/three/img");
    sys.file_on("/mnt/four/img", dev(7, 4));
    sys.file_on("/mnt/three/img", dev(7, 3));
    sys.device_node("/dev/loop3", dev(7, 3));
    let limit = format!("more than {DEPTH_MAX}");
    assert_unknown(&sys.detect("/dev/loop0"), &limit);
    assert_unknown(&sys.detect("/dev/loop3"), &limit);
}

#[test]
fn chains_just_inside_the_depth_limit_resolve() {
    let mut sys = FakeSys::new();
    sys.disk("vda", dev(254, 0), Some("write back"));
    // loop0 over a file on vda; loop k over a file on loop k-1's filesystem.
    let depth = u64::from(DEPTH_MAX);
    for k in 0..depth {
        let backing = format!("/on{k}/img");
        sys.loop_device(&format!("loop{k}"), dev(7, k), &backing);
        let under = if k == 0 { dev(254, 0) } else { dev(7, k - 1) };
        sys.file_on(&backing, under);
    }
    sys.device_node("/dev/top", dev(7, depth - 1));
    sys.device_node("/dev/too-deep", dev(7, depth));
    sys.loop_device(&format!("loop{depth}"), dev(7, depth), "/ondeep/img");
    sys.file_on("/ondeep/img", dev(7, depth - 1));
    assert_eq!(sys.detect("/dev/top"), WriteCache::WriteBack);
    assert_unknown(&sys.detect("/dev/too-deep"), "more than");
}

#[test]
fn stacked_devices_are_write_back_if_any_slave_is() {
    let mut sys = FakeSys::new();
    let sda = sys.disk("sda", dev(8, 0), Some("write through"));
    let sdb = sys.disk("sdb", dev(8, 16), Some("write back"));
    let sdc = sys.disk("sdc", dev(8, 32), Some("write through"));
    let odd = sys.disk("odd", dev(8, 48), None);
    let sdd = sys.disk("sdd", dev(8, 64), Some("write back"));
    let sdd1 = sys.partition(&sdd, "sdd1", dev(8, 65));
    sys.stacked("dm-0", dev(253, 0), &[&sda, &sdb]);
    sys.stacked("dm-1", dev(253, 1), &[&sda, &sdc]);
    sys.stacked("dm-2", dev(253, 2), &[&sda, &odd]);
    sys.stacked("md0", dev(9, 0), &[&sdd1, &sdc]);
    let dm1 = sys.root.path().join("devices/virtual/block/dm-1");
    sys.stacked("dm-3", dev(253, 3), &[&dm1]);
    for (path, minor) in [
        ("/dev/dm-0", 0),
        ("/dev/dm-1", 1),
        ("/dev/dm-2", 2),
        ("/dev/dm-3", 3),
    ] {
        sys.device_node(path, dev(253, minor));
    }
    sys.file_on("/raid/file", dev(9, 0));
    assert_eq!(sys.detect("/dev/dm-0"), WriteCache::WriteBack);
    assert_eq!(sys.detect("/dev/dm-1"), WriteCache::WriteThrough);
    assert_unknown(&sys.detect("/dev/dm-2"), "write_cache");
    assert_eq!(sys.detect("/raid/file"), WriteCache::WriteBack);
    assert_eq!(sys.detect("/dev/dm-3"), WriteCache::WriteThrough);
}

#[test]
fn paths_without_a_block_device_are_unknown() {
    let mut sys = FakeSys::new();
    sys.file_on("/dev/shm/volume", dev(0, 35));
    sys.file_on("/orphan/file", dev(259, 9));
    assert_unknown(&sys.detect("/dev/shm/volume"), "no block device");
    assert_unknown(&sys.detect("/orphan/file"), "no sysfs entry");
    assert_unknown(&sys.detect("/missing"), "cannot stat");
}

#[test]
fn this_machine_answers_for_a_temp_file() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let answer = detect_write_cache(file.path());
    println!(
        "write cache under {} ({:?}): {answer:?}",
        file.path().display(),
        stat_node(file.path()).unwrap()
    );
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        println!("write cache under /dev/shm: {:?}", detect_write_cache(shm));
    }
}

#[test]
fn a_real_loop_device_answers_as_its_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    fs::File::create(&backing)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let device = match loop_device::LoopDevice::attach(&backing) {
        Ok(device) => device,
        Err(reason) => {
            println!("SKIPPED: cannot attach a loop device: {reason}");
            return;
        }
    };
    let through_loop = detect_write_cache(&device.path);
    let direct = detect_write_cache(&backing);
    println!(
        "{} over {}: {through_loop:?}; the backing file's filesystem: {direct:?}",
        device.path.display(),
        backing.display()
    );
    assert_eq!(through_loop, direct);
}
