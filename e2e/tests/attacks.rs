//! The attack suite: techniques of MITRE ATT&CK for Containers run inside a workload that
//! herdwatch has learned and promoted, and normal operation of another one that must raise
//! no alarm at all.
//!
//! The workload is the web shop of `herdwatch_e2e::shop`: busybox httpd as uid 1000 with a
//! command injection in its stock lookup. Nearly every technique is run through that bug,
//! so it runs from the shop's own CGI shell, as an intruder's would; one runs through
//! `kubectl exec`, as stolen credentials would. Each technique expects a violation record
//! of a given rule whose subject names what it did: a record for another reason does not
//! count. The suite prints a table of what was caught and by which rule.
//!
//! While the attacks run, a second shop (same image, its own profile) goes through a
//! normal day: load, a rolling update to another digest of the same files, scaling from 2
//! to 5 replicas, pods deleted and replaced, and probes of all three kinds throughout. Its
//! target is zero violations.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use herdwatch_api::BehaviorViolation;
use herdwatch_e2e::fixtures::{
    cluster_ip, create, describe_profile, service, wait_deployment_ready, wait_enforcing, WEB_PORT,
};
use herdwatch_e2e::shop::{inject, shop_client, shop_deployment, shop_profile, SHOP_IMAGE_V2};
use herdwatch_e2e::{describe_violations, step, violations, with_temp_ns, Env};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The attacked shop and the one that only lives a normal day.
const SHOP: &str = "shop";
const CALM: &str = "calm";
/// How long the normal-operation load runs (`HERDWATCH_E2E_LOAD_SECONDS` overrides).
const LOAD_SECONDS: u64 = 300;
/// How long the suite waits for the attacks' records after the last attack. The agent
/// holds back record creations beyond a per-pod rate, and this wait runs beside the
/// normal day's, so it costs nothing when the records come sooner.
const RECORD_TIMEOUT: Duration = Duration::from_secs(240);

/// How an attack reaches the shop.
#[derive(Clone, Copy)]
enum Via {
    /// A command through the lookup's injection: run by the shop's CGI shell.
    Injection(&'static str),
    /// `kubectl exec <pod> -- <argv>`: an operator's credentials used by an intruder.
    KubectlExec(&'static [&'static str]),
}

/// What a technique must leave behind.
#[derive(Clone, Copy)]
enum Expect {
    /// A record of one of these rules whose subject starts with one of its subjects.
    Record(&'static [(&'static str, &'static [&'static str])]),
}

struct Technique {
    /// ATT&CK id and name.
    id: &'static str,
    name: &'static str,
    /// Which replica of the shop it runs in (0, 1, 2): techniques that leave the same
    /// subject (a new `rm`, an `unlink`) run in different pods, so each record is its own.
    replica: usize,
    via: Via,
    expect: Expect,
}

const fn injected(
    id: &'static str,
    name: &'static str,
    replica: usize,
    command: &'static str,
    expect: Expect,
) -> Technique {
    Technique {
        id,
        name,
        replica,
        via: Via::Injection(command),
        expect,
    }
}

/// A record of `rule` whose subject starts with one of `subjects`.
macro_rules! record {
    ($rule:expr, $subjects:expr) => {
        Expect::Record(&[($rule, $subjects)])
    };
}

const PROCESSES: &str = "profile/processes";
const FILES: &str = "profile/files";
const SYSCALLS: &str = "profile/syscalls";
const EGRESS: &str = "profile/egress";

/// Placeholders in commands: `{peer}` is another shop pod's IP.
#[rustfmt::skip]
const TECHNIQUES: &[Technique] = &[
    // Execution.
    injected("T1059.004", "Unix shell other than the learned one", 0, "ash -c 'echo hi'", record!(PROCESSES, &["/bin/ash", "/proc/self/exe [ash "])),
    injected("T1059", "Interpreter running a command (awk system())", 0, "awk 'BEGIN { system(\"hostname\") }'",
        // busybox runs awk inside the forked shell (no exec of its own): what shows is the
        // shell it starts to run a command, which the shop never does.
        record!(PROCESSES, &["/bin/sh "])),
    // Not with wget: Debian's busybox-static 1.35 wget dies of SIGSEGV before it opens a
    // socket, so it would transfer nothing and only its exec would be seen.
    injected("T1105", "Ingress tool transfer (HTTP over nc)", 0, "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {peer} 8080 > /tmp/fetched", record!(EGRESS, &["{peer}:8080/"])),
    injected("T1204.002", "Downloaded binary run from /tmp", 0, "cp /bin/busybox /tmp/tool; /tmp/tool true", record!(PROCESSES, &["/tmp/tool"])),
    injected("T1620", "Fileless execution from a memfd", 0, "/usr/local/bin/attack memfd-exec", record!(PROCESSES, &["/memfd:payload"])),
    injected("T1036.005", "Masquerading: a learned name in another place", 0, "cp /bin/busybox /tmp/httpd; /tmp/httpd true", record!(PROCESSES, &["/tmp/httpd"])),
    injected("T1027", "Execution from /dev/shm", 0, "cp /bin/busybox /dev/shm/k; /dev/shm/k true",
        // /dev/shm is mounted noexec, so the run itself fails before it starts: what shows
        // is the binary written there (or, on a runtime that allows it, its run).
        Expect::Record(&[(PROCESSES, &["/dev/shm/k"]), (FILES, &["/dev/shm/k ("])])),
    Technique { id: "T1609", name: "Container administration command (kubectl exec)", replica: 0, via: Via::KubectlExec(&["ls", "/"]), expect: record!(PROCESSES, &["/bin/ls"]) },
    // Persistence.
    injected("T1053.003", "Cron job", 1, "echo '* * * * * /tmp/tool' > /etc/crontabs/app", record!(FILES, &["/etc/crontabs/app "])),
    injected("T1546.004", "Shell configuration modification", 1, "echo 'wget x' >> /etc/profile", record!(FILES, &["/etc/profile "])),
    injected("T1554", "Binary planted in a binary directory", 1, "echo x > /usr/local/bin/backdoor", record!(FILES, &["/usr/local/bin/backdoor "])),
    injected("T1098.004", "SSH authorized keys", 1, "mkdir -p /home/app/.ssh; echo key >> /home/app/.ssh/authorized_keys", record!(FILES, &["/home/app/.ssh/authorized_keys "])),
    // Credential access.
    injected("T1003.008", "/etc/shadow", 1, "cat /etc/shadow", record!(FILES, &["/etc/shadow "])),
    injected("T1528", "Service account token", 1, "cat /var/run/secrets/kubernetes.io/serviceaccount/token", record!(FILES, &["/var/run/secrets/kubernetes.io/serviceaccount/token "])),
    injected("T1552.001", "Cloud credentials in files", 1, "cat /home/app/.aws/credentials", record!(FILES, &["/home/app/.aws/credentials "])),
    injected("T1552.004", "Private keys", 1, "cat /etc/ssl/private/shop.key", record!(FILES, &["/etc/ssl/private/shop.key "])),
    injected("T1003.007", "Process environment (/proc/*/environ)", 1, "cat /proc/1/environ", record!(FILES, &["/proc/1/environ "])),
    injected("T1552", "Kernel keyring", 1, "/usr/local/bin/attack keyctl", record!(SYSCALLS, &["keyctl"])),
    // Privilege escalation.
    injected("T1548.001", "Set-user-ID program", 2, "/usr/local/bin/shop-admin keyctl", record!(PROCESSES, &["/usr/local/bin/shop-admin as uid 0"])),
    injected("T1611", "Escape: new namespaces (unshare)", 2, "unshare -r -m true", record!(SYSCALLS, &["unshare"])),
    injected("T1611", "Escape: enter the host's namespaces (setns)", 2, "nsenter -t 1 -n true", record!(SYSCALLS, &["setns"])),
    injected("T1611", "Escape: mount", 2, "mount -t tmpfs none /tmp", record!(SYSCALLS, &["mount"])),
    injected("T1055.008", "Process injection (ptrace)", 2, "/usr/local/bin/attack ptrace 1", record!(SYSCALLS, &["ptrace"])),
    // Discovery and lateral movement.
    injected("T1613", "Container and resource discovery (the API server)", 2, "nc -w 1 {apiserver} 443 </dev/null", record!(EGRESS, &["{apiserver}:"])),
    injected("T1046", "Network service discovery (port scan)", 2, "nc -w 1 {peer} 22 </dev/null", record!(EGRESS, &["{peer}:22/"])),
    injected("T1571", "Lateral movement on a non-standard port", 2, "nc -w 1 {peer} 4444 </dev/null", record!(EGRESS, &["{peer}:4444/"])),
    injected("T1040", "Raw socket for sniffing and forging (ping)", 2, "ping -c 1 -W 1 {peer}", record!(SYSCALLS, &["socket_raw"])),
    // Defense evasion.
    injected("T1070.002", "Clearing the shop's log", 2, ": > /var/log/shop/access.log", record!(FILES, &["/var/log/shop/access.log (write+create+truncate"])),
    injected("T1070.003", "Deleting shell history", 2, "rm -f /home/app/.ash_history", record!(SYSCALLS, &["unlink"])),
    injected("T1222", "Hard link over a sensitive file", 1, "ln /etc/shadow /tmp/s", record!(SYSCALLS, &["link"])),
    injected("T1222", "Symbolic link to a sensitive file", 1, "ln -s /etc/shadow /tmp/t", record!(SYSCALLS, &["symlink"])),
    // Impact.
    injected("T1485", "Bulk deletion", 0, "rm -rf /www/data", record!(SYSCALLS, &["unlink", "rmdir"])),
];

/// The IPs of a ready shop's pods, in name order.
fn pod_ips(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_else(|| panic!("pod {} has no IP", p.name_any()))
        })
        .collect()
}

/// The rows of the printed table: technique, outcome, how.
struct Row {
    id: &'static str,
    name: &'static str,
    caught: bool,
    how: String,
}

#[tokio::test]
async fn attack_techniques_are_caught_and_a_normal_day_raises_no_alarm() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "attacks", &[], |env, ns| async move {
        // Both shops learn at the same time, with their probes and normal traffic.
        for name in [SHOP, CALM] {
            create(&env, &ns, &service(name)).await;
            create(&env, &ns, &shop_profile(name)).await;
        }
        create(&env, &ns, &shop_deployment(SHOP, 3)).await;
        create(&env, &ns, &shop_deployment(CALM, 2)).await;
        for name in [SHOP, CALM] {
            let ip = cluster_ip(&env, &ns, name).await;
            create(&env, &ns, &shop_client(&format!("{name}-client"), &ip)).await;
        }
        step("shops `shop` (3 replicas) and `calm` (2 replicas) learning, with clients, probes of three kinds, uid 1000");
        let shop_pods = wait_deployment_ready(&env, &ns, SHOP, 3).await;
        wait_deployment_ready(&env, &ns, CALM, 2).await;
        for name in [SHOP, CALM] {
            let p = wait_enforcing(&env, &ns, name).await;
            step(format!("{name} learned: {}", describe_profile(&p)));
            let a = &p.spec.allowed;
            let processes: Vec<String> = a
                .processes
                .iter()
                .map(|e| format!("{} {:?} uid {:?}", e.exe, e.argv.as_deref().unwrap_or_default(), e.uid))
                .collect();
            let files: Vec<String> = a.files.iter().map(|f| format!("{} {:?}", f.pattern(), f.access)).collect();
            let syscalls: Vec<&str> = a.syscalls.iter().map(|s| s.name.as_str()).collect();
            step(format!("  {name} processes: {}", processes.join("; ")));
            step(format!("  {name} files: {}", files.join("; ")));
            step(format!("  {name} syscalls: {}", syscalls.join(" ")));
        }
        let learned = violations(&env, &ns).await.expect("listing records");
        assert!(
            learned.is_empty(),
            "no violation while learning and promoting: {}",
            describe_violations(&learned)
        );

        let before: Vec<String> = wait_deployment_ready(&env, &ns, CALM, 2)
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        let (attacks, calm) = tokio::join!(
            run_attacks(&env, &ns, shop_pods),
            normal_day(&env, &ns),
        );
        print_table(&attacks);
        let caught = attacks.iter().filter(|r| r.caught).count();
        let total = attacks.len();
        step(format!(
            "attack suite: {caught} of {total} techniques caught for their own reason ({:.0}%); false positives during the normal day: {}",
            100.0 * caught as f64 / total as f64,
            calm.len()
        ));
        let missed: Vec<_> = attacks
            .iter()
            .filter(|r| !r.caught)
            .map(|r| format!("{} {}: {}", r.id, r.name, r.how))
            .collect();
        // Every technique is expected to be caught; each miss is printed with the records
        // its pod did get. The rate has to hold in every run.
        step(format!(
            "techniques missed: {}",
            if missed.is_empty() { "none".to_owned() } else { format!("{missed:#?}") }
        ));
        assert!(
            caught * 10 >= total * 9,
            "at least 90% of the techniques are caught ({caught} of {total}); missed: {missed:#?}"
        );
        // No pod raises anything: neither those that served the whole day nor those
        // started during it (the rollout to a new digest, the scale-out, the replacements).
        let (old, new): (Vec<_>, Vec<_>) = calm.into_iter().partition(|v| before.contains(&v.spec.pod));
        step(format!(
            "normal day: {} violations on the pods that served all day, {} on pods started during it",
            old.len(),
            new.len(),
        ));
        assert!(
            old.is_empty() && new.is_empty(),
            "a normal day raises no violation; on the pods that served all day: {}; on the pods started during it: {}",
            describe_violations(&old),
            describe_violations(&new)
        );
    })
    .await;
}

/// Runs every technique against the shop's pods and waits for their records.
async fn run_attacks(env: &Env, ns: &str, pods: Vec<Pod>) -> Vec<Row> {
    let ips = pod_ips(&pods);
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    let apiserver = cluster_ip(env, "default", "kubernetes").await;
    let fill = |text: &str, replica: usize| {
        text.replace("{peer}", &ips[(replica + 1) % ips.len()])
            .replace("{apiserver}", &apiserver)
    };
    for t in TECHNIQUES {
        match t.via {
            Via::Injection(command) => {
                let command = fill(command, t.replica);
                let ip = ips[t.replica].clone();
                let cmd = command.clone();
                let answer = tokio::task::spawn_blocking(move || inject(&ip, &cmd))
                    .await
                    .expect("the request task");
                let status = answer.lines().next().unwrap_or("no answer").to_owned();
                step(format!(
                    "{} {}: injected `{command}` into {}: {status}",
                    t.id, t.name, names[t.replica]
                ));
            }
            Via::KubectlExec(argv) => {
                let mut args = vec!["exec", "-n", ns, &names[t.replica], "-c", SHOP, "--"];
                args.extend(argv);
                let out = env.kubectl(&args);
                step(format!(
                    "{} {}: kubectl exec {}: exit {:?}",
                    t.id,
                    t.name,
                    argv.join(" "),
                    out.status.code()
                ));
            }
        }
    }

    // Wait until every expected record is there, or the time is up.
    let deadline = Instant::now() + RECORD_TIMEOUT;
    let mut records: Vec<BehaviorViolation>;
    loop {
        records = violations(env, ns).await.unwrap_or_default();
        let missing = TECHNIQUES
            .iter()
            .filter(|t| find(t, &records, &names, &fill).is_none())
            .count();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    TECHNIQUES
        .iter()
        .map(|t| {
            let found = find(t, &records, &names, &fill);
            let on_pod: BTreeSet<String> = records
                .iter()
                .filter(|v| v.spec.pod == names[t.replica])
                .map(|v| format!("{} {}", v.spec.rule, v.spec.subject))
                .collect();
            let (caught, how) = match (t.expect, found) {
                (_, Some(v)) => (true, format!("{} {}", v.spec.rule, v.spec.subject)),
                (Expect::Record(alternatives), None) => (
                    false,
                    format!("no record of {alternatives:?}; the pod's records: {on_pod:?}"),
                ),
            };
            Row {
                id: t.id,
                name: t.name,
                caught,
                how,
            }
        })
        .collect()
}

/// The record that shows `t` was caught for its own reason, on the pod it ran in.
fn find<'a>(
    t: &Technique,
    records: &'a [BehaviorViolation],
    pods: &[String],
    fill: &impl Fn(&str, usize) -> String,
) -> Option<&'a BehaviorViolation> {
    let Expect::Record(alternatives) = t.expect;
    records.iter().find(|v| {
        v.spec.pod == pods[t.replica]
            && alternatives.iter().any(|(rule, subjects)| {
                v.spec.rule == *rule
                    && subjects
                        .iter()
                        .any(|s| v.spec.subject.starts_with(&fill(s, t.replica)))
            })
    })
}

fn print_table(rows: &[Row]) {
    eprintln!("\n| technique | name | result | by |");
    eprintln!("|---|---|---|---|");
    for r in rows {
        let result = if r.caught { "caught" } else { "MISSED" };
        eprintln!(
            "| {} | {} | {result} | {} |",
            r.id,
            r.name,
            r.how.replace('|', "\\|")
        );
    }
    eprintln!();
}

/// A normal day of the calm shop: load through its Service, a rolling update to the same
/// files under another digest, scaling from 2 to 5, pods deleted and replaced; probes run
/// throughout. Returns the violation records of the calm shop's pods.
async fn normal_day(env: &Env, ns: &str) -> Vec<BehaviorViolation> {
    let seconds = std::env::var("HERDWATCH_E2E_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(LOAD_SECONDS);
    let ip = cluster_ip(env, ns, CALM).await;
    let load = tokio::task::spawn_blocking(move || load(&ip, seconds));

    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    let pp = PatchParams::default();
    let calm_records = || async {
        violations(env, ns)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|v| {
                v.spec.pod.starts_with(&format!("{CALM}-"))
                    && !v.spec.pod.starts_with(&format!("{CALM}-client"))
            })
            .collect::<Vec<_>>()
    };

    tokio::time::sleep(Duration::from_secs(20)).await;
    step(format!(
        "normal day: rolling update of {CALM} to {SHOP_IMAGE_V2} (same files, another digest)"
    ));
    deployments
        .patch(CALM, &pp, &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": CALM, "image": SHOP_IMAGE_V2}]}}}})))
        .await
        .expect("updating the calm shop's image");
    wait_deployment_ready(env, ns, CALM, 2).await;
    step(format!(
        "normal day: after the rolling update, {} violations",
        calm_records().await.len()
    ));

    step(format!("normal day: scaling {CALM} from 2 to 5"));
    deployments
        .patch(CALM, &pp, &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .expect("scaling the calm shop");
    let pods = wait_deployment_ready(env, ns, CALM, 5).await;
    step(format!(
        "normal day: after scaling, {} violations",
        calm_records().await.len()
    ));

    step("normal day: two pods deleted; the Deployment replaces them");
    let pod_api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    for p in pods.iter().take(2) {
        pod_api
            .delete(&p.name_any(), &DeleteParams::default())
            .await
            .expect("deleting a calm pod");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_deployment_ready(env, ns, CALM, 5).await;
    step(format!(
        "normal day: after the restarts, {} violations",
        calm_records().await.len()
    ));

    let summary = load.await.expect("the load task");
    step(format!("normal day: load done: {summary}"));
    // Records of the last moments reach the API within a few seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    calm_records().await
}

/// `ab` against the calm shop's status page and lookup at once, for `seconds`; returns
/// its figures.
fn load(ip: &str, seconds: u64) -> String {
    let body = std::env::temp_dir().join("herdwatch-e2e-lookup-body");
    std::fs::write(&body, "pear\n").expect("writing the lookup body");
    let ab = |extra: Vec<String>, url: String| {
        let mut args: Vec<String> = ["-q", "-r", "-s", "10", "-n", "10000000", "-t"]
            .map(String::from)
            .to_vec();
        args.push(seconds.to_string());
        args.extend(extra);
        args.push(url);
        std::thread::spawn(move || {
            Command::new("ab").args(&args).output().unwrap_or_else(|e| {
                panic!("cannot run ab ({e}): install it with `apt-get install apache2-utils` (make e2e-test does)")
            })
        })
    };
    let status = ab(
        vec!["-c".into(), "2".into()],
        format!("http://{ip}:{WEB_PORT}/cgi-bin/status"),
    );
    let lookup = ab(
        vec![
            "-c".into(),
            "1".into(),
            "-p".into(),
            body.display().to_string(),
            "-T".into(),
            "text/plain".into(),
        ],
        format!("http://{ip}:{WEB_PORT}/cgi-bin/lookup"),
    );
    let figure = |out: std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let pick = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("?")
                .to_owned()
        };
        format!(
            "{} requests, {} failed, {}/s",
            pick("Complete requests:"),
            pick("Failed requests:"),
            pick("Requests per second:")
        )
    };
    format!(
        "{seconds} s; status page: {}; lookup: {}",
        figure(status.join().expect("the status page load")),
        figure(lookup.join().expect("the lookup load"))
    )
}
