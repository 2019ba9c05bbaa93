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
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Servers, Finance Bees, key rotations and maintenance windows on one screen.
    #[command(long_about = "Servers, Finance Bees, key rotations and maintenance windows on one screen.

Replaces the runbook's \"Morning Health Check\" (check-health.py, systemctl status), \"Monitor Task \
Queue\" (queue depth, completion and error rate), step 1 of \"Finance Bee Down\" (systemctl status) \
and of \"Colony Server Down\" (docker-compose ps), and \"Planned Maintenance\" step 5 and After \
(verify health).")]
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Keep watching and redraw whenever an object changes (Ctrl-C to stop). With -o json
        /// or -o yaml, one document per change (JSON: one line each; YAML: `---` between).
        #[arg(short, long)]
        watch: bool,
    },
    /// Override a ColonyServer's direct-processing fallback: on, off, or auto (the operator
    /// decides; removes the override).
    #[command(long_about = "Override a ColonyServer's direct-processing fallback: on, off, or auto (the \
operator decides; removes the override).

`on` replaces the runbook's \"Enable direct processing fallback\" (step 5 of \"Finance Bee Down\" and \
of \"Colony Server Down\", step 2 of \"Planned Maintenance\") and \"Disable Colony OS (Emergency)\" \
(USE_COLONY_OS=false in the Netlify dashboard); `auto` (or `off`) replaces \"Re-enable Colony OS \
processing\" (step 6 of \"Planned Maintenance\").")]
    Fallback {
        #[arg(value_enum)]
        mode: FallbackMode,
        /// The ColonyServer.
        server: String,
    },
    /// Force one rotation of a KeyRotation's key now.
    #[command(long_about = "Force one rotation of a KeyRotation's key now.

Replaces the runbook's \"Rotate Cryptographic Keys\" (generate-keys.sh, store-keys.sh, redeploy the \
Finance Bee): the operator generates the key, stores it in the Secret, registers it and rolls the \
targets.")]
    RotateNow {
        /// The KeyRotation.
        keyrotation: String,
    },
    /// Start or end maintenance of a ColonyServer.
    #[command(long_about = "Start or end maintenance of a ColonyServer.

Replaces the runbook's \"Planned Maintenance\": `start` does Before steps 2 and 3 (enable the \
fallback, stop the Finance Bee with --stop-bees), `end` steps 5 and 6 (verify health, re-enable \
Colony OS processing).")]
    Maintenance {
        #[command(subcommand)]
        action: Maintenance,
    },
    /// Why an object is not Ready: its conditions, most important first, and its recent Events.
    #[command(long_about = "Why an object is not Ready: its conditions, most important first, and its \
recent Events.

Replaces the runbook's log reviews: step 2 of \"Finance Bee Down\" (journalctl -u zyeute-finance-bee) \
and of \"Colony Server Down\" (docker-compose logs colonies-server), as far as the operator saw it.")]
    Explain {
        /// KIND/NAME, e.g. colonyserver/prod, fb/finance-bee, kr/bee-key, mw/sunday.
        object: String,
    },
}

#[derive(Subcommand, Debug)]
enum Maintenance {
    /// Create a one-off MaintenanceWindow of SERVER starting now: the fallback goes on.
    #[command(long_about = "Create a one-off MaintenanceWindow of SERVER starting now: the fallback goes on.

Replaces the runbook's \"Planned Maintenance\" Before steps 2 (enable direct processing fallback) \
and, with --stop-bees, 3 (stop Finance Bee).")]
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
    #[command(long_about = "End a MaintenanceWindow's open window now (it is then verified as usual).

Replaces the runbook's \"Planned Maintenance\" steps 5 (verify health) and 6 (re-enable Colony OS \
processing): the operator verifies the server, then turns the fallback off and starts the bees.")]
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

/// The client for `--kubeconfig` and `--context` as kubectl reads them: without either, the
/// usual inference ($KUBECONFIG, ~/.kube/config, in-cluster).
async fn connect(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> anyhow::Result<Client> {
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions { context: context.map(String::from), ..Default::default() };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.context("reading the kubeconfig")?,
        (None, None) => Config::infer().await.context("finding a kubeconfig (or an in-cluster service account)")?,
    };
    Client::try_from(config).context("connecting to the cluster")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = connect(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    let ns = cli.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    match cli.command {
        Command::Status { all_namespaces, output, watch } => {
            if watch {
                watch_status(&client, &ns, all_namespaces, output).await
            } else {
                status(&client, &ns, all_namespaces, output).await
            }
        }
        Command::Fallback { mode, server } => fallback(&client, &ns, mode, &server).await,
        Command::RotateNow { keyrotation } => rotate_now(&client, &ns, &keyrotation).await,
        Command::Maintenance { action: Maintenance::Start { server, for_, stop_bees, name } } => {
            maintenance_start(&client, &ns, &server, &for_, stop_bees, name).await
        }
        Command::Maintenance { action: Maintenance::End { window } } => maintenance_end(&client, &ns, &window).await,
        Command::Explain { object } => explain(&client, &ns, &object).await,
    }
}

/// The message when the API server does not know a kind at all.
fn crd_missing(plural: &str) -> anyhow::Error {
    anyhow!(
        "the {plural}.{} CRD is not installed in this cluster: install colony-operator's CRDs \
         (`kubectl apply --server-side -f crds/`, or the Helm chart) and check --context",
        colony_operator::api::GROUP
    )
}

/// Whether a 404 is about the kind (its CRD is not installed) rather than one object: the
/// API server names the object in an object's NotFound (`colonyservers... "prod" not found`).
fn kind_not_found(message: &str, name: &str) -> bool {
    !message.contains(&format!("\"{name}\""))
}

/// An API error about one object, named with its kind and namespace.
fn object_error(e: kube::Error, kind: &str, name: &str, ns: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 && kind_not_found(&s.message, name) => {
            crd_missing(&format!("{}s", kind.to_lowercase()))
        }
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
        kube::Error::Api(s) if s.code == 404 => crd_missing(&K::plural(&())),
        _ => anyhow!("listing {} in {where_}: {e}", K::plural(&())),
    })?;
    Ok(list.items)
}

async fn status_report(client: &Client, ns: &str, all: bool) -> anyhow::Result<report::StatusReport> {
    let (servers, bees, keys, windows) = tokio::try_join!(
        list::<ColonyServer>(client, ns, all),
        list::<FinanceBee>(client, ns, all),
        list::<KeyRotation>(client, ns, all),
        list::<MaintenanceWindow>(client, ns, all),
    )?;
    Ok(report::build_report(&servers, &bees, &keys, &windows))
}

async fn status(client: &Client, ns: &str, all: bool, output: Output) -> anyhow::Result<()> {
    let report = status_report(client, ns, all).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Table => print!("{}", report::render_table(&report, Utc::now(), all)),
    }
    Ok(())
}

/// The objects of a watch cache in the order of a list (the API server sorts by namespace
/// and name).
fn sorted<K: Resource + Clone>(objects: Vec<std::sync::Arc<K>>) -> Vec<K> {
    let mut out: Vec<K> = objects.into_iter().map(|o| (*o).clone()).collect();
    out.sort_by_key(|o| (o.namespace(), o.name_any()));
    out
}

/// `status --watch`: one watch per kind feeds a cache of each; every change redraws the
/// screen (or prints a new document) when the report differs from the last one shown.
async fn watch_status(client: &Client, ns: &str, all: bool, output: Output) -> anyhow::Result<()> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    use std::io::{IsTerminal, Write};

    fn watched<K>(
        client: &Client,
        ns: &str,
        all: bool,
    ) -> (reflector::Store<K>, futures::stream::BoxStream<'static, Result<(), watcher::Error>>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let api = if all { Api::<K>::all(client.clone()) } else { Api::<K>::namespaced(client.clone(), ns) };
        let (reader, writer) = reflector::store();
        let events =
            reflector(writer, watcher(api, watcher::Config::default()).default_backoff()).map(|e| e.map(|_| ()));
        (reader, events.boxed())
    }

    // A missing CRD or a forbidden list fails here, with the same message as `status`.
    status_report(client, ns, all).await?;
    let (servers, s1) = watched::<ColonyServer>(client, ns, all);
    let (bees, s2) = watched::<FinanceBee>(client, ns, all);
    let (keys, s3) = watched::<KeyRotation>(client, ns, all);
    let (windows, s4) = watched::<MaintenanceWindow>(client, ns, all);
    let mut events = futures::stream::select_all([s1, s2, s3, s4]);
    let stores_ready = async {
        tokio::try_join!(
            servers.wait_until_ready(),
            bees.wait_until_ready(),
            keys.wait_until_ready(),
            windows.wait_until_ready()
        )
    };
    // The watches only make progress while polled: drive them until every cache holds its list.
    tokio::pin!(stores_ready);
    loop {
        tokio::select! {
            ready = &mut stores_ready => { ready.context("watching colony-operator's resources")?; break; }
            event = events.next() => match event {
                Some(Err(e)) => eprintln!("watch: {e} (retrying)"),
                Some(Ok(())) => {}
                None => return Err(anyhow!("the watches ended")),
            },
        }
    }
    let tty = std::io::stdout().is_terminal();
    let mut shown: Option<String> = None;
    loop {
        let (s, b, k, w) =
            (sorted(servers.state()), sorted(bees.state()), sorted(keys.state()), sorted(windows.state()));
        let report = report::build_report(&s, &b, &k, &w);
        let key = serde_json::to_string(&report)?;
        if shown.as_deref() != Some(key.as_str()) {
            let mut out = std::io::stdout().lock();
            match output {
                Output::Json => writeln!(out, "{key}")?,
                Output::Yaml => write!(out, "---\n{}", serde_yaml::to_string(&report)?)?,
                Output::Table => {
                    let now = Utc::now();
                    if tty {
                        // Clear the screen and go home, as `watch` does.
                        write!(out, "\x1b[2J\x1b[H")?;
                    } else if shown.is_some() {
                        writeln!(out)?;
                    }
                    writeln!(out, "Every change; last at {} (Ctrl-C to stop)", now.format("%H:%M:%S UTC"))?;
                    write!(out, "{}", report::render_table(&report, now, all))?;
                }
            }
            out.flush()?;
            shown = Some(key);
        }
        // Wait for the next change, then let a burst of events settle before redrawing.
        match events.next().await {
            Some(Err(e)) => eprintln!("watch: {e} (retrying)"),
            Some(Ok(())) => {}
            None => return Err(anyhow!("the watches ended")),
        }
        let settle = tokio::time::sleep(std::time::Duration::from_millis(100));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => break,
                event = events.next() => match event {
                    Some(Err(e)) => eprintln!("watch: {e} (retrying)"),
                    Some(Ok(())) => {}
                    None => return Err(anyhow!("the watches ended")),
                },
            }
        }
    }
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
