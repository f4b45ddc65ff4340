//! End-to-end tests of `uvdo` and `uvdostats`: real binaries, a registry in a temporary
//! directory (`--confFile`), sparse files as devices, qemu-io as the NBD client.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Env {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("uvdo.toml")
    }

    fn device(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if !path.exists() {
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(256 << 20).unwrap();
        }
        path
    }

    fn run(&self, bin: &str, args: &[&str]) -> Out {
        let out = Command::new(bin)
            .arg("--confFile")
            .arg(self.conf())
            .args(args)
            .env_remove("UVDO_CONF")
            .output()
            .unwrap();
        let o = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("$ {bin} {args:?} -> {}\n{}{}", o.code, o.stdout, o.stderr);
        o
    }

    fn uvdo(&self, args: &[&str]) -> Out {
        self.run(env!("CARGO_BIN_EXE_uvdo"), args)
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.uvdo(args);
        assert_eq!(o.code, 0, "uvdo {args:?}: {}", o.stderr);
        o
    }

    fn stats(&self, args: &[&str]) -> Out {
        self.run(env!("CARGO_BIN_EXE_uvdostats"), args)
    }

    fn create(&self, name: &str, extra: &[&str]) -> String {
        let device = self.device(&format!("{name}.img"));
        let mut args = vec![
            "create",
            "--name",
            name,
            "--device",
            device.to_str().unwrap(),
        ];
        args.extend_from_slice(&["--vdoLogicalSize", "1G"]);
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        out.stdout.lines().last().unwrap_or("").to_owned()
    }

    fn pid(&self, name: &str) -> i32 {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.pid"))).unwrap();
        text.trim().parse().unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Never leave a daemon behind, whatever the test did.
        let _ = self.uvdo(&["stop", "--all", "--force"]);
    }
}

fn qemu_io(uri: &str, commands: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd
        .arg(uri)
        .output()
        .expect("qemu-io (Debian qemu-utils) is needed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && !text.contains("failed"), text)
}

/// The table's data row for `name`: (1K-blocks, used, available, use%, saving%).
fn table_row(text: &str, name: &str) -> Vec<String> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "Device",
            "1K-blocks",
            "Used",
            "Available",
            "Use%",
            "Space",
            "saving%"
        ]
    );
    let row = lines.find(|l| l.starts_with(name)).unwrap();
    row.split_whitespace().skip(1).map(str::to_owned).collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn whole_life_cycle() {
    let env = Env::new();
    let uri = env.create("v0", &["--writePolicy", "async"]);
    let socket = env.dir.path().join("v0.nbd.sock");
    assert_eq!(uri, format!("nbd+unix:///?socket={}", socket.display()));
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // 128 blocks of one pattern and 16 of another: two distinct blocks are stored.
    let (ok, text) = qemu_io(
        &uri,
        &[
            "write -P 7 0 256k",
            "write -P 7 1M 256k",
            "write -P 9 4M 64k",
            "flush",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = qemu_io(&uri, &["read -P 7 1M 256k", "read -P 9 4M 64k"]);
    assert!(ok, "{text}");

    let verbose = json(&env.stats(&["--json", "v0"]).stdout);
    let v = &verbose["v0"];
    let num = |k: &str| v[k]["value"].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    assert_eq!(num("logical blocks used"), 64 + 64 + 16);
    assert_eq!(num("data blocks used"), 2);
    let used_kib = (num("data blocks used") + num("overhead blocks used")) * 4;
    let row = table_row(&env.stats(&["v0"]).stdout, "v0");
    assert_eq!(row[0], (num("physical blocks") * 4).to_string());
    assert_eq!(row[1], used_kib.to_string());
    assert_eq!(row[2], (num("physical blocks") * 4 - used_kib).to_string());
    assert_eq!(row[4], format!("{}%", (144 - 2) * 100 / 144));
    let human = env.stats(&["--human-readable", "v0"]).stdout;
    assert!(
        human.starts_with("Device") && human.contains("256.0M"),
        "{human}"
    );
    let verbose = env.stats(&["--verbose", "v0"]).stdout;
    assert!(verbose.contains("  data blocks used"), "{verbose}");
    assert!(
        verbose.contains("operating mode                   : normal"),
        "{verbose}"
    );

    // growLogical: 1G to 2G, online; a new connection sees the new size.
    let one_g = (1_u64 << 30) / 4096;
    assert_eq!(num("logical blocks"), one_g);
    let (ok, _) = qemu_io(&uri, &["write -P 5 1536M 64k"]);
    assert!(!ok, "beyond the end before the grow");
    env.ok(&["growLogical", "--name", "v0", "--vdoLogicalSize", "2G"]);
    let grown = json(&env.stats(&["--json", "v0"]).stdout);
    assert_eq!(grown["v0"]["logical blocks"]["value"], 2 * one_g);
    let (ok, text) = qemu_io(&uri, &["write -P 5 1536M 64k", "flush"]);
    assert!(ok, "{text}");
    let (ok, text) = qemu_io(&uri, &["read -P 5 1536M 64k", "read -P 7 1M 256k"]);
    assert!(ok, "{text}");
    let shrink = env.uvdo(&["growLogical", "--name", "v0", "--vdoLogicalSize", "1G"]);
    assert_eq!(shrink.code, 7);
    assert!(
        shrink
            .stderr
            .contains("Can't shrink a VDO volume (old size 2G)"),
        "{}",
        shrink.stderr
    );
    let same = env.uvdo(&["growLogical", "--name", "v0", "--vdoLogicalSize", "2G"]);
    assert_eq!(same.code, 7);
    assert!(
        same.stderr
            .contains("Can't grow a VDO volume by less than 4096 bytes")
    );
    // growPhysical: the device grows first (as an admin would), then the volume into it.
    let physical = num("physical blocks");
    let same = env.uvdo(&["growPhysical", "--name", "v0"]);
    assert_eq!(same.code, 7);
    assert!(
        same.stderr
            .contains("Can't grow a VDO volume by less than 4096 bytes")
    );
    let device = env.device("v0.img");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&device)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    env.ok(&["growPhysical", "--name", "v0"]);
    let grown = json(&env.stats(&["--json", "v0"]).stdout);
    let grown_physical = grown["v0"]["physical blocks"]["value"].as_u64().unwrap();
    assert_eq!(grown_physical, (512 << 20) / 4096);
    assert!(grown_physical > physical);
    let config = env.ok(&["printConfigFile"]).stdout;
    assert!(config.contains("logicalSize = \"2G\""), "{config}");
    assert!(config.contains("physicalSize = \"512M\""), "{config}");
    assert!(config.contains("operationState = \"finished\""), "{config}");
    let (ok, text) = qemu_io(&uri, &["read -P 5 1536M 64k", "read -P 9 4M 64k"]);
    assert!(ok, "{text}");
    // Deduplication switches at once: a copy of stored data is stored again.
    let used = |env: &Env| {
        json(&env.stats(&["--json", "v0"]).stdout)["v0"]["data blocks used"]["value"]
            .as_u64()
            .unwrap()
    };
    let before = used(&env);
    let off = env.ok(&["disableDeduplication", "--name", "v0"]);
    assert!(off.stdout.contains("Stopping deduplication on VDO v0"));
    let (ok, text) = qemu_io(&uri, &["write -P 9 8M 64k", "flush"]);
    assert!(ok, "{text}");
    assert_eq!(used(&env), before + 16, "one new copy per block");
    env.ok(&["enableDeduplication", "--name", "v0"]);
    let (ok, text) = qemu_io(&uri, &["write -P 9 12M 64k", "flush"]);
    assert!(ok, "{text}");
    assert_eq!(used(&env), before + 16, "shared with the first copy");

    // The daemon records itself in the super block while it runs, and clears it at stop.
    let dump = env.ok(&["dumpConfig", "--name", "v0"]).stdout;
    let owner = format!("Owner: pid {} on ", env.pid("v0"));
    assert!(dump.contains(&owner), "{dump}");

    env.ok(&["changeWritePolicy", "--name", "v0", "--writePolicy", "sync"]);
    let status = json(&env.ok(&["status", "--name", "v0", "--json"]).stdout);
    assert_eq!(status["VDOs"]["v0"]["Write policy"], "sync");
    assert_eq!(status["VDOs"]["v0"]["Configured write policy"], "sync");
    assert!(env.ok(&["list"]).stdout.contains("v0"));
    let used_running = used(&env);

    env.ok(&["stop", "--name", "v0"]);
    let again = env.ok(&["stop", "--name", "v0"]);
    assert!(again.stderr.contains("VDO service v0 already stopped"));
    assert!(!env.ok(&["list"]).stdout.contains("v0"));
    assert!(env.ok(&["list", "--all"]).stdout.contains("v0"));
    // Stopped: the engine inspects the volume read-only, counting as the daemon did.
    let stopped = json(&env.stats(&["--json", "v0"]).stdout);
    assert_eq!(
        stopped["v0"]["logical blocks used"]["value"],
        144 + 16 + 16 + 16
    );
    assert_eq!(stopped["v0"]["logical blocks"]["value"], 2 * one_g);
    assert_eq!(stopped["v0"]["physical blocks"]["value"], grown_physical);
    assert_eq!(stopped["v0"]["data blocks used"]["value"], used_running);
    assert_eq!(stopped["v0"]["operating mode"]["value"], "normal");
    let dump = env.ok(&["dumpConfig", "--name", "v0"]).stdout;
    assert!(dump.contains("Owner: none"), "{dump}");
    let audit = env.ok(&["audit", "--name", "v0"]);
    assert!(audit.stdout.contains("All pbn references matched."));

    let uri = env
        .ok(&["start", "--name", "v0"])
        .stdout
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let (ok, text) = qemu_io(&uri, &["read -P 7 0 256k", "read -P 9 4M 64k"]);
    assert!(ok, "{text}");
    let status = env.ok(&["status", "--name", "v0"]).stdout;
    assert!(status.contains("VDOs:\n  v0:\n"), "{status}");
    assert!(status.contains("    Operating mode: normal\n"), "{status}");
    assert!(status.contains("    Write policy: sync\n"), "{status}");
    assert!(
        env.ok(&["listMetadata", "--name", "v0"])
            .stdout
            .contains(": block map tree roots")
    );
    assert!(
        env.ok(&["dumpConfig", "--name", "v0"])
            .stdout
            .contains("WritePolicy: sync")
    );
    env.ok(&["remove", "--name", "v0"]);
    assert!(
        !env.conf().exists(),
        "the registry goes with its last volume"
    );
    // The data is not destroyed unless asked: the volume can be imported again.
    let device = env.device("v0.img");
    env.ok(&[
        "import",
        "--name",
        "back",
        "--device",
        device.to_str().unwrap(),
        "--activate",
        "disabled",
    ]);
    assert!(
        env.ok(&["printConfigFile"])
            .stdout
            .contains("writePolicy = \"sync\"")
    );
}

#[test]
fn interrupted_create_is_refused_until_remove_force() {
    let env = Env::new();
    let device = env.device("v.img");
    let out = Command::new(env!("CARGO_BIN_EXE_uvdo"))
        .arg("--confFile")
        .arg(env.conf())
        .args([
            "create",
            "--name",
            "v",
            "--device",
            device.to_str().unwrap(),
        ])
        .env("UVDO_TEST_CRASH_AFTER_REGISTRY", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137));
    let start = env.uvdo(&["start", "--name", "v"]);
    assert_eq!(start.code, 5);
    assert!(
        start
            .stderr
            .contains("previous operation (create) is incomplete"),
        "{}",
        start.stderr
    );
    let status = env.ok(&["status"]);
    assert!(
        status
            .stdout
            .contains("previous operation (create) is incomplete")
    );
    let remove = env.uvdo(&["remove", "--name", "v"]);
    assert_eq!(remove.code, 5);
    assert!(
        remove.stdout.contains("A previous operation failed."),
        "{}",
        remove.stdout
    );
    assert!(
        remove
            .stdout
            .contains("Add '--force' to 'remove' to perform the following cleanup.")
    );
    assert!(remove.stderr.contains(
        "VDO volume v previous operation (create) is incomplete; recover by performing \
         'remove --force'"
    ));
    env.ok(&["remove", "--name", "v", "--force"]);
    assert_eq!(env.uvdo(&["status", "--name", "v"]).code, 7);
    // The device is free again.
    env.create("v", &[]);
}

#[test]
fn a_killed_daemon_is_a_stale_owner_and_start_force_recovers() {
    let env = Env::new();
    let uri = env.create("v", &["--writePolicy", "sync"]);
    let (ok, text) = qemu_io(&uri, &["write -P 5 0 128k", "write -P 6 2M 128k"]);
    assert!(ok, "{text}");
    let pid = env.pid("v");
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Wait until the process is gone (or a zombie: dead all the same).
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").unwrap().1.starts_with('Z'))
    {
        std::thread::yield_now();
    }
    let status = env.ok(&["status", "--name", "v"]).stdout;
    assert!(status.contains("stale"), "{status}");
    let refused = env.uvdo(&["start", "--name", "v"]);
    assert_eq!(refused.code, 5);
    assert!(
        refused.stderr.contains("add '--force' to 'start'"),
        "{}",
        refused.stderr
    );
    let started = env.ok(&["start", "--name", "v", "--force"]);
    assert!(
        started
            .stderr
            .contains("recovered after an unclean shutdown"),
        "{}",
        started.stderr
    );
    let uri = started.stdout.lines().last().unwrap();
    let (ok, text) = qemu_io(uri, &["read -P 5 0 128k", "read -P 6 2M 128k"]);
    assert!(ok, "acknowledged sync writes survive: {text}");
    let status = json(&env.ok(&["status", "--name", "v", "--json"]).stdout);
    let recovery = &status["VDOs"]["v"]["Last recovery"];
    assert!(
        recovery["entries replayed"].as_u64().unwrap() > 0,
        "{status}"
    );
    env.ok(&["stop", "--name", "v"]);
    assert!(
        env.ok(&["audit", "--name", "v"])
            .stdout
            .contains("All pbn references matched.")
    );
}

#[test]
fn corrupt_metadata_goes_read_only_and_force_rebuild_returns_to_normal() {
    let env = Env::new();
    let uri = env.create("v", &[]);
    let (ok, text) = qemu_io(&uri, &["write -P 3 0 64k", "flush"]);
    assert!(ok, "{text}");
    env.ok(&["stop", "--name", "v"]);
    // Damage both twins of every block map root.
    let listing = env.ok(&["listMetadata", "--name", "v"]).stdout;
    let roots = listing
        .lines()
        .find(|l| l.ends_with(": block map tree roots"))
        .unwrap();
    let (start, rest) = roots.split_once(" .. ").unwrap();
    let end = rest.split_once(':').unwrap().0;
    let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
    let device = env.device("v.img");
    corrupt(&device, start, end);
    let uri = env
        .ok(&["start", "--name", "v"])
        .stdout
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let (ok, _) = qemu_io(&uri, &["read 0 4k"]);
    assert!(
        !ok,
        "a read through a damaged page fails, never returns wrong data"
    );
    let status = json(&env.ok(&["status", "--name", "v", "--json"]).stdout);
    let v = &status["VDOs"]["v"];
    assert_eq!(v["Operating mode"], "read-only", "{status}");
    assert!(
        v["Read-only reason"].as_str().unwrap().contains("PBN"),
        "{status}"
    );
    env.ok(&["stop", "--name", "v"]);
    let stopped = json(&env.stats(&["--json", "v"]).stdout);
    assert_eq!(stopped["v"]["operating mode"]["value"], "read-only");
    let rebuilt = env.ok(&["start", "--name", "v", "--forceRebuild", "--yes"]);
    assert!(
        rebuilt.stderr.contains("force rebuild done"),
        "{}",
        rebuilt.stderr
    );
    let status = json(&env.ok(&["status", "--name", "v", "--json"]).stdout);
    assert_eq!(status["VDOs"]["v"]["Operating mode"], "normal", "{status}");
    env.ok(&["stop", "--name", "v"]);
    assert!(
        env.ok(&["audit", "--name", "v"])
            .stdout
            .contains("All pbn references matched.")
    );
}

fn corrupt(device: &Path, start: u64, end: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .unwrap();
    for pbn in start..end {
        file.write_all_at(&[0xa5; 4096], pbn * 4096).unwrap();
    }
    file.sync_all().unwrap();
}

#[test]
fn a_second_start_of_the_same_device_is_refused() {
    let env = Env::new();
    env.create("v", &[]);
    let again = env.ok(&["start", "--name", "v"]);
    assert!(again.stderr.contains("already started"));
    // Another registry naming the same device.
    let other = Env::new();
    let device = env.device("v.img");
    let imported = other.uvdo(&[
        "import",
        "--name",
        "w",
        "--device",
        device.to_str().unwrap(),
    ]);
    assert_eq!(imported.code, 5, "{}", imported.stderr);
    assert!(
        imported.stderr.contains("in use by pid"),
        "{}",
        imported.stderr
    );
}

#[test]
fn every_exit_code_of_vdo_is_reached() {
    let env = Env::new();
    // 1: no command.
    assert_eq!(env.uvdo(&[]).code, 1);
    // 2: bad or missing arguments.
    assert_eq!(env.uvdo(&["start"]).code, 2);
    assert_eq!(env.uvdo(&["stop", "--name", "a", "--all"]).code, 2);
    let dev = env.device("x.img");
    let dev = dev.to_str().unwrap();
    assert_eq!(
        env.uvdo(&[
            "create",
            "--name",
            "x",
            "--device",
            dev,
            "--vdoLogicalSize",
            "lots"
        ])
        .code,
        2
    );
    assert_eq!(env.uvdo(&["modify", "--name", "x"]).code, 2);
    // 7: no such volume; already exists; device already configured.
    assert_eq!(env.uvdo(&["start", "--name", "nope"]).code, 7);
    env.create("x", &["--activate", "disabled"]);
    assert_eq!(
        env.uvdo(&["create", "--name", "x", "--device", dev]).code,
        7
    );
    let dup = env.uvdo(&["create", "--name", "y", "--device", dev]);
    assert_eq!(dup.code, 7);
    assert!(dup.stderr.contains("already configured for VDO use"));
    assert_eq!(
        env.uvdo(&["printConfigFile", "--confFile", "/nonexistent/x.toml"])
            .code,
        7
    );
    // 5: not activated; not running.
    let start = env.uvdo(&["start", "--name", "x"]);
    assert_eq!(start.code, 5);
    assert!(start.stderr.contains("VDO volume x not activated"));
    assert_eq!(
        env.uvdo(&["growLogical", "--name", "x", "--vdoLogicalSize", "2G"])
            .code,
        5
    );
    env.ok(&["activate", "--name", "x"]);
    env.ok(&["start", "--name", "x"]);
    // 6: the device cannot be found to grow into.
    let moved = env.dir.path().join("x.moved");
    std::fs::rename(dev, &moved).unwrap();
    let grow = env.uvdo(&["growPhysical", "--name", "x"]);
    std::fs::rename(&moved, dev).unwrap();
    assert_eq!(grow.code, 6);
    assert!(
        grow.stderr.contains("cannot read the size of"),
        "{}",
        grow.stderr
    );
    // The failed grow left its operation state; the next command repairs it.
    let text = std::fs::read_to_string(env.conf()).unwrap();
    assert!(text.contains("beginGrowPhysical"), "{text}");
    env.ok(&["growLogical", "--name", "x", "--vdoLogicalSize", "2G"]);
    let text = std::fs::read_to_string(env.conf()).unwrap();
    assert!(text.contains("logicalSize = \"2G\""), "{text}");
    let comp = env.ok(&["enableCompression", "--name", "x"]);
    assert!(
        comp.stdout.contains("compression is not implemented yet"),
        "{}",
        comp.stdout
    );
    env.ok(&["stop", "--name", "x"]);
    // 4: an operation state this version does not know.
    let text = std::fs::read_to_string(env.conf()).unwrap();
    std::fs::write(
        env.conf(),
        text.replace("\"finished\"", "\"beginFrobnicate\""),
    )
    .unwrap();
    let odd = env.uvdo(&["start", "--name", "x"]);
    assert_eq!(odd.code, 4);
    assert!(
        odd.stderr
            .contains("unknown operation state: beginFrobnicate")
    );
    // 0: help and version.
    assert_eq!(env.uvdo(&["version"]).code, 0);
    // A dry run prints the whole budget and writes nothing.
    let dry = env.ok(&[
        "create",
        "--name",
        "z",
        "--device",
        env.device("z.img").to_str().unwrap(),
        "--dryRun",
    ]);
    for part in [
        "reference counts",
        "block map cache",
        "dedupe index",
        "recovery journal",
        "overhead",
    ] {
        assert!(dry.stdout.contains(part), "{}", dry.stdout);
    }
}
