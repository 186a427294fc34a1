//! `eni-ipam-e2e`: the end-to-end bed for a person (`scripts/local-cluster`).
//! Brings up a cloud, the stand-in apiserver, the webhook, two operators and
//! nodes, runs the scenarios with progress, prints the summary table, and with
//! `--stay` keeps everything up so `kubectl --kubeconfig <dir>/kubeconfig get
//! eninodes,pods -o wide` can look at it. Then, per datapath (eBPF over TCX, over
//! netlink, none), a fresh bed runs the traffic matrix of issue 29 and prints it.
//! Needs root (namespaces, eBPF, iptables).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use eni_ipam_e2e::bed::{Bed, BedConfig, DatapathMode};
use eni_ipam_e2e::cloud::CloudKind;
use eni_ipam_e2e::matrix;
use eni_ipam_e2e::node::Knobs;
use eni_ipam_e2e::report::table;
use eni_ipam_e2e::scenarios::{Run, Size};

/// Runs eni-ipam end to end on this machine and prints a summary table per cloud.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Clouds to run on, one bed each (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [CloudKind::Alibaba, CloudKind::Aws])]
    cloud: Vec<CloudKind>,
    /// Nodes per bed (3 to 5 is what the machine carries well).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=8))]
    nodes: u32,
    /// The full sizes: 1,000 pods of churn, a minute of throttling.
    #[arg(long)]
    full: bool,
    /// Only bring the cluster up (nodes and a few pods), skip the scenarios.
    #[arg(long)]
    up_only: bool,
    /// Keep the last bed running after the scenarios until Ctrl-C, for kubectl.
    #[arg(long)]
    stay: bool,
    /// Folder for logs, kubeconfig and state (default: a temp folder, removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Free IPs each node keeps ready.
    #[arg(long, default_value_t = 3)]
    pre_allocate: u32,
    /// Most IPs in a node's pool.
    #[arg(long, default_value_t = 10)]
    max_allocate: u32,
    /// Datapaths the traffic matrix runs on, one bed each (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DatapathMode::ALL)]
    datapath: Vec<DatapathMode>,
    /// Rounds per matrix cell (default 10, 50 with --full).
    #[arg(long)]
    rounds: Option<u32>,
    /// Skip the scenarios, run only the traffic matrix.
    #[arg(long)]
    matrix_only: bool,
    /// Skip the traffic matrix.
    #[arg(long)]
    no_matrix: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let started = Instant::now();
    let progress = move |line: &str| eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
    let mut tables = Vec::new();
    let count = args.cloud.len();
    for (i, cloud) in args.cloud.iter().enumerate() {
        if args.matrix_only {
            continue;
        }
        let config = BedConfig {
            cloud: *cloud,
            datapath: args.datapath.first().copied().unwrap_or(DatapathMode::EbpfTcx),
            nodes: args.nodes as usize,
            knobs: Knobs { pre_allocate: args.pre_allocate, max_allocate: args.max_allocate },
        };
        let dir = args.dir.as_ref().map(|d| d.join(cloud.to_string()));
        progress(&format!("{cloud}: starting the cloud and the stand-in apiserver"));
        let mut bed = Bed::start(config, dir).await;
        let kubeconfig = bed.dir.join("kubeconfig");
        progress(&format!(
            "{cloud}: kubectl --kubeconfig {} get eninodes,pods -o wide",
            kubeconfig.display()
        ));
        let size = Size::new(args.full);
        let mut run = Run::new(&mut bed, size, &progress);
        if args.up_only {
            run.bring_up().await;
        } else {
            run.all().await;
        }
        let title = format!("## {cloud}, {} nodes{}", args.nodes, if args.full { ", full size" } else { "" });
        let text = table(&title, &run.rows);
        println!("{text}");
        tables.push(text);
        if args.stay && i + 1 == count {
            progress("staying up: Ctrl-C to tear everything down");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    let rounds = args.rounds.unwrap_or(if args.full { 50 } else { 10 });
    let mut failed = 0;
    for cloud in args.cloud.iter().filter(|_| !args.no_matrix) {
        for datapath in &args.datapath {
            let config = BedConfig {
                cloud: *cloud,
                datapath: *datapath,
                nodes: args.nodes as usize,
                knobs: matrix::KNOBS,
            };
            let dir = args
                .dir
                .as_ref()
                .map(|d| d.join(format!("matrix-{cloud}-{}", datapath.to_string().replace('/', "-"))));
            let mut bed = Bed::start(config, dir).await;
            let cells = matrix::run(&mut bed, rounds, &progress).await;
            drop(bed);
            failed += cells.iter().filter(|c| !c.clean()).count();
            let text = matrix::table(
                &format!(
                    "## traffic matrix: {cloud}, datapath {datapath}, {} nodes, {rounds} rounds",
                    args.nodes
                ),
                &cells,
            );
            println!("{text}");
            tables.push(text);
        }
    }
    for t in tables {
        println!("{t}");
    }
    if failed > 0 {
        eprintln!("{failed} cells of the traffic matrix failed");
        std::process::exit(1);
    }
}
