//! `kubectl colony`: the on-call engineer's view of colony-operator's resources, and the
//! runbook's manual actions (fallback override, forced key rotation, maintenance now).
mod decide;
mod report;

use std::process::ExitCode;

use anyhow::{Context, anyhow};
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use colony_operator::api::{
    ColonyServer, END_NOW_ANNOTATION, FALLBACK_ANNOTATION, FinanceBee, KeyRotation, MaintenanceWindow,
    ROTATE_NOW_ANNOTATION,
};
use colony_operator::duration::parse_go_duration;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::decide::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl colony",
    bin_name = "kubectl colony",
    version,
    about = "The on-call engineer's view of colony-operator's resources"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's namespace).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Servers, Finance Bees, key rotations and maintenance windows on one screen.
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Override a ColonyServer's direct-processing fallback: on, off, or auto (the operator
    /// decides; removes the override).
    Fallback {
        #[arg(value_enum)]
        mode: FallbackMode,
        /// The ColonyServer.
        server: String,
    },
    /// Force one rotation of a KeyRotation's key now.
    RotateNow {
        /// The KeyRotation.
        keyrotation: String,
    },
    /// Start or end maintenance of a ColonyServer.
    Maintenance {
        #[command(subcommand)]
        action: Maintenance,
    },
    /// Why an object is not Ready: its conditions, most important first, and its recent Events.
    Explain {
        /// KIND/NAME, e.g. colonyserver/prod, fb/finance-bee, kr/bee-key, mw/sunday.
        object: String,
    },
}

#[derive(Subcommand, Debug)]
enum Maintenance {
    /// Create a one-off MaintenanceWindow of SERVER starting now: the fallback goes on.
    Start {
        /// The ColonyServer.
        server: String,
        /// How long the window stays open (Go duration, e.g. 30m, 1h).
        #[arg(long = "for", value_name = "DURATION")]
        for_: String,
        /// Also scale the server's FinanceBees to zero for the window.
        #[arg(long)]
        stop_bees: bool,
        /// Name of the window (default: <server>-maint-<yyyymmdd-hhmmss>).
        #[arg(long)]
        name: Option<String>,
    },
    /// End a MaintenanceWindow's open window now (it is then verified as usual).
    End {
        /// The MaintenanceWindow.
        window: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FallbackMode {
    On,
    Off,
    Auto,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::try_default().await.context("connecting to the cluster (kubeconfig)")?;
    let ns = cli.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    match cli.command {
        Command::Status { all_namespaces, output } => status(&client, &ns, all_namespaces, output).await,
        Command::Fallback { mode, server } => fallback(&client, &ns, mode, &server).await,
        Command::RotateNow { keyrotation } => rotate_now(&client, &ns, &keyrotation).await,
        Command::Maintenance { action: Maintenance::Start { server, for_, stop_bees, name } } => {
            maintenance_start(&client, &ns, &server, &for_, stop_bees, name).await
        }
        Command::Maintenance { action: Maintenance::End { window } } => maintenance_end(&client, &ns, &window).await,
        Command::Explain { object } => explain(&client, &ns, &object).await,
    }
}

/// An API error about one object, named with its kind and namespace.
fn object_error(e: kube::Error, kind: &str, name: &str, ns: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => anyhow!("{kind} {name} not found in namespace {ns}"),
        kube::Error::Api(s) if s.code == 403 => {
            anyhow!("not allowed to access {kind} {name} in namespace {ns}: {}", s.message)
        }
        _ => anyhow!("{kind} {name} in namespace {ns}: {e}"),
    }
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> anyhow::Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns).get(name).await.map_err(|e| object_error(e, &K::kind(&()), name, ns))
}

async fn list<K>(client: &Client, ns: &str, all: bool) -> anyhow::Result<Vec<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = if all { Api::<K>::all(client.clone()) } else { Api::<K>::namespaced(client.clone(), ns) };
    let where_ = if all { "all namespaces".to_string() } else { format!("namespace {ns}") };
    let list = api.list(&ListParams::default()).await.map_err(|e| match &e {
        kube::Error::Api(s) if s.code == 404 => {
            anyhow!("the {} CRD is not installed (kubectl apply -f crds/)", K::plural(&()))
        }
        _ => anyhow!("listing {} in {where_}: {e}", K::plural(&())),
    })?;
    Ok(list.items)
}

async fn status(client: &Client, ns: &str, all: bool, output: Output) -> anyhow::Result<()> {
    let (servers, bees, keys, windows) = tokio::try_join!(
        list::<ColonyServer>(client, ns, all),
        list::<FinanceBee>(client, ns, all),
        list::<KeyRotation>(client, ns, all),
        list::<MaintenanceWindow>(client, ns, all),
    )?;
    let report = report::build_report(&servers, &bees, &keys, &windows);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Table => print!("{}", report::render_table(&report, Utc::now(), all)),
    }
    Ok(())
}

/// Sets (or, with `None`, removes) one annotation of a namespaced object by merge patch.
async fn annotate<K>(client: &Client, ns: &str, name: &str, key: &str, value: Option<&str>) -> anyhow::Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    Api::<K>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| object_error(e, &K::kind(&()), name, ns))
}

async fn fallback(client: &Client, ns: &str, mode: FallbackMode, server: &str) -> anyhow::Result<()> {
    // Read first: a patch of a missing object must not be reported as done.
    get::<ColonyServer>(client, ns, server).await?;
    let value = match mode {
        FallbackMode::On => Some("on"),
        FallbackMode::Off => Some("off"),
        FallbackMode::Auto => None,
    };
    annotate::<ColonyServer>(client, ns, server, FALLBACK_ANNOTATION, value).await?;
    match value {
        Some(v) => println!(
            "ColonyServer {server} in namespace {ns}: annotation {FALLBACK_ANNOTATION}={v} set; the operator forces \
             the fallback {v} until `kubectl colony fallback auto {server}`"
        ),
        None => println!(
            "ColonyServer {server} in namespace {ns}: annotation {FALLBACK_ANNOTATION} removed; the operator decides \
             the fallback (health, SLO, maintenance)"
        ),
    }
    Ok(())
}

async fn rotate_now(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let kr = get::<KeyRotation>(client, ns, name).await?;
    let previous = kr.annotations().get(ROTATE_NOW_ANNOTATION).cloned();
    let token = decide::fresh_token(Utc::now(), previous.as_deref());
    annotate::<KeyRotation>(client, ns, name, ROTATE_NOW_ANNOTATION, Some(&token)).await?;
    println!(
        "KeyRotation {name} in namespace {ns}: annotation {ROTATE_NOW_ANNOTATION}={token} set; the operator rotates \
         the key once (status.revision {} goes up when it is done)",
        kr.status.map_or(0, |s| s.revision)
    );
    Ok(())
}

async fn maintenance_start(
    client: &Client,
    ns: &str,
    server: &str,
    for_: &str,
    stop_bees: bool,
    name: Option<String>,
) -> anyhow::Result<()> {
    let length = parse_go_duration(for_).map_err(|e| anyhow!("--for {for_:?}: {e}"))?;
    get::<ColonyServer>(client, ns, server).await?;
    let now = Utc::now();
    let name = name.unwrap_or_else(|| decide::window_name(server, now));
    let window = decide::one_off_window(&name, server, now, length, stop_bees).map_err(|e| anyhow!(e))?;
    let created = Api::<MaintenanceWindow>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &window)
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 409 => {
                anyhow!("MaintenanceWindow {name} already exists in namespace {ns} (choose another with --name)")
            }
            _ => object_error(e, "MaintenanceWindow", &name, ns),
        })?;
    let schedule = &created.spec.schedule;
    let fmt = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    println!(
        "MaintenanceWindow {name} created in namespace {ns}: ColonyServer {server} under maintenance from {} to {}; \
         fallback on, FinanceBees {}. End it early with `kubectl colony maintenance end {name}`",
        fmt(schedule.start),
        fmt(schedule.end),
        if stop_bees { "stopped" } else { "left running" }
    );
    Ok(())
}

async fn maintenance_end(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let mw = get::<MaintenanceWindow>(client, ns, name).await?;
    let previous = mw.annotations().get(END_NOW_ANNOTATION).cloned();
    let token = decide::fresh_token(Utc::now(), previous.as_deref());
    annotate::<MaintenanceWindow>(client, ns, name, END_NOW_ANNOTATION, Some(&token)).await?;
    let phase = mw.status.and_then(|s| s.phase).map_or_else(|| "unknown".to_string(), |p| format!("{p:?}"));
    println!(
        "MaintenanceWindow {name} in namespace {ns}: annotation {END_NOW_ANNOTATION}={token} set (phase was {phase}); \
         the operator closes the open window and verifies the server"
    );
    Ok(())
}

/// The object's conditions and what identifies its Events.
struct Explained {
    uid: Option<String>,
    conditions: Vec<Condition>,
    generation: Option<i64>,
    observed_generation: Option<i64>,
}

async fn explain(client: &Client, ns: &str, object: &str) -> anyhow::Result<()> {
    let (kind, name) = decide::parse_kind_name(object).map_err(|e| anyhow!(e))?;
    // What explain needs of any kind: its identity, conditions and generations.
    fn of<T>(
        o: (Option<String>, Option<i64>),
        status: Option<T>,
        parts: fn(T) -> (Vec<Condition>, Option<i64>),
    ) -> Explained {
        let (conditions, observed_generation) = status.map(parts).unwrap_or_default();
        Explained { uid: o.0, conditions, generation: o.1, observed_generation }
    }
    let id = |m: &kube::api::ObjectMeta| (m.uid.clone(), m.generation);
    let explained = match kind {
        Kind::ColonyServer => {
            let o = get::<ColonyServer>(client, ns, &name).await?;
            of(id(&o.metadata), o.status, |s| (s.conditions, s.observed_generation))
        }
        Kind::FinanceBee => {
            let o = get::<FinanceBee>(client, ns, &name).await?;
            of(id(&o.metadata), o.status, |s| (s.conditions, s.observed_generation))
        }
        Kind::KeyRotation => {
            let o = get::<KeyRotation>(client, ns, &name).await?;
            of(id(&o.metadata), o.status, |s| (s.conditions, s.observed_generation))
        }
        Kind::MaintenanceWindow => {
            let o = get::<MaintenanceWindow>(client, ns, &name).await?;
            of(id(&o.metadata), o.status, |s| (s.conditions, s.observed_generation))
        }
    };
    let kind = kind.as_str();
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.kind={kind},involvedObject.name={name}")))
        .await
        .with_context(|| format!("listing the Events of {kind} {name} in namespace {ns}"))?
        .items
        .into_iter()
        // Events of an earlier object of the same name are not this object's.
        .filter(|e| e.involved_object.uid.is_none() || e.involved_object.uid == explained.uid)
        .collect::<Vec<_>>();
    print!(
        "{}",
        explain::render(
            kind,
            &name,
            ns,
            &explained.conditions,
            explained.generation,
            explained.observed_generation,
            &events,
            Utc::now()
        )
    );
    Ok(())
}

mod explain {
    //! The text of `explain`, from typed values.
    use chrono::{DateTime, Utc};
    use k8s_openapi::api::core::v1::Event;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use crate::decide::conditions_by_importance;
    use crate::report::{age, render_columns};

    /// How many Events are shown, newest last.
    pub const MAX_EVENTS: usize = 10;

    fn event_time(e: &Event) -> Option<DateTime<Utc>> {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .map(|t| DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond() as u32).unwrap_or_default())
    }

    fn condition_line(c: &Condition, now: DateTime<Utc>) -> String {
        let t = c.last_transition_time.0;
        let since = DateTime::from_timestamp(t.as_second(), 0).map(|t| age(t, now)).unwrap_or_default();
        let message = if c.message.is_empty() { String::new() } else { format!(": {}", c.message) };
        format!("  {}={} {} ({since}){message}\n", c.type_, c.status, c.reason)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn render(
        kind: &str,
        name: &str,
        ns: &str,
        conditions: &[Condition],
        generation: Option<i64>,
        observed_generation: Option<i64>,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> String {
        let mut out = String::new();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str());
        let verdict = match ready {
            Some("True") => "is Ready".to_string(),
            Some(s) => format!("is not Ready (Ready={s})"),
            None => "has no Ready condition yet (the operator has not reconciled it)".to_string(),
        };
        out.push_str(&format!("{kind} {name} in namespace {ns} {verdict}\n"));
        if let (Some(g), Some(o)) = (generation, observed_generation)
            && o < g
        {
            out.push_str(&format!("  status describes generation {o}, the spec is at generation {g}\n"));
        }
        let (important, rest) = conditions_by_importance(conditions);
        if !important.is_empty() {
            out.push_str("\nWhy:\n");
            for c in important {
                out.push_str(&condition_line(c, now));
            }
        }
        if !rest.is_empty() {
            out.push_str("\nOther conditions:\n");
            for c in rest {
                out.push_str(&condition_line(c, now));
            }
        }
        let mut events: Vec<&Event> = events.iter().collect();
        events.sort_by_key(|e| event_time(e));
        let skip = events.len().saturating_sub(MAX_EVENTS);
        out.push_str("\nEvents:\n");
        if events.is_empty() {
            out.push_str("  (none)\n");
        } else {
            let rows: Vec<Vec<String>> = events
                .iter()
                .skip(skip)
                .map(|e| {
                    vec![
                        event_time(e).map(|t| age(t, now)).unwrap_or_else(|| "-".into()),
                        e.type_.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        e.count.map_or_else(|| "1".into(), |c| c.to_string()),
                        e.message.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            for line in render_columns(&["AGE", "TYPE", "REASON", "COUNT", "MESSAGE"], &rows).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

        fn t(s: &str) -> DateTime<Utc> {
            DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
        }

        fn time(s: &str) -> Time {
            Time(s.parse().unwrap())
        }

        fn c(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
            Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: time("2026-11-29T13:50:00Z"),
                observed_generation: None,
            }
        }

        #[test]
        fn explains_stalled_first_then_events() {
            let now = t("2026-11-29T14:00:00Z");
            let conditions = vec![
                c("Ready", "False", "InvalidSpec", "spec.image is required"),
                c("Stalled", "True", "InvalidSpec", "spec.image is required"),
                c("Healthy", "Unknown", "NotProbed", ""),
            ];
            let event = Event {
                reason: Some("InvalidSpec".into()),
                type_: Some("Warning".into()),
                message: Some("spec.image is required".into()),
                last_timestamp: Some(time("2026-11-29T13:58:00Z")),
                ..Default::default()
            };
            let out = render("ColonyServer", "prod", "colony", &conditions, Some(3), Some(2), &[event], now);
            assert!(out.starts_with("ColonyServer prod in namespace colony is not Ready (Ready=False)\n"), "{out}");
            assert!(out.contains("generation 2, the spec is at generation 3"), "{out}");
            let stalled = out.find("Stalled=True InvalidSpec (10m): spec.image is required").expect(&out);
            let ready = out.find("Ready=False InvalidSpec").expect(&out);
            let other = out.find("Other conditions:\n  Healthy=Unknown NotProbed (10m)\n").expect(&out);
            assert!(stalled < ready && ready < other, "{out}");
            let events = out.split("Events:\n").nth(1).unwrap();
            assert!(events.contains("2m   Warning  InvalidSpec  1      spec.image is required"), "{out}");
        }

        #[test]
        fn ready_object_without_events() {
            let now = t("2026-11-29T14:00:00Z");
            let out = render("FinanceBee", "bee", "ns", &[c("Ready", "True", "Available", "")], None, None, &[], now);
            assert!(out.starts_with("FinanceBee bee in namespace ns is Ready\n"), "{out}");
            assert!(!out.contains("Why:"), "{out}");
            assert!(out.ends_with("Events:\n  (none)\n"), "{out}");
        }
    }
}
