//! The bad-input catalogue (tests/e2e/bad-input/catalogue.yaml), end to end: every case is
//! applied at once into one environment with the real kaws, kubectl and moto. A spec AWS would
//! refuse is either refused by the API server at apply (CRD schema, CEL) with a message naming
//! the field, or stored and given a terminal `Synced=False` naming the field, without a hot
//! loop, a panic, a Ready object or a secret in sight.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::NamespaceResourceScope;
use kaws::resources::{
    bucket::Bucket, dbinstance::DBInstance, function::Function, instance::Instance, table::Table,
};
use kaws_e2e::{
    Env,
    env::{EnvOptions, condition, tail},
    kaws::sum_samples,
    kubectl,
    moto::workspace_root,
    unique_name,
};
use kube::{Resource, api::ListParams};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

#[derive(Debug, Deserialize)]
struct Catalogue {
    cases: Vec<Case>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Also the object's `metadata.name`.
    id: String,
    /// One line: why AWS (or kaws) cannot take this spec.
    reason: String,
    expect: Expect,
    /// A fragment of the apply error (refused) or of the `Synced` message (terminal).
    message: String,
    /// The `Synced` reason of a terminal case.
    #[serde(default = "invalid_spec")]
    condition_reason: String,
    /// One or more YAML documents; the kaws object is the one named `id`.
    manifest: String,
}

fn invalid_spec() -> String {
    "InvalidSpec".to_string()
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Refused,
    Terminal,
}

/// Values in the catalogue that no status or Event may show, and whether they come from a Secret
/// (then no log line may show them either).
const CANARIES: &[(&str, bool)] = &[
    ("CANARY-USERDATA", true),
    ("CANARY-PASSWORD", true),
    ("CANARY-ENV-VALUE", false),
];

/// The five kinds, by the `kind:` their manifests carry.
const KINDS: &[&str] = &["Bucket", "DBInstance", "Table", "Instance", "Function"];

fn catalogue() -> Vec<Case> {
    let path: PathBuf = workspace_root().join("tests/e2e/bad-input/catalogue.yaml");
    let text = std::fs::read_to_string(&path).expect("read the catalogue");
    let catalogue: Catalogue = serde_saphyr::from_str(&text).expect("the catalogue parses");
    catalogue.cases
}

/// Expands the catalogue's placeholders: `${UNIQUE}`, `${c*N}` and `${tags:N}`.
fn expand(manifest: &str, unique: &str) -> String {
    let mut out = String::new();
    let mut rest = manifest;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').expect("placeholder closed");
        let body = &after[..end];
        if body == "UNIQUE" {
            out.push_str(unique);
        } else if let Some(n) = body.strip_prefix("tags:") {
            let n: usize = n.parse().expect("${tags:N}");
            let tags: Vec<String> = (0..n).map(|i| format!("t{i}: v")).collect();
            out.push_str(&format!("{{{}}}", tags.join(", ")));
        } else if let Some((text, n)) = body.split_once('*') {
            out.push_str(&text.repeat(n.parse().expect("${c*N}")));
        } else {
            panic!("unknown placeholder ${{{body}}}");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The kind of the document named `id`.
fn kind_of(case: &Case) -> String {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&expand(&case.manifest, "x"))
        .unwrap_or_else(|e| panic!("{}: manifest does not parse: {e}", case.id));
    docs.iter()
        .find(|d| d["metadata"]["name"] == case.id.as_str())
        .and_then(|d| d["kind"].as_str())
        .unwrap_or_else(|| panic!("{}: no document is named after the case", case.id))
        .to_string()
}

#[test]
fn catalogue_is_well_formed_and_covers_every_kind() {
    let cases = catalogue();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut ids = BTreeSet::new();
    let mut per_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for case in &cases {
        assert!(ids.insert(case.id.clone()), "duplicate id {}", case.id);
        assert!(!case.reason.trim().is_empty(), "{}: no reason", case.id);
        assert!(!case.message.trim().is_empty(), "{}: no message", case.id);
        let kind = kind_of(case);
        assert!(KINDS.contains(&kind.as_str()), "{}: kind {kind}", case.id);
        let counts = per_kind.entry(kind).or_default();
        match case.expect {
            Expect::Refused => counts.0 += 1,
            Expect::Terminal => counts.1 += 1,
        }
    }
    for kind in KINDS {
        let (refused, terminal) = per_kind.get(*kind).copied().unwrap_or_default();
        assert!(
            refused > 0 && terminal > 0,
            "{kind}: {refused} refused and {terminal} terminal cases; want both"
        );
    }
}

/// Every object of kind `K` in the test's namespace, by name, as JSON.
async fn objects<K>(env: &Env) -> anyhow::Result<BTreeMap<String, Value>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    Ok(env
        .api::<K>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|o| {
            let name = o.meta().name.clone().unwrap_or_default();
            (name, serde_json::to_value(&o).expect("object as JSON"))
        })
        .collect())
}

async fn all_objects(env: &Env) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut all = objects::<Bucket>(env).await?;
    all.extend(objects::<DBInstance>(env).await?);
    all.extend(objects::<Table>(env).await?);
    all.extend(objects::<Instance>(env).await?);
    all.extend(objects::<Function>(env).await?);
    Ok(all)
}

/// `kaws_reconciles_total` per kind.
async fn reconciles(env: &Env) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let text = env.kaws.metrics().await?;
    Ok(KINDS
        .iter()
        .map(|kind| {
            let needle = format!("kind=\"{kind}\"");
            let n = sum_samples(&text, "kaws_reconciles_total", |l| l.contains(&needle));
            (*kind, n)
        })
        .collect())
}

/// Why a terminal case is not (yet) where it must end, or `None` when it is there.
fn terminal_problem(case: &Case, obj: Option<&Value>) -> Option<String> {
    let Some(obj) = obj else {
        return Some("the object is not stored".into());
    };
    let synced = condition(obj, "Synced");
    let ok = synced.is_some_and(|c| {
        c["status"] == "False"
            && c["reason"] == case.condition_reason.as_str()
            && c["message"]
                .as_str()
                .is_some_and(|m| m.contains(&case.message))
    });
    (!ok).then(|| format!("Synced is {synced:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_at_apply_or_terminal_without_a_loop() -> anyhow::Result<()> {
    let started = Instant::now();
    let cases = catalogue();
    // kaws' own logs at trace level: a secret must not reach them at any level.
    let env = Env::start_with(EnvOptions {
        extra_env: [("RUST_LOG".to_string(), "info,kaws=trace".to_string())].into(),
        ..EnvOptions::default()
    })
    .await?;
    let before = reconciles(&env).await?;

    // Refused cases: one kubectl each (to read each one's error), a few at a time.
    let refused: Vec<&Case> = cases
        .iter()
        .filter(|c| c.expect == Expect::Refused)
        .collect();
    let terminal: Vec<&Case> = cases
        .iter()
        .filter(|c| c.expect == Expect::Terminal)
        .collect();
    let mut failures = Vec::new();
    // Terminal cases go in one apply of one file, so kaws sees them all at once.
    let all_terminal: Vec<String> = terminal
        .iter()
        .map(|c| expand(&c.manifest, &unique_name("x")[2..]))
        .collect();
    let out = env.apply(&all_terminal.join("---\n"));
    assert!(
        out.status.success(),
        "terminal cases must be accepted by the API server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each refused case from its own file, with its own kubectl, a few at a time.
    let (kubeconfig, namespace, dir) = (&env.kubeconfig, env.namespace.as_str(), env.path());
    let outputs: Vec<(&Case, std::process::Output)> = std::thread::scope(|s| {
        refused
            .chunks(refused.len().div_ceil(6).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|c| {
                            let path = dir.join(format!("{}.yaml", c.id));
                            let yaml = expand(&c.manifest, &unique_name("x")[2..]);
                            std::fs::write(&path, yaml).expect("write manifest");
                            let path = path.display().to_string();
                            let args = ["-n", namespace, "apply", "-f", path.as_str()];
                            (*c, kubectl::run(kubeconfig, &args))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|h| h.join().expect("apply thread"))
            .collect()
    });
    for (case, out) in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!(
                "{}: applied, but must be refused ({})",
                case.id, case.reason
            ));
        } else if !stderr.contains(&case.message) {
            failures.push(format!(
                "{}: refused without {:?} in the message: {}",
                case.id,
                case.message,
                stderr.trim()
            ));
        }
    }

    // Terminal cases: wait for each to reach its condition.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut pending: BTreeMap<&str, String> = BTreeMap::new();
    loop {
        let objs = all_objects(&env).await?;
        pending.clear();
        for case in &terminal {
            if let Some(problem) = terminal_problem(case, objs.get(&case.id)) {
                pending.insert(&case.id, problem);
            }
        }
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (id, problem) in &pending {
        let case = terminal.iter().find(|c| c.id == *id).expect("case");
        failures.push(format!(
            "{id}: not terminal with {:?} / {:?} ({}): {problem}",
            case.condition_reason, case.message, case.reason
        ));
    }

    // Terminal means terminal: over a quiet window the objects are not reconciled again.
    let settled = reconciles(&env).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = reconciles(&env).await?;
    let objs = all_objects(&env).await?;
    let mut figures = Vec::new();
    for kind in KINDS {
        let n = terminal.iter().filter(|c| kind_of(c) == *kind).count() as u64;
        let total = after[kind] - before[kind];
        let in_window = after[kind] - settled[kind];
        figures.push(format!("{kind} {total}/{n}"));
        // Each object: the reconcile that found the problem, the one its own status write
        // woke, and slack for a Secret or an Event arriving late. A loop does hundreds.
        if total > 4 * n || in_window > n {
            failures.push(format!(
                "{kind}: {total} reconciles for {n} terminal objects, {in_window} of them in the quiet window"
            ));
        }
    }
    for case in &refused {
        if objs.contains_key(&case.id) {
            failures.push(format!("{}: refused, yet stored", case.id));
        }
    }
    for case in &terminal {
        if let Some(obj) = objs.get(&case.id)
            && condition(obj, "Ready").is_some_and(|c| c["status"] == "True")
        {
            failures.push(format!("{}: Ready=True", case.id));
        }
    }

    let logs = env.kaws.logs();
    if logs.contains("panicked") {
        failures.push(format!("kaws panicked:\n{}", tail(&logs, 40)));
    }
    // A Secret's content must not surface anywhere; an inline value refused by validation must
    // not be echoed into a condition or an Event.
    let statuses: String = objs.values().map(|o| o["status"].to_string()).collect();
    let events = env.kubectl_ok(&["get", "events", "-o", "json"]);
    let metrics = env.kaws.metrics().await?;
    for (canary, secret) in CANARIES {
        let mut places = vec![
            ("status", &statuses),
            ("Events", &events),
            ("metrics", &metrics),
        ];
        if *secret {
            places.push(("log", &logs));
        }
        for (what, text) in places {
            if text.contains(canary) {
                failures.push(format!("canary {canary} found in kaws' {what}"));
            }
        }
    }

    println!(
        "bad-input catalogue: {} cases ({} refused, {} terminal), {} failures, {:.1}s; reconciles per terminal objects: {}",
        cases.len(),
        refused.len(),
        terminal.len(),
        failures.len(),
        started.elapsed().as_secs_f64(),
        figures.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}\nkaws log tail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        tail(&logs, 30)
    );
    Ok(())
}
