//! `herdwatch-agent observe`, for real (root, eBPF programs attached): a process that
//! enters a pod-shaped cgroup is shown in its container, and a second one entering from
//! outside while the first is alive is shown as an exec session, as `kubectl exec` would
//! be. The cgroups are made under the real cgroup2 mount and removed afterwards.
//!
//! Needs root and an agent built with its eBPF object; it fails (never skips) otherwise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use herdwatch_node_agent::attribution::cgroup::find_cgroup2_mount;
use serde_json::Value;

const POD_UID: &str = "0b5e7d2c-1a2b-4c3d-8e9f-a0b1c2d3e4f5";
const CONTAINER_ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// Cgroup directories that remove themselves, deepest first.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            // Processes may take a moment to leave after they exited.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn make_cgroups(mount: &Path, rel: &str) -> (Cgroups, PathBuf) {
    let mut made = Vec::new();
    let mut dir = mount.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot create {} (run as root): {e}", dir.display()));
            made.push(dir.clone());
        }
    }
    (Cgroups(made), dir)
}

/// Runs `script` in a shell that first moves itself into `cgroup`, then execs a second
/// shell running the script: the way a runtime's init joins the container, then execs.
fn enter(cgroup: &Path, script: &str) -> std::process::Child {
    let procs = cgroup.join("cgroup.procs");
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec /bin/sh -c '{script}'",
            procs.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn /bin/sh")
}

fn execs<'a>(lines: &'a [Value], exe_suffix: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| {
            l["kind"] == "exec" && l["exe"].as_str().is_some_and(|e| e.ends_with(exe_suffix))
        })
        .collect()
}

#[test]
fn observe_shows_containers_and_exec_sessions() {
    let mount = find_cgroup2_mount(Path::new("/proc/self/mountinfo"))
        .expect("cgroup2 mount")
        .mount_point;
    let rel = format!(
        "/herdwatch-observe-test-{}/kubepods/besteffort/pod{POD_UID}/{CONTAINER_ID}",
        std::process::id()
    );
    let (_cgroups, container) = make_cgroups(&mount, &rel);

    let mut agent = Command::new(env!("CARGO_BIN_EXE_herdwatch-agent"))
        .args([
            "--log-format",
            "json",
            "observe",
            "--format",
            "json",
            "--duration",
            "8s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herdwatch-agent");

    // Wait until the programs are attached and the table is seeded.
    let stderr = agent.stderr.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let logs = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("process table seeded") {
                let _ = ready_tx.send(());
            }
            all.push(line);
        }
        all
    });
    let stdout = agent.stdout.take().unwrap();
    let output = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = agent.kill();
        let _ = agent.wait();
        panic!(
            "observe did not start:\n{}",
            logs.join().unwrap().join("\n")
        );
    }

    // The container's init: it lives on while the exec session runs, and starts a
    // process of its own.
    let mut init = enter(&container, "/bin/sleep 3 & /bin/true; wait");
    std::thread::sleep(Duration::from_millis(500));
    // `kubectl exec`: a second process enters the running container from outside.
    let mut session = enter(&container, "/bin/cat /proc/self/cgroup; /bin/true");
    assert!(session.wait().unwrap().success());
    assert!(init.wait().unwrap().success());

    let status = agent.wait().unwrap();
    let logs = logs.join().unwrap().join("\n");
    assert!(status.success(), "observe failed: {status}\n{logs}");
    let lines: Vec<Value> = output
        .join()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();

    let in_container = |l: &&Value| l["container_id"] == CONTAINER_ID;
    let dump = || {
        lines
            .iter()
            .filter(|l| l["container_id"] == CONTAINER_ID)
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };

    let sleeps: Vec<_> = execs(&lines, "/sleep")
        .into_iter()
        .filter(in_container)
        .collect();
    assert_eq!(sleeps.len(), 1, "one sleep in the container:\n{}", dump());
    let sleep = sleeps[0];
    assert_eq!(
        sleep["exec_session"], false,
        "the init's children are the workload: {sleep}"
    );
    assert_eq!(sleep["argv"], serde_json::json!(["/bin/sleep", "3"]));
    assert_eq!(sleep["pod_uid"], POD_UID);
    assert!(
        sleep["cgroup_path"].as_str().unwrap().ends_with(&rel),
        "{sleep}"
    );
    assert!(
        sleep["ppid"].as_u64().is_some() && sleep["uid"] == 0,
        "{sleep}"
    );

    let cats: Vec<_> = execs(&lines, "/cat")
        .into_iter()
        .filter(in_container)
        .collect();
    assert_eq!(cats.len(), 1, "one cat in the container:\n{}", dump());
    assert_eq!(
        cats[0]["exec_session"], true,
        "entered from outside while the init lives: {}",
        cats[0]
    );

    // Each shell that entered is seen executing in the container: the init's is not a
    // session, the second is.
    let shells: Vec<_> = execs(&lines, "/sh")
        .into_iter()
        .filter(in_container)
        .collect();
    assert_eq!(shells.len(), 2, "{}", dump());
    assert_eq!(shells[0]["exec_session"], false, "{}", shells[0]);
    assert_eq!(shells[1]["exec_session"], true, "{}", shells[1]);

    // The cat opened a file in the container, attributed to it.
    assert!(
        lines
            .iter()
            .filter(in_container)
            .any(|l| l["kind"] == "file"
                && l["path"] == "/proc/self/cgroup"
                && l["exe"].as_str().is_some_and(|e| e.ends_with("/cat"))),
        "{}",
        dump()
    );

    // The summary has the container's cgroup, and the totals say what was lost.
    let summary = lines
        .iter()
        .find(|l| l["kind"] == "summary" && l["container_id"] == CONTAINER_ID)
        .unwrap_or_else(|| panic!("no summary line for the container"));
    assert!(
        summary["events"]["exec"].as_u64().unwrap() >= 5,
        "{summary}"
    );
    let totals = lines.last().unwrap();
    assert_eq!(totals["kind"], "totals");
    assert!(
        totals["lost"].is_object() && totals["lost_total"].is_u64(),
        "{totals}"
    );
}
